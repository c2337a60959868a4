// The SDP of a WhatsApp call (PROTOCOLS.md A6, docs/calls.md): what the
// worker needs from the caller's offer, and the answer it sends back with
// pre_accept/accept. One audio m-line, ICE + DTLS-SRTP + Opus, rtcp-mux, no
// trickle (every candidate in the answer). Meta's side is ICE-lite and offers
// `actpass`; Chromium's is full ICE and offers `actpass` too: both get
// `active` from us (we start the DTLS handshake) unless the offer insists on
// `active`, which makes us `passive`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bridge::media_worker {

enum class DtlsSetup { kActpass, kActive, kPassive };

// What the offer says, checked: every field here is one the answer and the
// media path rely on.
struct SdpOffer {
  std::string session_id;      // o= sess-id, echoed in logs
  std::string mid;             // a=mid of the audio section ("" if none: no BUNDLE)
  std::string ice_ufrag;
  std::string ice_pwd;
  bool ice_lite = false;       // session-level a=ice-lite: we must be controlling
  std::vector<std::string> candidates;  // "candidate:..." values, as offered
  std::string fingerprint_sha256;       // "AB:CD:...", 32 bytes; other hashes ignored
  DtlsSetup setup = DtlsSetup::kActpass;
  int opus_payload_type = -1;
  std::string opus_fmtp;       // e.g. "minptime=20;useinbandfec=1"
  int telephone_event_payload_type = -1;  // the 8 kHz one; -1 if none
};

// Why an offer cannot be answered comes back as InvalidArgument naming the
// line or attribute (the caller's `reject` reason): not SDP, no audio
// section, not UDP/TLS/RTP/SAVPF, no Opus, no ICE credentials, no SHA-256
// fingerprint, no rtcp-mux. Unknown attributes are ignored.
absl::StatusOr<SdpOffer> ParseSdpOffer(absl::string_view sdp);

// Our side of the call, for the answer.
struct SdpAnswerParams {
  std::string ice_ufrag;
  std::string ice_pwd;
  std::vector<std::string> candidates;  // "candidate:..." values, all gathered
  std::string fingerprint_sha256;       // of our DTLS certificate
  std::string origin_address = "0.0.0.0";  // o= and c=; the media address when known
  int port = 9;                            // m= port; 9 ("discard") with ICE
};

// Our DTLS role for the offer's a=setup (RFC 5763): actpass or passive ->
// active (we connect), active -> passive.
DtlsSetup AnswerSetup(DtlsSetup offered);

// The answer: Opus only (the offer's payload type and fmtp, with in-band FEC
// asked for), telephone-event when offered, rtcp-mux, sendrecv, our ICE
// credentials and every candidate, end-of-candidates, our fingerprint and role.
std::string BuildSdpAnswer(const SdpOffer& offer, const SdpAnswerParams& ours);

// An offer in the shape of Meta's (Opus 111 with FEC, telephone-event 126,
// actpass, optionally ICE-lite): what the load caller and tests place calls
// with. ParseSdpOffer reads it, and reads answers too.
std::string BuildSdpOffer(const SdpAnswerParams& ours, bool ice_lite);

}  // namespace bridge::media_worker
