// SessionRunner, part two: the agent conversation (connect, greeting, the
// mailbox its events land in, collecting a reply, client tool calls) and the
// user's voice on its way to the agent (download, decode, speech-to-text,
// streaming). The turn's flow is in session_runner.cc.
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "common/log.h"
#include "session_runner.h"

namespace bridge::media_worker {
namespace {

// While a turn waits on the agent, user_activity this often keeps its turn
// timeout from firing a re-engagement into our reply (PROTOCOLS.md B2).
constexpr absl::Duration kActivityEvery = absl::Seconds(5);
// Silence is streamed in chunks of this length, at real time.
constexpr absl::Duration kSilenceChunk = absl::Milliseconds(100);
// What the agent is told when it asks for a person: the turn tells the user.
constexpr char kHandoffDone[] = "A person will take over this conversation.";
constexpr char kHandoffNobody[] = "No one can take over right now.";

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

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// The reply's voice note, encoded as the agent's audio arrives.
class ReplyEncoder {
 public:
  explicit ReplyEncoder(int bitrate_bps) : bitrate_bps_(bitrate_bps) {}

  absl::Status Add(const std::vector<std::vector<int16_t>>& chunks, int rate, std::string* ogg) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!encoder_) {
      audio::EncoderOptions eo;
      eo.input_rate = rate;
      eo.bitrate_bps = bitrate_bps_;
      auto e = audio::OggOpusEncoder::Create(eo);
      if (!e.ok()) return e.status();
      encoder_ = *std::move(e);
    }
    for (const auto& c : chunks) {
      if (auto s = encoder_->Write(c); !s.ok()) return s;
    }
    *ogg += encoder_->TakeBytes();
    ms_ += Ms(std::chrono::steady_clock::now() - t0);
    return absl::OkStatus();
  }
  absl::Status Finish(std::string* ogg) {
    if (!encoder_) return absl::OkStatus();
    const auto t0 = std::chrono::steady_clock::now();
    if (auto s = encoder_->Finish(); !s.ok()) return s;
    *ogg += encoder_->TakeBytes();
    ms_ += Ms(std::chrono::steady_clock::now() - t0);
    return absl::OkStatus();
  }
  bool used() const { return encoder_ != nullptr; }
  double ms() const { return ms_; }

 private:
  const int bitrate_bps_;
  std::unique_ptr<audio::OggOpusEncoder> encoder_;
  double ms_ = 0;
};

}  // namespace

double SessionRunner::MsSince(Steady::time_point t) { return Ms(Steady::now() - t); }

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
  ev.on_user_transcript = [this](const std::string& t) {
    absl::MutexLock lock(&mu_);
    if (collecting_ && !t.empty()) reply_.user_transcripts.push_back(t);
  };
  ev.on_agent_response = [this](const std::string& t) {
    absl::MutexLock lock(&mu_);
    if (!collecting_) return;
    absl::StrAppend(&reply_.text, reply_.text.empty() ? "" : " ", t);
    Heard();
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
    Heard();
  };
  ev.on_reply_end = [this](ReplyEnd why) {
    absl::MutexLock lock(&mu_);
    if (collecting_ && reply_.heard) {
      reply_.ended = true;
      reply_.end = why;
      reply_.ended_at = Steady::now();
    }
  };
  ev.on_client_tool_call = [this](const ClientToolCall& call) { return OnToolCall(call); };
  ev.on_closed = [this](int code, const std::string& reason, bool retryable) {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    retryable_ = retryable;
    close_reason_ = absl::StrCat(code, " ", reason);
  };
  return ev;
}

void SessionRunner::Heard() {
  if (!reply_.heard) reply_.first_heard = Steady::now();
  reply_.heard = true;
}

// The handoff tool, while a turn runs: answered as done, and the turn tells
// the user once its reply is out. Outside a turn nobody would tell them, so
// the agent hears that nobody can come; other tools get the session's "not
// supported" answer.
std::optional<ClientToolResult> SessionRunner::OnToolCall(const ClientToolCall& call) {
  if (assignment_.handoff_tool().empty() || call.tool_name != assignment_.handoff_tool()) {
    return std::nullopt;
  }
  bool in_turn;
  {
    absl::MutexLock lock(&mu_);
    in_turn = in_turn_;
    if (in_turn && !handoff_) handoff_ = Handoff{call.parameters, Steady::now()};
  }
  LogInfo("agent asked for a person",
          {{"session_id", session_id()}, {"in_turn", in_turn ? "yes" : "no"}});
  if (!in_turn) return ClientToolResult{kHandoffNobody, /*is_error=*/true};
  return ClientToolResult{kHandoffDone, /*is_error=*/false};
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
    t->agent_took_part = agent_ && started_ && !closed_;
    if (t->agent_took_part) return absl::OkStatus();
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
  t->agent_took_part = true;
  const bool deliver = welcome || (settings_.deliver_greeting && !greeting_delivered_);
  if (absl::Status g = HearGreeting(t, deliver); !g.ok()) return g;
  std::string context;
  {
    absl::MutexLock lock(&mu_);
    context = EarlierExchangesContext(recent_);
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

// The reply is over: what it said moves out of the mailbox.
void SessionRunner::TakeReply(Collected* out) {
  collecting_ = false;
  out->text = reply_.text;
  out->user_transcripts = std::move(reply_.user_transcripts);
  out->first_heard = reply_.heard ? reply_.first_heard : Steady::time_point();
  out->done = reply_.ended ? reply_.ended_at : Steady::now();
}

// The agent asked for a person and has said nothing since for a quiet gap:
// it will not, and the turn tells the user without a reply of its own.
bool SessionRunner::OnlyHandoff() {
  return !reply_.heard && handoff_ &&
         Steady::now() - handoff_->at >= absl::ToChronoNanoseconds(settings_.agent.reply_quiet_gap);
}

absl::StatusOr<SessionRunner::Collected> SessionRunner::CollectReply(bool want_audio,
                                                                    absl::Duration timeout) {
  const Steady::time_point start = Steady::now();
  Steady::time_point last_activity = start;
  ReplyEncoder encoder(settings_.reply_bitrate_bps);
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
      out.handoff_only = OnlyHandoff();
      // A close ends the reply: what was said before it is delivered.
      ended = reply_.ended || (closed_ && heard) || out.handoff_only;
      end = reply_.ended ? reply_.end : ReplyEnd::kClosed;
      closed = closed_;
      rate = output_rate_;
      if (ended || closed) TakeReply(&out);
    }
    if (want_audio && !chunks.empty()) {
      if (!encoder.used()) {
        services_.metrics->Stage("first_agent_audio").Observe(MsSince(start) / 1000);
      }
      if (auto s = encoder.Add(chunks, rate, &out.ogg); !s.ok()) return s;
    }
    if (ended) break;
    if (closed) return absl::UnavailableError("the agent closed the conversation before answering");
    const Steady::time_point now = Steady::now();
    if (now - start > absl::ToChronoNanoseconds(timeout)) {
      absl::MutexLock lock(&mu_);
      if (!reply_.heard) {
        collecting_ = false;
        return absl::DeadlineExceededError("the agent did not answer in time");
      }
      // Better what was said than nothing: the rest never came.
      LogWarn("agent reply did not end in time; sending what arrived",
              {{"session_id", session_id()}});
      TakeReply(&out);
      end = ReplyEnd::kQuietGap;
      break;
    }
    if (!heard && now - last_activity >= absl::ToChronoNanoseconds(kActivityEvery) && agent_) {
      agent_->SendUserActivity();
      last_activity = now;
    }
  }
  if (!out.handoff_only) services_.metrics->ReplyEnd(ReplyEndName(end)).Increment();
  services_.metrics->Stage("reply_complete").Observe(MsSince(start) / 1000);
  if (encoder.used()) {
    if (auto s = encoder.Finish(&out.ogg); !s.ok()) return s;
    out.encode_ms = encoder.ms();
    services_.metrics->Stage("encode").Observe(encoder.ms() / 1000);
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

// Real-time silence after the notes until the agent answers (the agent's VAD
// ends a turn on silence it hears at the pace of speech), capped.
absl::Status SessionRunner::StreamSilenceUntilAnswered() {
  int rate;
  {
    absl::MutexLock lock(&mu_);
    rate = input_rate_;
  }
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
// The download's time is what the Graph API took: decoding and the paced
// sending run inside the sink and are not counted in it.
absl::Status SessionRunner::StreamVoiceNote(TurnCtx* t, const v1::InboundMessage& m,
                                            bool* unplayable) {
  int rate;
  {
    absl::MutexLock lock(&mu_);
    rate = input_rate_;
  }
  auto decoder = audio::OggOpusDecoder::Create(rate);
  if (!decoder.ok()) return decoder.status();
  const Steady::time_point start = Steady::now();
  Steady::duration decode_time{}, in_sink{};
  bool first = true;
  size_t silence_run = 0;
  std::vector<int16_t> pcm;
  auto sink = [&](absl::string_view bytes) -> absl::Status {
    const Steady::time_point t0 = Steady::now();
    absl::Status pushed = (*decoder)->Push(
        {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    pcm.clear();
    (*decoder)->Pull(&pcm);
    decode_time += Steady::now() - t0;
    if (!pcm.empty() && first) {
      first = false;
      services_.metrics->Stage("first_audio_to_agent").Observe(MsSince(start) / 1000);
    }
    absl::Status sent = SendPcm(ShortenPauses(pcm, rate, settings_.max_pause, &silence_run));
    in_sink += Steady::now() - t0;
    return sent.ok() ? pushed : sent;
  };
  absl::Status s = services_.graph->DownloadMedia(m.media().media_id(), m.media().url(),
                                                  m.media().sha256_b64(), sink);
  const Steady::duration whole = Steady::now() - start;
  services_.metrics->Stage("download").Observe(Ms(whole) / 1000);
  t->latency.set_download_ms(t->latency.download_ms() + Ms(whole - in_sink));
  const Steady::time_point t0 = Steady::now();
  if (s.ok()) s = (*decoder)->Finish();
  pcm.clear();
  (*decoder)->Pull(&pcm);
  decode_time += Steady::now() - t0;
  (void)SendPcm(pcm);
  services_.metrics->Stage("decode").Observe(Ms(decode_time) / 1000);
  t->latency.set_decode_ms(t->latency.decode_ms() + Ms(decode_time));
  const double heard = static_cast<double>((*decoder)->samples()) / rate;
  return JudgeDecode(s, heard, session_id(), services_.metrics, unplayable);
}

// The whole note, checked to be playable audio before anyone pays to
// transcribe it. Returns the bytes as WhatsApp sent them.
absl::StatusOr<std::string> SessionRunner::DownloadNote(TurnCtx* t, const v1::InboundMessage& m,
                                                        bool* unplayable) {
  const Steady::time_point start = Steady::now();
  std::string bytes;
  absl::Status s = services_.graph->DownloadMedia(
      m.media().media_id(), m.media().url(), m.media().sha256_b64(),
      [&](absl::string_view chunk) {
        bytes.append(chunk.data(), chunk.size());
        return absl::OkStatus();
      });
  const double download_ms = MsSince(start);
  services_.metrics->Stage("download").Observe(download_ms / 1000);
  t->latency.set_download_ms(t->latency.download_ms() + download_ms);
  if (!s.ok()) return s;
  if (!absl::StartsWith(m.media().mime_type(), "audio/ogg")) return bytes;  // STT takes it as is
  const Steady::time_point t0 = Steady::now();
  auto decoder = audio::OggOpusDecoder::Create(16000);
  if (!decoder.ok()) return decoder.status();
  absl::Status d = (*decoder)->Push({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  if (d.ok()) d = (*decoder)->Finish();
  std::vector<int16_t> pcm;
  (*decoder)->Pull(&pcm);
  const double decode_ms = MsSince(t0);
  services_.metrics->Stage("decode").Observe(decode_ms / 1000);
  t->latency.set_decode_ms(t->latency.decode_ms() + decode_ms);
  const double heard = static_cast<double>((*decoder)->samples()) / 16000;
  if (absl::Status judged = JudgeDecode(d, heard, session_id(), services_.metrics, unplayable);
      !judged.ok()) {
    return judged;
  }
  return bytes;
}

// Speech-to-text counts as the note's decode: it is how its words are got.
absl::StatusOr<std::string> SessionRunner::TranscribeNote(TurnCtx* t, const v1::InboundMessage& m,
                                                          bool* unplayable) {
  absl::StatusOr<std::string> note = DownloadNote(t, m, unplayable);
  if (!note.ok()) return note.status();
  if (*unplayable) return std::string();
  const Steady::time_point t0 = Steady::now();
  const std::string mime = m.media().mime_type().empty() ? "audio/ogg" : m.media().mime_type();
  auto transcript = services_.stt->Transcribe(*note, mime, FileNameFor(mime));
  const double ms = MsSince(t0);
  services_.metrics->Stage("transcribe").Observe(ms / 1000);
  t->latency.set_decode_ms(t->latency.decode_ms() + ms);
  if (!transcript.ok()) {
    services_.metrics->Error("transcribe").Increment();
    return transcript.status();
  }
  return std::string(absl::StripAsciiWhitespace(transcript->text));
}

}  // namespace bridge::media_worker
