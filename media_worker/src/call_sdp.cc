#include "call_sdp.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace bridge::media_worker {
namespace {

constexpr size_t kMaxSdpBytes = 64 << 10;  // a call offer is ~2 KB; more is not an offer

absl::Status Bad(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("SDP offer: ", why));
}

// "111 opus/48000/2" -> {111, "opus/48000/2"}.
bool SplitPayload(absl::string_view value, int* pt, absl::string_view* rest) {
  std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(value, absl::MaxSplits(' ', 1));
  return absl::SimpleAtoi(p.first, pt) && *pt >= 0 && *pt <= 127 && (*rest = p.second, true);
}

// A SHA-256 fingerprint: 32 colon-separated hex bytes.
bool IsSha256Fingerprint(absl::string_view v) {
  std::vector<absl::string_view> bytes = absl::StrSplit(v, ':');
  if (bytes.size() != 32) return false;
  for (absl::string_view b : bytes) {
    if (b.size() != 2 || !absl::ascii_isxdigit(b[0]) || !absl::ascii_isxdigit(b[1])) return false;
  }
  return true;
}

// What the parser has seen so far; session-level values apply to the audio
// section unless it sets its own (RFC 8866 §5).
struct Section {
  std::string ice_ufrag, ice_pwd, fingerprint, setup;
  bool rtcp_mux = false;
};

struct Parser {
  SdpOffer offer;
  Section session, audio;
  bool in_audio = false, audio_seen = false, past_session = false;
  std::string media_error;

  absl::Status Line(absl::string_view line);
  absl::Status Attribute(absl::string_view name, absl::string_view value, Section* s);
  absl::Status Media(absl::string_view value);
  absl::StatusOr<SdpOffer> Finish();
};

absl::Status Parser::Media(absl::string_view value) {
  std::vector<absl::string_view> f = absl::StrSplit(value, ' ', absl::SkipEmpty());
  in_audio = false;
  past_session = true;
  if (f.size() < 4 || f[0] != "audio") return absl::OkStatus();  // video, data: not answered
  if (audio_seen) return absl::OkStatus();  // a second audio section: only the first is used
  if (f[2] != "UDP/TLS/RTP/SAVPF") {
    media_error = absl::StrCat("the audio section's transport is ", f[2],
                               ", not UDP/TLS/RTP/SAVPF (ICE + DTLS-SRTP)");
  }
  in_audio = audio_seen = true;
  return absl::OkStatus();
}

absl::Status Parser::Attribute(absl::string_view name, absl::string_view value, Section* s) {
  if (name == "ice-ufrag") s->ice_ufrag = std::string(value);
  else if (name == "ice-pwd") s->ice_pwd = std::string(value);
  else if (name == "setup") s->setup = std::string(value);
  else if (name == "rtcp-mux") s->rtcp_mux = true;
  else if (name == "fingerprint") {
    std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(value, absl::MaxSplits(' ', 1));
    // Only SHA-256 is kept (PROTOCOLS.md A6); a weaker hash beside it is ignored.
    if (absl::EqualsIgnoreCase(p.first, "sha-256")) {
      if (!IsSha256Fingerprint(p.second)) return Bad("a=fingerprint:sha-256 is not 32 hex bytes");
      s->fingerprint = absl::AsciiStrToUpper(p.second);
    }
  } else if (!in_audio) {
    if (name == "ice-lite") offer.ice_lite = true;
  } else if (name == "mid") {
    offer.mid = std::string(value);
  } else if (name == "candidate") {
    offer.candidates.push_back(absl::StrCat("candidate:", value));
  } else if (name == "rtpmap") {
    int pt;
    absl::string_view codec;
    if (!SplitPayload(value, &pt, &codec)) return Bad(absl::StrCat("bad a=rtpmap:", value));
    if (absl::StartsWithIgnoreCase(codec, "opus/48000") && offer.opus_payload_type < 0) {
      offer.opus_payload_type = pt;
    } else if (absl::EqualsIgnoreCase(codec, "telephone-event/8000")) {
      offer.telephone_event_payload_type = pt;
    }
  } else if (name == "fmtp") {
    int pt;
    absl::string_view params;
    if (SplitPayload(value, &pt, &params) && pt == offer.opus_payload_type) {
      offer.opus_fmtp = std::string(params);
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::Line(absl::string_view line) {
  if (line.empty()) return absl::OkStatus();
  if (line.size() < 2 || line[1] != '=') return Bad(absl::StrCat("not an SDP line: ", line.substr(0, 40)));
  const char type = line[0];
  const absl::string_view value = line.substr(2);
  if (type == 'm') return Media(value);
  if (type == 'o' && !past_session) {
    std::vector<absl::string_view> f = absl::StrSplit(value, ' ');
    if (f.size() >= 2) offer.session_id = std::string(f[1]);
    return absl::OkStatus();
  }
  if (type != 'a') return absl::OkStatus();
  if (past_session && !in_audio) return absl::OkStatus();  // another section's attributes
  std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(value, absl::MaxSplits(':', 1));
  return Attribute(kv.first, kv.second, in_audio ? &audio : &session);
}

absl::StatusOr<SdpOffer> Parser::Finish() {
  if (!audio_seen) return Bad("no audio section (m=audio)");
  if (!media_error.empty()) return Bad(media_error);
  auto pick = [](const std::string& media, const std::string& sess) { return media.empty() ? sess : media; };
  offer.ice_ufrag = pick(audio.ice_ufrag, session.ice_ufrag);
  offer.ice_pwd = pick(audio.ice_pwd, session.ice_pwd);
  offer.fingerprint_sha256 = pick(audio.fingerprint, session.fingerprint);
  const std::string setup = pick(audio.setup, session.setup);
  if (offer.ice_ufrag.empty() || offer.ice_pwd.empty()) return Bad("no a=ice-ufrag / a=ice-pwd");
  if (offer.fingerprint_sha256.empty()) return Bad("no a=fingerprint:sha-256 (DTLS-SRTP needs one)");
  if (offer.opus_payload_type < 0) return Bad("no Opus (a=rtpmap:PT opus/48000/2) in the audio section");
  if (!audio.rtcp_mux && !session.rtcp_mux) return Bad("no a=rtcp-mux (RTP and RTCP on one port)");
  if (setup.empty() || setup == "actpass") offer.setup = DtlsSetup::kActpass;
  else if (setup == "active") offer.setup = DtlsSetup::kActive;
  else if (setup == "passive") offer.setup = DtlsSetup::kPassive;
  else return Bad(absl::StrCat("a=setup:", setup, " is not actpass, active or passive"));
  return offer;
}

const char* SetupName(DtlsSetup s) {
  switch (s) {
    case DtlsSetup::kActive: return "active";
    case DtlsSetup::kPassive: return "passive";
    case DtlsSetup::kActpass: break;
  }
  return "actpass";
}

}  // namespace

absl::StatusOr<SdpOffer> ParseSdpOffer(absl::string_view sdp) {
  if (sdp.size() > kMaxSdpBytes) return Bad(absl::StrCat("larger than ", kMaxSdpBytes, " bytes"));
  if (!absl::StartsWith(sdp, "v=0")) return Bad("does not start with v=0");
  Parser p;
  for (absl::string_view line : absl::StrSplit(sdp, '\n')) {
    absl::ConsumeSuffix(&line, "\r");
    if (auto s = p.Line(line); !s.ok()) return s;
  }
  return p.Finish();
}

DtlsSetup AnswerSetup(DtlsSetup offered) {
  return offered == DtlsSetup::kActive ? DtlsSetup::kPassive : DtlsSetup::kActive;
}

namespace {

// One audio section in the shape both sides of a WhatsApp call use.
std::string Render(const SdpOffer& offer, const SdpAnswerParams& ours, absl::string_view setup,
                   bool ice_lite) {
  const std::string opus = absl::StrCat(offer.opus_payload_type);
  std::string payloads = opus;
  if (offer.telephone_event_payload_type >= 0) {
    absl::StrAppend(&payloads, " ", offer.telephone_event_payload_type);
  }
  // FEC is what keeps a lossy mobile call intelligible: always asked for.
  std::string fmtp = offer.opus_fmtp;
  if (!absl::StrContains(fmtp, "useinbandfec")) {
    fmtp = fmtp.empty() ? "useinbandfec=1" : absl::StrCat(fmtp, ";useinbandfec=1");
  }
  std::vector<std::string> l = {
      "v=0",
      absl::StrCat("o=- ", offer.session_id.empty() ? "0" : offer.session_id, " 2 IN IP4 ",
                   ours.origin_address),
      "s=-",
      "t=0 0",
  };
  if (ice_lite) l.push_back("a=ice-lite");
  if (!offer.mid.empty()) l.push_back(absl::StrCat("a=group:BUNDLE ", offer.mid));
  l.push_back(absl::StrCat("m=audio ", ours.port, " UDP/TLS/RTP/SAVPF ", payloads));
  l.push_back(absl::StrCat("c=IN IP4 ", ours.origin_address));
  if (!offer.mid.empty()) l.push_back(absl::StrCat("a=mid:", offer.mid));
  l.push_back(absl::StrCat("a=ice-ufrag:", ours.ice_ufrag));
  l.push_back(absl::StrCat("a=ice-pwd:", ours.ice_pwd));
  l.push_back(absl::StrCat("a=fingerprint:sha-256 ", ours.fingerprint_sha256));
  l.push_back(absl::StrCat("a=setup:", setup));
  l.push_back("a=sendrecv");
  l.push_back("a=rtcp-mux");
  l.push_back(absl::StrCat("a=rtpmap:", opus, " opus/48000/2"));
  l.push_back(absl::StrCat("a=fmtp:", opus, " ", fmtp));
  if (offer.telephone_event_payload_type >= 0) {
    l.push_back(absl::StrCat("a=rtpmap:", offer.telephone_event_payload_type, " telephone-event/8000"));
  }
  for (const std::string& c : ours.candidates) l.push_back(absl::StrCat("a=", c));
  l.push_back("a=end-of-candidates");
  return absl::StrCat(absl::StrJoin(l, "\r\n"), "\r\n");
}

}  // namespace

std::string BuildSdpAnswer(const SdpOffer& offer, const SdpAnswerParams& ours) {
  return Render(offer, ours, SetupName(AnswerSetup(offer.setup)), /*ice_lite=*/false);
}

std::string BuildSdpOffer(const SdpAnswerParams& ours, bool ice_lite) {
  SdpOffer shape;  // Meta's usual offer (PROTOCOLS.md A6)
  shape.session_id = "1";
  shape.opus_payload_type = 111;
  shape.opus_fmtp = "minptime=20;useinbandfec=1";
  shape.telephone_event_payload_type = 126;
  return Render(shape, ours, "actpass", ice_lite);
}

}  // namespace bridge::media_worker
