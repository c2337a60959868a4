#include "session_runner.h"

#include <openssl/sha.h>

#include <cmath>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "common/log.h"
#include "common/redact.h"

namespace bridge::media_worker {
namespace {

constexpr char kUnplayable[] =
    "Sorry, I couldn't play that voice note. Could you record it again?";
constexpr char kUnsupported[] =
    "Sorry, I can only understand voice notes and text messages for now.";
constexpr char kAgentDown[] =
    "Sorry, I'm having trouble answering right now. Please try again in a moment.";
constexpr size_t kRecentLines = 10;

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
                             GraphApi* graph, ws::ClientPool* pool, WorkerMetrics* metrics)
    : assignment_(assignment), settings_(settings), graph_(graph), pool_(pool), metrics_(metrics) {
  for (const auto& line : assignment.recent_transcript()) recent_.push_back(line);
}

SessionRunner::~SessionRunner() { Close(); }

void SessionRunner::Close() {
  if (agent_) agent_->Close();
  agent_.reset();
}

std::string SessionRunner::conversation_id() {
  absl::MutexLock lock(&mu_);
  return conversation_id_;
}

void SessionRunner::Remember(const std::string& who, const std::string& text) {
  absl::MutexLock lock(&mu_);
  recent_.push_back(absl::StrCat(who, ": ", text));
  while (recent_.size() > kRecentLines) recent_.pop_front();
}

AgentEvents SessionRunner::Events() {
  AgentEvents ev;
  ev.on_started = [this](const std::string& id, int in_rate, int out_rate) {
    absl::MutexLock lock(&mu_);
    started_ = true;
    conversation_id_ = id;
    input_rate_ = in_rate;
    output_rate_ = out_rate;
  };
  ev.on_user_transcript = [this](const std::string& t) { Remember("user", t); };
  ev.on_agent_response = [this](const std::string& t) {
    Remember("agent", t);
    absl::MutexLock lock(&mu_);
    last_agent_event_ = absl::Now();
    if (!collecting_) return;
    absl::StrAppend(&reply_.text, reply_.text.empty() ? "" : " ", t);
    reply_.heard = true;
  };
  ev.on_audio = [this](std::vector<int16_t> pcm, int64_t) {
    absl::MutexLock lock(&mu_);
    last_agent_event_ = absl::Now();
    if (!collecting_) return;
    reply_.audio.push_back(std::move(pcm));
    reply_.heard = true;
  };
  ev.on_reply_end = [this] {
    absl::MutexLock lock(&mu_);
    // An end with nothing heard belongs to speech we skipped (a greeting).
    if (collecting_ && reply_.heard) reply_.ended = true;
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
  const std::string user = assignment_.wa_id().empty() ? assignment_.user_id() : assignment_.wa_id();
  opts.user_id = DeriveUserId(settings_.user_id_salt, assignment_.phone_number_id(), user);
  if (!assignment_.profile_name().empty()) {
    opts.dynamic_variables["user_name"] = assignment_.profile_name();
  }
  // A greeting comes right after the metadata: listen before connecting.
  if (settings_.deliver_greeting) BeginReply();
  auto agent = AgentSession::Start(opts, Events(), pool_);
  if (!agent.ok()) return agent.status();
  agent_ = *std::move(agent);
  metrics_->agent_connects->Increment();
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return started_ || closed_; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), settings_.connect_timeout)) {
    return absl::DeadlineExceededError("the agent did not start the conversation in time");
  }
  if (closed_) {
    return retryable_ ? absl::UnavailableError(absl::StrCat("agent closed: ", close_reason_))
                      : absl::FailedPreconditionError(absl::StrCat("agent refused: ", close_reason_));
  }
  return absl::OkStatus();
}

// Connects when there is no live conversation, retrying with backoff where a
// retry can help; a new conversation hears the recent transcript as context.
absl::Status SessionRunner::EnsureAgent(bool* fresh) {
  *fresh = false;
  {
    absl::MutexLock lock(&mu_);
    if (agent_ && started_ && !closed_) return absl::OkStatus();
  }
  *fresh = true;
  const bool reconnect = agent_ != nullptr;
  Close();
  absl::Duration backoff = absl::Milliseconds(250);
  absl::Status s;
  for (int attempt = 1; attempt <= settings_.connect_attempts; ++attempt) {
    s = ConnectOnce();
    if (s.ok() || absl::IsFailedPrecondition(s)) break;
    LogWarn("agent connect failed", {{"session_id", session_id()}, {"attempt", attempt},
                                     {"error", s}});
    Close();
    absl::SleepFor(backoff);  // a pool thread: nothing else waits on it
    backoff = std::min(backoff * 2, absl::Seconds(8));
  }
  if (!s.ok()) {
    metrics_->Error("agent").Increment();
    return s;
  }
  std::string context;
  {
    absl::MutexLock lock(&mu_);
    if (reconnect && !recent_.empty()) {
      context = absl::StrCat("Earlier in this conversation:\n", absl::StrJoin(recent_, "\n"));
    }
  }
  if (!context.empty()) agent_->SendContextualUpdate(context);
  return absl::OkStatus();
}

void SessionRunner::BeginReply() {
  absl::MutexLock lock(&mu_);
  reply_ = Reply();
  collecting_ = true;
  last_agent_event_ = absl::Now();
}

absl::StatusOr<std::string> SessionRunner::CollectReply(bool want_audio, std::string* text,
                                                        absl::Duration timeout) {
  const absl::Time start = absl::Now();
  std::unique_ptr<audio::OggOpusEncoder> encoder;
  bool first_audio = true;
  absl::Duration encode_time;
  std::string ogg;
  for (;;) {
    std::vector<std::vector<int16_t>> chunks;
    bool ended, closed;
    int rate;
    {
      absl::MutexLock lock(&mu_);
      auto progress = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return reply_.ended || closed_ || !reply_.audio.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&progress), absl::Milliseconds(500));
      chunks.swap(reply_.audio);
      ended = reply_.ended;
      closed = closed_;
      rate = output_rate_;
      if (ended || closed) {
        collecting_ = false;
        *text = reply_.text;
      }
    }
    if (want_audio && !chunks.empty()) {
      if (first_audio) {
        metrics_->Stage("first_agent_audio").Observe(Since(start));
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
      ogg += encoder->TakeBytes();
      encode_time += absl::Now() - t0;
    }
    if (ended) break;
    if (closed) return absl::UnavailableError("the agent closed the conversation mid-reply");
    if (absl::Now() - start > timeout) {
      absl::MutexLock lock(&mu_);
      collecting_ = false;
      return absl::DeadlineExceededError("the agent did not answer in time");
    }
  }
  metrics_->Stage("reply_complete").Observe(Since(start));
  if (encoder) {
    const absl::Time t0 = absl::Now();
    if (auto s = encoder->Finish(); !s.ok()) return s;
    ogg += encoder->TakeBytes();
    encode_time += absl::Now() - t0;
    metrics_->Stage("encode").Observe(absl::ToDoubleSeconds(encode_time));
  }
  return ogg;
}

absl::Status SessionRunner::SendPcm(const std::vector<int16_t>& pcm) {
  if (pcm.empty()) return absl::OkStatus();
  int rate;
  {
    absl::MutexLock lock(&mu_);
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
      metrics_->Stage("first_audio_to_agent").Observe(Since(start));
    }
    if (auto s = SendPcm(ShortenPauses(pcm, rate, settings_.max_pause, &silence_run)); !s.ok()) {
      return s;
    }
    return pushed;
  };
  absl::Status s = graph_->DownloadMedia(m.media().media_id(), m.media().url(),
                                         m.media().sha256_b64(), sink);
  metrics_->Stage("download").Observe(Since(start));
  if (s.ok()) s = (*decoder)->Finish();
  pcm.clear();
  (*decoder)->Pull(&pcm);
  (void)SendPcm(pcm);
  metrics_->Stage("decode").Observe(absl::ToDoubleSeconds(decode_time));
  const audio::DecodeProblem problem = audio::ProblemOf(s);
  const double heard = static_cast<double>((*decoder)->samples()) / rate;
  // A note cut short still says something; anything else unreadable is
  // answered with a polite text and the session carries on.
  if (problem == audio::DecodeProblem::kTruncated && heard >= 0.5) {
    LogWarn("voice note truncated; answering what arrived", {{"session_id", session_id()},
                                                             {"seconds", heard}});
    s = absl::OkStatus();
  } else if (problem != audio::DecodeProblem::kNone) {
    metrics_->Error("decode").Increment();
    LogWarn("voice note unplayable", {{"session_id", session_id()}, {"error", s}});
    *unplayable = true;
    return absl::OkStatus();
  }
  if (!s.ok()) return s;
  return SendPcm(std::vector<int16_t>(
      static_cast<size_t>(absl::ToDoubleSeconds(settings_.trailing_silence) * rate), 0));
}

absl::Status SessionRunner::DeliverText(const v1::InboundMessage& m, const std::string& text,
                                        std::vector<std::string>* sent) {
  const absl::Time t0 = absl::Now();
  for (const std::string& part : SplitForWhatsApp(text)) {
    auto id = graph_->SendText(m.phone_number_id(), {m.from().wa_id(), m.from().user_id()}, part,
                               m.message_id());
    if (!id.ok()) return id.status();
    sent->push_back(*id);
  }
  metrics_->Stage("send").Observe(Since(t0));
  return absl::OkStatus();
}

absl::Status SessionRunner::DeliverVoice(const v1::InboundMessage& m, const std::string& ogg,
                                         std::vector<std::string>* sent) {
  const absl::Time t0 = absl::Now();
  auto media = graph_->UploadMedia(m.phone_number_id(), ogg, "audio/ogg", "reply.ogg");
  metrics_->Stage("upload").Observe(Since(t0));
  if (!media.ok()) return media.status();
  const absl::Time t1 = absl::Now();
  auto id = graph_->SendVoiceNote(m.phone_number_id(), {m.from().wa_id(), m.from().user_id()},
                                    *media, m.message_id());
  metrics_->Stage("send").Observe(Since(t1));
  if (!id.ok()) return id.status();
  sent->push_back(*id);
  return absl::OkStatus();
}

absl::Status SessionRunner::MaybeDeliverGreeting(const v1::InboundMessage& m, bool voice,
                                                 std::vector<std::string>* sent) {
  {  // ConnectOnce() began collecting before the conversation started.
    absl::MutexLock lock(&mu_);
    auto spoke = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reply_.heard || closed_; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&spoke), settings_.greeting_wait)) {
      collecting_ = false;  // no greeting configured on this agent
      return absl::OkStatus();
    }
  }
  std::string text;
  auto ogg = CollectReply(voice, &text, settings_.reply_timeout);
  if (!ogg.ok()) return ogg.status();
  if (voice && !ogg->empty()) return DeliverVoice(m, *ogg, sent);
  return text.empty() ? absl::OkStatus() : DeliverText(m, text, sent);
}

absl::Status SessionRunner::RunVoice(const v1::InboundMessage& m, std::vector<std::string>* sent) {
  bool fresh = false;
  if (auto s = EnsureAgent(&fresh); !s.ok()) {
    (void)DeliverText(m, kAgentDown, sent);
    return s;
  }
  if (fresh && settings_.deliver_greeting) {
    if (auto s = MaybeDeliverGreeting(m, /*voice=*/true, sent); !s.ok()) return s;
  }
  bool unplayable = false;
  // Collecting starts once the note is sent: agent audio before that is a
  // greeting being skipped (the note interrupts it).
  if (auto s = StreamVoiceNote(m, &unplayable); !s.ok()) return s;
  if (unplayable) return DeliverText(m, kUnplayable, sent);
  BeginReply();
  std::string text;
  auto ogg = CollectReply(/*want_audio=*/true, &text, settings_.reply_timeout);
  if (!ogg.ok()) return ogg.status();
  if (ogg->empty()) return text.empty() ? absl::OkStatus() : DeliverText(m, text, sent);
  return DeliverVoice(m, *ogg, sent);
}

absl::Status SessionRunner::RunText(const v1::InboundMessage& m, std::vector<std::string>* sent) {
  bool fresh = false;
  if (auto s = EnsureAgent(&fresh); !s.ok()) {
    (void)DeliverText(m, kAgentDown, sent);
    return s;
  }
  if (fresh && settings_.deliver_greeting) {
    if (auto s = MaybeDeliverGreeting(m, /*voice=*/false, sent); !s.ok()) return s;
  }
  BeginReply();
  agent_->SendText(m.text());
  std::string text;
  auto ogg = CollectReply(/*want_audio=*/false, &text, settings_.reply_timeout);
  if (!ogg.ok()) return ogg.status();
  if (text.empty()) return absl::InternalError("the agent answered without text");
  return DeliverText(m, text, sent);
}

v1::TurnResult SessionRunner::RunTurn(const v1::Turn& turn) {
  const absl::Time start = absl::Now();
  const v1::InboundMessage& m = turn.message();
  v1::TurnResult result;
  result.set_session_id(turn.session_id());
  result.set_turn_id(turn.turn_id());
  if (settings_.read_receipts && !m.message_id().empty()) {
    if (auto s = graph_->MarkReadTyping(m.phone_number_id(), m.message_id()); !s.ok()) {
      LogWarn("read receipt failed", {{"session_id", session_id()}, {"error", s}});
    }
  }
  std::vector<std::string> sent;
  absl::Status s;
  std::string type = "other";
  if (m.type() == v1::MESSAGE_TYPE_AUDIO && m.media().voice()) {
    type = "voice";
    s = RunVoice(m, &sent);
  } else if (m.type() == v1::MESSAGE_TYPE_TEXT) {
    type = "text";
    s = RunText(m, &sent);
  } else {
    s = DeliverText(m, kUnsupported, &sent);
  }
  result.set_conversation_id(conversation_id());
  for (auto& id : sent) result.add_sent()->set_message_id(id);
  result.set_outcome(s.ok() ? v1::TURN_OUTCOME_DONE : v1::TURN_OUTCOME_FAILED);
  if (!s.ok()) {
    result.set_reason(std::string(RedactStatus(s).message()));
    LogWarn("turn failed", {{"session_id", session_id()}, {"type", type}, {"error", s}});
  }
  metrics_->Turn(type, s.ok() ? "done" : "failed").Increment();
  metrics_->Stage("end_to_end").Observe(Since(start));
  return result;
}

}  // namespace bridge::media_worker
