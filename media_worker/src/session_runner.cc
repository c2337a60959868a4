#include "session_runner.h"

#include <openssl/sha.h>

#include <cmath>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "common/log.h"
#include "common/redact.h"
#include "message_description.h"

namespace bridge::media_worker {
namespace {

constexpr char kUnplayable[] =
    "Sorry, I couldn't play that voice note. Could you record it again?";
constexpr char kUnsupported[] =
    "Sorry, I can only understand voice notes and text messages for now.";
constexpr char kAgentDown[] =
    "Sorry, I'm having trouble answering right now. Please try again in a moment.";
constexpr char kNoSpeech[] =
    "Sorry, I couldn't hear any words in that voice note. Could you record it again?";
constexpr size_t kRecentLines = 10;
// While a turn waits on the agent, user_activity this often keeps its turn
// timeout from firing a re-engagement into our reply (PROTOCOLS.md B2).
constexpr absl::Duration kActivityEvery = absl::Seconds(5);
// Silence is streamed in chunks of this length, at real time.
constexpr absl::Duration kSilenceChunk = absl::Milliseconds(100);

double Since(absl::Time t) { return absl::ToDoubleSeconds(absl::Now() - t); }

// Shortens silences longer than `max_pause` in place: a long pause inside a
// note would end the agent's turn early.
std::vector<int16_t> ShortenPauses(const std::vector<int16_t>& pcm, int rate,
                                   absl::Duration max_pause, size_t* silence_run) {
  const size_t limit = static_cast<size_t>(absl::ToDoubleSeconds(max_pause) * rate);
  std::vector<int16_t> out;
  out.reserve(pcm.size());
  for (int16_t s : pcm) {
    if (std::abs(s) < 300) {
      if (++*silence_run > limit) continue;
    } else {
      *silence_run = 0;
    }
    out.push_back(s);
  }
  return out;
}

// A Graph call that may have been carried out although it failed (sent, no
// answer): following it with another message could say the same thing twice.
bool MaybeSent(const absl::Status& s) {
  std::optional<GraphError> e = GraphErrorOf(s);
  return e && e->maybe_sent;
}

// A file name whose extension matches the audio WhatsApp sent (A3's types),
// for services that look at it.
std::string FileNameFor(const std::string& mime) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {"audio/ogg", "voice.ogg"}, {"audio/mpeg", "audio.mp3"}, {"audio/mp4", "audio.m4a"},
      {"audio/aac", "audio.aac"}, {"audio/amr", "audio.amr"}};
  for (const auto& [type, name] : kTypes) {
    if (absl::StartsWith(mime, type)) return name;
  }
  return "audio";
}

// What a decode outcome means for the turn: a note cut short still says
// something; anything else unreadable is answered with a polite text
// (*unplayable) and the session carries on. Other errors are returned.
absl::Status JudgeDecode(const absl::Status& s, double heard_s, const std::string& session_id,
                         WorkerMetrics* metrics, bool* unplayable) {
  const audio::DecodeProblem problem = audio::ProblemOf(s);
  if (problem == audio::DecodeProblem::kTruncated && heard_s >= 0.5) {
    LogWarn("voice note truncated; answering what arrived",
            {{"session_id", session_id}, {"seconds", heard_s}});
    return absl::OkStatus();
  }
  if (problem != audio::DecodeProblem::kNone) {
    metrics->Error("decode").Increment();
    LogWarn("voice note unplayable", {{"session_id", session_id}, {"error", s}});
    *unplayable = true;
    return absl::OkStatus();
  }
  return s;
}

}  // namespace

std::string DeriveUserId(const std::string& salt, const std::string& phone_number_id,
                         const std::string& user) {
  const std::string input = absl::StrCat(salt, "|", phone_number_id, "|", user);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return absl::StrCat("wa_", absl::BytesToHexString(
                                 absl::string_view(reinterpret_cast<char*>(digest), 12)));
}

std::vector<std::string> SplitForWhatsApp(const std::string& text, size_t limit) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (text.size() - start > limit) {
    size_t cut = start + limit;
    while (cut > start && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    size_t best = std::string::npos;
    for (const char* sep : {"\n\n", ". ", "\n", " "}) {
      size_t at = text.rfind(sep, cut - 1);
      if (at != std::string::npos && at > start + limit / 2) {
        best = at + std::string(sep).size();
        break;
      }
    }
    if (best == std::string::npos || best > cut) best = cut;
    parts.push_back(text.substr(start, best - start));
    start = best;
  }
  if (start < text.size()) parts.push_back(text.substr(start));
  return parts;
}

SessionRunner::SessionRunner(const v1::SessionAssignment& assignment, const TurnSettings& settings,
                             TurnServices services)
    : assignment_(assignment), settings_(settings), services_(services) {
  for (const auto& line : assignment.recent_transcript()) recent_.push_back(line);
  had_conversation_ = !recent_.empty();
}

SessionRunner::~SessionRunner() { Close(); }

void SessionRunner::Close() {
  absl::MutexLock lock(&agent_mu_);
  if (agent_) agent_->Close();
  agent_.reset();
}

void SessionRunner::End() {
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;  // wakes every wait below: each also waits for ended_
  }
  // Close() detaches the callbacks, so no on_closed will come: ended_ is the
  // running turn's signal. The session object stays for the turn to drop.
  absl::MutexLock lock(&agent_mu_);
  if (agent_) agent_->Close();
}

std::string SessionRunner::conversation_id() {
  absl::MutexLock lock(&mu_);
  return conversation_id_;
}

void SessionRunner::Remember(const std::string& who, const std::string& text) {
  absl::MutexLock lock(&mu_);
  turn_lines_.push_back(absl::StrCat(who, ": ", text));
  recent_.push_back(turn_lines_.back());
  while (recent_.size() > kRecentLines) recent_.pop_front();
}

// Everything here runs on the ws io thread: only the mailbox, under mu_.
// Nothing outside a turn (collecting_ false) is kept or remembered.
AgentEvents SessionRunner::Events() {
  AgentEvents ev;
  ev.on_started = [this](const std::string& id, int in_rate, int out_rate) {
    absl::MutexLock lock(&mu_);
    started_ = true;
    conversation_id_ = id;
    input_rate_ = in_rate;
    output_rate_ = out_rate;
  };
  ev.on_agent_response = [this](const std::string& t) {
    absl::MutexLock lock(&mu_);
    if (!collecting_) return;
    absl::StrAppend(&reply_.text, reply_.text.empty() ? "" : " ", t);
    reply_.heard = true;
  };
  ev.on_agent_correction = [this](const std::string& original, const std::string& corrected) {
    absl::MutexLock lock(&mu_);
    if (!collecting_) return;
    const size_t at = reply_.text.rfind(original);
    if (at != std::string::npos && !original.empty()) {
      reply_.text.replace(at, original.size(), corrected);
    }
  };
  ev.on_audio = [this](std::vector<int16_t> pcm, int64_t) {
    absl::MutexLock lock(&mu_);
    if (!collecting_) return;
    reply_.audio.push_back(std::move(pcm));
    reply_.heard = true;
  };
  ev.on_reply_end = [this](ReplyEnd why) {
    absl::MutexLock lock(&mu_);
    if (collecting_ && reply_.heard) {
      reply_.ended = true;
      reply_.end = why;
    }
  };
  ev.on_closed = [this](int code, const std::string& reason, bool retryable) {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    retryable_ = retryable;
    close_reason_ = absl::StrCat(code, " ", reason);
  };
  return ev;
}

absl::Status SessionRunner::ConnectOnce() {
  {
    absl::MutexLock lock(&mu_);
    started_ = closed_ = false;
    retryable_ = true;
  }
  AgentOptions opts = settings_.agent;
  // The BSUID is the stable key of a user (PROTOCOLS.md A2); the phone may come and go.
  const std::string user = assignment_.user_id().empty() ? assignment_.wa_id() : assignment_.user_id();
  opts.user_id = DeriveUserId(settings_.user_id_salt, assignment_.phone_number_id(), user);
  if (!assignment_.profile_name().empty()) {
    opts.dynamic_variables["user_name"] = assignment_.profile_name();
  }
  // A greeting comes right after the metadata: listen before connecting.
  BeginReply();
  auto agent = services_.start_agent(opts, Events());
  if (!agent.ok()) return agent.status();
  {
    absl::MutexLock lock(&agent_mu_);
    agent_ = *std::move(agent);
  }
  services_.metrics->agent_connects->Increment();
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return started_ || closed_ || ended_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), settings_.connect_timeout)) {
    return absl::DeadlineExceededError("the agent did not start the conversation in time");
  }
  if (ended_) return absl::CancelledError("the session ended");
  if (closed_) {
    return retryable_ ? absl::UnavailableError(absl::StrCat("agent closed: ", close_reason_))
                      : absl::FailedPreconditionError(absl::StrCat("agent refused: ", close_reason_));
  }
  return absl::OkStatus();
}

// Connects when there is no live conversation, retrying with backoff where a
// retry can help. A new conversation is heard out (its greeting) before the
// user speaks, then hears the recent exchange as context.
absl::Status SessionRunner::EnsureAgent(TurnCtx* t, bool welcome) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return absl::CancelledError("the session ended");
    if (agent_ && started_ && !closed_) return absl::OkStatus();
  }
  Close();
  absl::Duration backoff = absl::Milliseconds(250);
  absl::Status s;
  for (int attempt = 1; attempt <= settings_.connect_attempts; ++attempt) {
    s = ConnectOnce();
    if (s.ok() || absl::IsFailedPrecondition(s) || absl::IsCancelled(s)) break;
    LogWarn("agent connect failed", {{"session_id", session_id()}, {"attempt", attempt},
                                     {"error", s}});
    Close();
    absl::SleepFor(backoff);  // a pool thread: nothing else waits on it
    backoff = std::min(backoff * 2, absl::Seconds(8));
  }
  if (!s.ok()) {
    services_.metrics->Error("agent").Increment();
    return s;
  }
  const bool deliver = welcome || (settings_.deliver_greeting && !greeting_delivered_);
  if (absl::Status g = HearGreeting(t, deliver); !g.ok()) return g;
  std::string context;
  {
    absl::MutexLock lock(&mu_);
    if (had_conversation_ && !recent_.empty()) {
      context = absl::StrCat("Earlier in this WhatsApp conversation:\n", absl::StrJoin(recent_, "\n"));
    }
    had_conversation_ = true;
  }
  if (!context.empty()) agent_->SendContextualUpdate(context);
  return absl::OkStatus();
}

// The greeting is listened to to its end (never talked over), then sent or
// dropped. An agent that said nothing within greeting_wait is taken to have
// no greeting, and later conversations of the session do not wait for one.
absl::Status SessionRunner::HearGreeting(TurnCtx* t, bool deliver) {
  if (!agent_has_greeting_ && !deliver) {
    absl::MutexLock lock(&mu_);
    collecting_ = false;
    return absl::OkStatus();
  }
  {
    absl::MutexLock lock(&mu_);
    auto spoke = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return reply_.heard || closed_ || ended_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&spoke), settings_.greeting_wait) ||
        !reply_.heard) {
      collecting_ = false;
      agent_has_greeting_ = false;
      return absl::OkStatus();
    }
  }
  agent_has_greeting_ = true;
  auto greeting = CollectReply(/*want_audio=*/false, settings_.reply_timeout);
  if (!greeting.ok()) return greeting.status();
  if (!deliver || greeting->text.empty()) return absl::OkStatus();
  greeting_delivered_ = true;
  return DeliverReply(t, *greeting, /*voice=*/false);
}

void SessionRunner::BeginReply() {
  absl::MutexLock lock(&mu_);
  reply_ = Reply();
  collecting_ = true;
}

absl::StatusOr<SessionRunner::Collected> SessionRunner::CollectReply(bool want_audio,
                                                                    absl::Duration timeout) {
  const absl::Time start = absl::Now();
  absl::Time last_activity = start;
  std::unique_ptr<audio::OggOpusEncoder> encoder;
  bool first_audio = true;
  absl::Duration encode_time;
  Collected out;
  ReplyEnd end = ReplyEnd::kQuietGap;
  for (;;) {
    std::vector<std::vector<int16_t>> chunks;
    bool ended, closed, heard;
    int rate;
    {
      absl::MutexLock lock(&mu_);
      auto progress = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return reply_.ended || closed_ || ended_ || !reply_.audio.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&progress), absl::Milliseconds(500));
      if (ended_) {
        collecting_ = false;
        return absl::CancelledError("the session ended");
      }
      chunks.swap(reply_.audio);
      heard = reply_.heard;
      // A close ends the reply: what was said before it is delivered.
      ended = reply_.ended || (closed_ && heard);
      end = reply_.ended ? reply_.end : ReplyEnd::kClosed;
      closed = closed_;
      rate = output_rate_;
      if (ended || closed) {
        collecting_ = false;
        out.text = reply_.text;
      }
    }
    if (want_audio && !chunks.empty()) {
      if (first_audio) {
        services_.metrics->Stage("first_agent_audio").Observe(Since(start));
        first_audio = false;
      }
      const absl::Time t0 = absl::Now();
      if (!encoder) {
        audio::EncoderOptions eo;
        eo.input_rate = rate;
        eo.bitrate_bps = settings_.reply_bitrate_bps;
        auto e = audio::OggOpusEncoder::Create(eo);
        if (!e.ok()) return e.status();
        encoder = *std::move(e);
      }
      for (const auto& c : chunks) {
        if (auto s = encoder->Write(c); !s.ok()) return s;
      }
      out.ogg += encoder->TakeBytes();
      encode_time += absl::Now() - t0;
    }
    if (ended) break;
    if (closed) return absl::UnavailableError("the agent closed the conversation before answering");
    const absl::Time now = absl::Now();
    if (now - start > timeout) {
      absl::MutexLock lock(&mu_);
      collecting_ = false;
      if (!reply_.heard) return absl::DeadlineExceededError("the agent did not answer in time");
      // Better what was said than nothing: the rest never came.
      LogWarn("agent reply did not end in time; sending what arrived",
              {{"session_id", session_id()}});
      out.text = reply_.text;
      end = ReplyEnd::kQuietGap;
      break;
    }
    if (!heard && now - last_activity >= kActivityEvery && agent_) {
      agent_->SendUserActivity();
      last_activity = now;
    }
  }
  services_.metrics->ReplyEnd(ReplyEndName(end)).Increment();
  services_.metrics->Stage("reply_complete").Observe(Since(start));
  if (encoder) {
    const absl::Time t0 = absl::Now();
    if (auto s = encoder->Finish(); !s.ok()) return s;
    out.ogg += encoder->TakeBytes();
    encode_time += absl::Now() - t0;
    services_.metrics->Stage("encode").Observe(absl::ToDoubleSeconds(encode_time));
  }
  return out;
}

absl::Status SessionRunner::SendPcm(const std::vector<int16_t>& pcm) {
  if (pcm.empty()) return absl::OkStatus();
  int rate;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return absl::CancelledError("the session ended");
    if (closed_) return absl::UnavailableError("the agent closed the conversation");
    rate = input_rate_;
  }
  // 100 ms per message, like the SDKs; paced when asked to.
  const size_t chunk = static_cast<size_t>(rate) / 10;
  for (size_t off = 0; off < pcm.size(); off += chunk) {
    const size_t n = std::min(chunk, pcm.size() - off);
    agent_->SendAudio(absl::MakeConstSpan(pcm).subspan(off, n));
    if (settings_.input_pace > 0) {
      absl::SleepFor(absl::Seconds(static_cast<double>(n) / rate / settings_.input_pace));
    }
  }
  return absl::OkStatus();
}

// Real-time silence after the note until the agent answers (the agent's VAD
// ends a turn on silence it hears at the pace of speech), capped.
absl::Status SessionRunner::StreamSilenceUntilAnswered(int rate) {
  const std::vector<int16_t> chunk(
      static_cast<size_t>(absl::ToDoubleSeconds(kSilenceChunk) * rate), 0);
  for (absl::Duration sent; sent < settings_.silence_tail_max; sent += kSilenceChunk) {
    {
      absl::MutexLock lock(&mu_);
      auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return reply_.heard || closed_ || ended_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&answered), kSilenceChunk)) return absl::OkStatus();
    }
    agent_->SendAudio(chunk);
  }
  return absl::OkStatus();
}

// Decodes while downloading (both overlap) and streams the PCM to the agent.
absl::Status SessionRunner::StreamVoiceNote(const v1::InboundMessage& m, bool* unplayable) {
  int rate;
  {
    absl::MutexLock lock(&mu_);
    rate = input_rate_;
  }
  auto decoder = audio::OggOpusDecoder::Create(rate);
  if (!decoder.ok()) return decoder.status();
  const absl::Time start = absl::Now();
  absl::Duration decode_time;
  bool first = true;
  size_t silence_run = 0;
  std::vector<int16_t> pcm;
  auto sink = [&](absl::string_view bytes) -> absl::Status {
    const absl::Time t0 = absl::Now();
    absl::Status pushed = (*decoder)->Push(
        {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    pcm.clear();
    (*decoder)->Pull(&pcm);
    decode_time += absl::Now() - t0;
    if (!pcm.empty() && first) {
      first = false;
      services_.metrics->Stage("first_audio_to_agent").Observe(Since(start));
    }
    if (auto s = SendPcm(ShortenPauses(pcm, rate, settings_.max_pause, &silence_run)); !s.ok()) {
      return s;
    }
    return pushed;
  };
  absl::Status s = services_.graph->DownloadMedia(m.media().media_id(), m.media().url(),
                                                  m.media().sha256_b64(), sink);
  services_.metrics->Stage("download").Observe(Since(start));
  if (s.ok()) s = (*decoder)->Finish();
  pcm.clear();
  (*decoder)->Pull(&pcm);
  (void)SendPcm(pcm);
  services_.metrics->Stage("decode").Observe(absl::ToDoubleSeconds(decode_time));
  const double heard = static_cast<double>((*decoder)->samples()) / rate;
  if (absl::Status judged = JudgeDecode(s, heard, session_id(), services_.metrics, unplayable);
      !judged.ok() || *unplayable) {
    return judged;
  }
  return StreamSilenceUntilAnswered(rate);
}

// The whole note, checked to be playable audio before anyone pays to
// transcribe it. Returns the bytes as WhatsApp sent them.
absl::StatusOr<std::string> SessionRunner::DownloadNote(const v1::InboundMessage& m,
                                                        bool* unplayable) {
  const absl::Time start = absl::Now();
  std::string bytes;
  absl::Status s = services_.graph->DownloadMedia(
      m.media().media_id(), m.media().url(), m.media().sha256_b64(),
      [&](absl::string_view chunk) {
        bytes.append(chunk.data(), chunk.size());
        return absl::OkStatus();
      });
  services_.metrics->Stage("download").Observe(Since(start));
  if (!s.ok()) return s;
  if (!absl::StartsWith(m.media().mime_type(), "audio/ogg")) return bytes;  // STT takes it as is
  const absl::Time t0 = absl::Now();
  auto decoder = audio::OggOpusDecoder::Create(16000);
  if (!decoder.ok()) return decoder.status();
  absl::Status d = (*decoder)->Push({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  if (d.ok()) d = (*decoder)->Finish();
  std::vector<int16_t> pcm;
  (*decoder)->Pull(&pcm);
  services_.metrics->Stage("decode").Observe(Since(t0));
  const double heard = static_cast<double>((*decoder)->samples()) / 16000;
  if (absl::Status judged = JudgeDecode(d, heard, session_id(), services_.metrics, unplayable);
      !judged.ok()) {
    return judged;
  }
  return bytes;
}

absl::Status SessionRunner::DeliverText(TurnCtx* t, const std::string& text) {
  const absl::Time t0 = absl::Now();
  for (const std::string& part : SplitForWhatsApp(text)) {
    auto id = WithinBudget([&] {
      return services_.graph->SendText(t->m->phone_number_id(), t->to, part, t->m->message_id());
    });
    if (!id.ok()) return id.status();
    v1::SentMessage* sent = &t->sent.emplace_back();
    sent->set_message_id(*id);
    sent->set_kind(v1::SENT_KIND_TEXT);
    sent->set_text(part);
  }
  services_.metrics->Stage("send").Observe(Since(t0));
  return absl::OkStatus();
}

absl::StatusOr<std::string> SessionRunner::WithinBudget(
    const std::function<absl::StatusOr<std::string>()>& send) {
  const absl::Time deadline = absl::Now() + settings_.delivery_budget;
  absl::Duration backoff = absl::Seconds(1);
  for (;;) {
    absl::StatusOr<std::string> id = send();
    const bool transient = absl::IsUnavailable(id.status()) ||
                           absl::IsResourceExhausted(id.status());
    if (id.ok() || !transient || MaybeSent(id.status()) || absl::Now() + backoff > deadline) {
      return id;
    }
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return id;
    }
    LogWarn("send failed; trying again within the delivery budget",
            {{"session_id", session_id()}, {"error", id.status()},
             {"wait_ms", absl::ToInt64Milliseconds(backoff)}});
    services_.metrics->Error("send_retried").Increment();
    absl::SleepFor(backoff);  // a turn thread: nothing else waits on it
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
}

// A voice note when there is audio, else (or when the voice note cannot be
// sent: upload refused, 131062 for a BSUID-only user) the reply's text.
absl::Status SessionRunner::DeliverReply(TurnCtx* t, const Collected& reply, bool voice) {
  // The exchange as the user saw it is the next conversation's context.
  if (!reply.text.empty()) Remember("agent", reply.text);
  if (!voice || reply.ogg.empty()) {
    if (reply.text.empty()) return absl::InternalError("the agent answered without text");
    return DeliverText(t, reply.text);
  }
  const absl::Time t0 = absl::Now();
  auto media = services_.graph->UploadMedia(t->m->phone_number_id(), reply.ogg, "audio/ogg",
                                            "reply.ogg");
  services_.metrics->Stage("upload").Observe(Since(t0));
  absl::StatusOr<std::string> id = absl::UnknownError("not sent");
  if (media.ok()) {
    const absl::Time t1 = absl::Now();
    id = WithinBudget([&] {
      return services_.graph->SendVoiceNote(t->m->phone_number_id(), t->to, *media,
                                            t->m->message_id());
    });
    services_.metrics->Stage("send").Observe(Since(t1));
  } else {
    id = media.status();
  }
  if (id.ok()) {
    v1::SentMessage* sent = &t->sent.emplace_back();
    sent->set_message_id(*id);
    sent->set_kind(v1::SENT_KIND_VOICE);
    sent->set_text(reply.text);  // the controller's text fallback if delivery fails later
    return absl::OkStatus();
  }
  if (reply.text.empty() || MaybeSent(id.status())) return id.status();
  LogWarn("voice reply could not be sent; sending its text",
          {{"session_id", session_id()}, {"error", id.status()}});
  services_.metrics->Error("voice_fallback_text").Increment();
  return DeliverText(t, reply.text);
}

absl::Status SessionRunner::RunVoice(TurnCtx* t) {
  if (settings_.voice_input == VoiceInput::kTranscribe && services_.stt != nullptr) {
    return RunTranscribed(t);
  }
  const v1::InboundMessage& m = *t->m;
  if (!absl::StartsWith(m.media().mime_type(), "audio/ogg") && !m.media().mime_type().empty()) {
    return RunText(t, DescribeForAgent(m), /*voice=*/false);  // only Ogg/Opus is decoded here
  }
  if (auto s = EnsureAgent(t, /*welcome=*/false); !s.ok()) return s;
  BeginReply();
  agent_->BeginTurn();
  bool unplayable = false;
  if (auto s = StreamVoiceNote(m, &unplayable); !s.ok()) return s;
  if (unplayable) {
    {
      absl::MutexLock lock(&mu_);
      collecting_ = false;  // the agent heard nothing to answer
    }
    return DeliverText(t, kUnplayable);
  }
  auto reply = CollectReply(/*want_audio=*/true, settings_.reply_timeout);
  if (!reply.ok()) return reply.status();
  return DeliverReply(t, *reply, /*voice=*/true);
}

absl::Status SessionRunner::RunTranscribed(TurnCtx* t) {
  const v1::InboundMessage& m = *t->m;
  bool unplayable = false;
  absl::StatusOr<std::string> note = DownloadNote(m, &unplayable);
  if (!note.ok()) return note.status();
  if (unplayable) return DeliverText(t, kUnplayable);
  const absl::Time t0 = absl::Now();
  const std::string mime = m.media().mime_type().empty() ? "audio/ogg" : m.media().mime_type();
  auto transcript = services_.stt->Transcribe(*note, mime, FileNameFor(mime));
  services_.metrics->Stage("transcribe").Observe(Since(t0));
  if (!transcript.ok()) {
    services_.metrics->Error("transcribe").Increment();
    return transcript.status();
  }
  const std::string text(absl::StripAsciiWhitespace(transcript->text));
  if (text.empty()) return DeliverText(t, kNoSpeech);
  return RunText(t, text, /*voice=*/true);  // a voice conversation answers it with audio
}

absl::Status SessionRunner::RunText(TurnCtx* t, const std::string& text, bool voice) {
  if (auto s = EnsureAgent(t, /*welcome=*/false); !s.ok()) return s;
  BeginReply();
  agent_->BeginTurn();
  Remember("user", text);
  agent_->SendText(text);
  auto reply = CollectReply(voice, settings_.reply_timeout);
  if (!reply.ok()) return reply.status();
  return DeliverReply(t, *reply, voice);
}

// The user opened the chat for the first time: the agent's greeting is the
// answer (nothing when the agent has none).
absl::Status SessionRunner::RunWelcome(TurnCtx* t) {
  {
    absl::MutexLock lock(&mu_);
    if (agent_ && started_ && !closed_) return absl::OkStatus();  // already talking
  }
  agent_has_greeting_ = true;  // a welcome always listens for one
  return EnsureAgent(t, /*welcome=*/true);
}

// Context for the agent, no reply: told now if a conversation is open, and
// remembered so the next conversation hears it too.
absl::Status SessionRunner::Inform(const v1::InboundMessage& m) {
  const std::string context = ContextForAgent(m);
  Remember("user", absl::StrCat("[", context, "]"));
  bool open;
  {
    absl::MutexLock lock(&mu_);
    open = agent_ && started_ && !closed_;
  }
  if (open) agent_->SendContextualUpdate(context);
  return absl::OkStatus();
}

absl::Status SessionRunner::RunReply(TurnCtx* t, std::string* type) {
  const v1::InboundMessage& m = *t->m;
  switch (m.type()) {
    case v1::MESSAGE_TYPE_TEXT:
      *type = "text";
      return RunText(t, m.text(), /*voice=*/false);
    case v1::MESSAGE_TYPE_AUDIO:
      *type = m.media().voice() ? "voice" : "audio";
      return RunVoice(t);
    case v1::MESSAGE_TYPE_REQUEST_WELCOME:
      *type = "welcome";
      return RunWelcome(t);
    case v1::MESSAGE_TYPE_REACTION:
    case v1::MESSAGE_TYPE_EDIT:
    case v1::MESSAGE_TYPE_REVOKE:
    case v1::MESSAGE_TYPE_SYSTEM:
      *type = "inform";  // not turns (PROTOCOLS.md A2), whatever the action says
      return Inform(m);
    default: {
      const std::string described = DescribeForAgent(m);
      *type = described.empty() ? "unsupported" : "described";
      return described.empty() ? DeliverText(t, kUnsupported)
                              : RunText(t, described, /*voice=*/false);
    }
  }
}

// The conversation lingers a little for a quick follow-up, then closes:
// an idle agent re-engages and costs (PROTOCOLS.md B4).
void SessionRunner::AfterTurn() {
  if (!agent_) return;
  if (settings_.agent_linger <= absl::ZeroDuration()) {
    Close();
  } else {
    agent_->CloseWhenIdle(settings_.agent_linger);
  }
}

v1::TurnResult SessionRunner::RunTurn(const v1::Turn& turn) {
  const absl::Time start = absl::Now();
  const v1::InboundMessage& m = turn.message();
  v1::TurnResult result;
  result.set_session_id(turn.session_id());
  result.set_turn_id(turn.turn_id());
  TurnCtx t{&m, {}, {}};
  const v1::UserRef& who =
      turn.reply_to().wa_id().empty() && turn.reply_to().user_id().empty() ? m.from()
                                                                             : turn.reply_to();
  t.to = Recipient{who.wa_id(), who.user_id()};
  absl::Status s;
  std::string type;
  switch (turn.action()) {
    case v1::TURN_ACTION_INFORM:
      type = "inform";
      s = Inform(m);
      break;
    case v1::TURN_ACTION_RESEND_AS_TEXT:
      type = "resend";
      s = DeliverText(&t, turn.fallback_text());
      break;
    case v1::TURN_ACTION_APOLOGIZE:  // the turn kept losing its worker: no agent, no media
      type = "apology";
      s = DeliverText(&t, kAgentDown);
      break;
    default:
      if (settings_.read_receipts && !m.message_id().empty()) {
        if (auto r = services_.graph->MarkReadTyping(m.phone_number_id(), m.message_id());
            !r.ok()) {
          LogWarn("read receipt failed", {{"session_id", session_id()}, {"error", r}});
        }
      }
      s = RunReply(&t, &type);
      // Never silent: a turn that failed before anything reached the user
      // gets an apology (the controller does not retry a failed turn).
      // An ended session is not apologised for (the operator or the drain
      // meant it), nor a reply that may have reached the user after all.
      if (MaybeSent(s)) {
        // Neither re-posted nor apologised for: either could be a second
        // message (docs/delivery-contract.md, "unknown outcome").
        services_.metrics->Error("maybe_sent").Increment();
      } else if (!s.ok() && t.sent.empty() && type != "inform" && !absl::IsCancelled(s)) {
        (void)DeliverText(&t, kAgentDown);
      }
      AfterTurn();
      break;
  }
  result.set_conversation_id(conversation_id());
  for (auto& sent : t.sent) *result.add_sent() = std::move(sent);
  {
    absl::MutexLock lock(&mu_);
    for (std::string& line : turn_lines_) result.add_transcript(std::move(line));
    turn_lines_.clear();
  }
  result.set_outcome(s.ok() ? v1::TURN_OUTCOME_DONE : v1::TURN_OUTCOME_FAILED);
  if (!s.ok()) {
    result.set_reason(std::string(RedactStatus(s).message()));
    LogWarn("turn failed", {{"session_id", session_id()}, {"type", type}, {"error", s}});
  }
  services_.metrics->Turn(type, s.ok() ? "done" : "failed").Increment();
  services_.metrics->Stage("end_to_end").Observe(Since(start));
  return result;
}

}  // namespace bridge::media_worker
