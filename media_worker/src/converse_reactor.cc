#include "converse_reactor.h"

#include <openssl/rand.h>

#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace bridge::media_worker {
namespace {

using grpc::StatusCode;

std::string RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes);
  return absl::BytesToHexString(raw);
}

// AgentSession::Start's errors as the client should see them.
grpc::Status FromAgentStart(const absl::Status& s) {
  const std::string msg(s.message());
  if (absl::IsFailedPrecondition(s)) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION, absl::StrCat("agent refused: ", msg));
  }
  if (absl::IsInvalidArgument(s)) {
    return grpc::Status(StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("the worker's agent settings are unusable: ", msg));
  }
  return grpc::Status(StatusCode::UNAVAILABLE, absl::StrCat("agent unreachable: ", msg));
}

const char* Outcome(const grpc::Status& s) {
  if (s.ok()) return "ok";
  if (s.error_code() == StatusCode::CANCELLED) return "cancelled";
  return "error";
}

std::string PcmName(int rate) { return absl::StrCat("pcm_", rate); }

absl::Duration Samples(size_t n, int rate) {
  return rate > 0 ? absl::Seconds(static_cast<double>(n) / rate) : absl::ZeroDuration();
}

}  // namespace

ConverseReactor::ConverseReactor(const ConverseEnv* env, grpc::CallbackServerContext* ctx,
                                 std::string session_id)
    : env_(env),
      ctx_(ctx),
      session_id_(std::move(session_id)),
      in_(Strand::Create(env->codec)),
      out_(Strand::Create(env->codec)),
      budget_(env->settings.max_input_lead),
      outbox_(env->settings.max_out_lag, env->settings.max_out_audio) {}

std::shared_ptr<ConverseReactor> ConverseReactor::Open(const ConverseEnv* env,
                                                       grpc::CallbackServerContext* ctx,
                                                       std::string session_id) {
  auto r = std::make_shared<ConverseReactor>(env, ctx, std::move(session_id));
  {
    absl::MutexLock lock(&r->mu_);
    r->self_ = r;
    ++r->ops_starting_;
  }
  env->metrics->streams->Increment();
  {
    absl::MutexLock lock(&r->mu_);
    r->Arm(&r->start_alarm_, env->settings.start_timeout, &ConverseReactor::OnStartTimeout);
  }
  r->StartRead(&r->request_);
  r->OpStarted();
  return r;
}

void ConverseReactor::Abort(const grpc::Status& status, const std::string& reason) {
  EndStream(status, reason, /*drop_audio=*/true);
}

// ---- input ----

void ConverseReactor::OnReadDone(bool ok) {
  Phase phase;
  {
    absl::MutexLock lock(&mu_);
    if (!ok) input_closed_ = true;
    if (ending_) return;
    phase = phase_;
  }
  if (!ok) {
    // A half-close: the client has said everything (end_of_input semantics).
    if (phase == Phase::kAwaitStart) {
      EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT, "the stream closed before start"),
                "no start");
    } else {
      in_->Post([self = shared_from_this()] { self->EndOfInput(); });
    }
    return;
  }
  v1::ConverseRequest req = std::move(request_);
  request_.Clear();
  if (phase == Phase::kAwaitStart) {
    OnStart(req);
    return;
  }
  // The next read waits until this message reached the agent: a client that
  // outruns the codec is held back by gRPC flow control.
  in_->Post([self = shared_from_this(), req = std::move(req)] {
    self->HandleInput(req);
    self->ReadNext();
  });
}

void ConverseReactor::OnStart(const v1::ConverseRequest& req) {
  if (!req.has_start()) {
    EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT, "the first message must be start"),
              "no start");
    return;
  }
  const v1::ConverseStart& start = req.start();
  if (!IsConverseFormat(start.input_format()) || !IsConverseFormat(start.output_format())) {
    EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT,
                           "start needs an input_format and an output_format (PCM_16000, "
                           "PCM_24000, PCM_48000, OPUS or OGG_OPUS)"),
              "bad start");
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    start_ = start;
    phase_ = Phase::kConnecting;
    Arm(&connect_alarm_, env_->settings.turn.connect_timeout, &ConverseReactor::OnConnectTimeout);
  }
  // Start may fetch a signed URL (an HTTP call): not on a gRPC thread.
  env_->blocking->Submit([self = shared_from_this()] { self->Connect(); });
}

void ConverseReactor::Connect() {
  v1::ConverseStart start;
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    start = start_;
  }
  AgentOptions opts = env_->settings.turn.agent;
  // An anonymous stream gets a fresh id: nothing ties it to anyone.
  const std::string user =
      start.wa_id().empty() ? absl::StrCat("anonymous-", RandomHex(16)) : start.wa_id();
  opts.user_id = DeriveUserId(env_->settings.turn.user_id_salt, start.phone_number_id(), user);
  if (!start.profile_name().empty()) opts.dynamic_variables["user_name"] = start.profile_name();
  absl::StatusOr<std::unique_ptr<AgentSession>> started =
      AgentSession::Start(opts, Events(), env_->ws_pool);
  if (!started.ok()) {
    EndStream(FromAgentStart(started.status()), "agent refused");
    return;
  }
  std::shared_ptr<AgentSession> session = *std::move(started);
  bool late;
  {
    absl::MutexLock lock(&mu_);
    late = ending_;
    if (!late) agent_ = session;
  }
  if (late) {
    session->Close();  // the stream ended while the agent was connecting
    return;
  }
  MaybeGoLive();  // the metadata may already be here
}

// Callbacks run on the ws io thread: they only post (and an interruption
// invalidates queued audio at once, so no stale audio is written meanwhile).
AgentEvents ConverseReactor::Events() {
  std::weak_ptr<ConverseReactor> weak = weak_from_this();
  AgentEvents ev;
  ev.on_started = [weak](const std::string& id, int in_rate, int out_rate) {
    if (auto s = weak.lock()) s->out_->Post([s, id, in_rate, out_rate] {
      s->OnStarted(id, in_rate, out_rate);
    });
  };
  ev.on_user_transcript = [weak](const std::string& text) {
    if (auto s = weak.lock()) s->out_->Post([s, text] {
      v1::ConverseResponse r;
      r.set_user_transcript(text);
      s->Enqueue(std::move(r));
    });
  };
  ev.on_agent_response = [weak](const std::string& text) {
    if (auto s = weak.lock()) s->out_->Post([s, text] {
      v1::ConverseResponse r;
      r.set_agent_text(text);
      s->Enqueue(std::move(r));
    });
  };
  ev.on_audio = [weak](std::vector<int16_t> pcm, int64_t) {
    auto s = weak.lock();
    if (!s) return;
    const absl::Time arrived = absl::Now();
    const uint64_t generation = s->generation_.load();
    s->out_->Post([s, pcm = std::move(pcm), arrived, generation] {
      s->OnAgentAudio(pcm, arrived, generation);
    });
  };
  ev.on_interruption = [weak](int64_t event_id) {
    auto s = weak.lock();
    if (!s) return;
    s->generation_.fetch_add(1);
    {
      absl::MutexLock lock(&s->mu_);
      s->outbox_.DropAudio();  // stale, not a backpressure drop
    }
    s->out_->Post([s, event_id] { s->OnInterrupted(event_id); });
  };
  ev.on_reply_end = [weak](ReplyEnd) {
    if (auto s = weak.lock()) s->out_->Post([s] { s->OnReplyEnd(); });
  };
  ev.on_closed = [weak](int code, const std::string& reason, bool retryable) {
    auto s = weak.lock();
    if (!s) return;
    // Through the output strand, so audio that came before the close is kept.
    s->out_->Post([s, code, reason, retryable] {
      const std::string why = absl::StrCat("the agent closed the conversation (", code, " ",
                                           reason, ")");
      s->EndStream(grpc::Status(retryable ? StatusCode::UNAVAILABLE
                                          : StatusCode::FAILED_PRECONDITION,
                                why),
                   why);
    });
  };
  return ev;
}

void ConverseReactor::ReadNext() {
  {
    absl::MutexLock lock(&mu_);
    if (ending_ || input_closed_) return;
    ++ops_starting_;
  }
  StartRead(&request_);
  OpStarted();
}

std::shared_ptr<AgentSession> ConverseReactor::agent() {
  absl::MutexLock lock(&mu_);
  return agent_;
}

void ConverseReactor::StartInput(v1::AudioFormat format, int rate) {
  absl::StatusOr<std::unique_ptr<InputTranscoder>> input = InputTranscoder::Create(format, rate);
  if (!input.ok()) {
    EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT, std::string(input.status().message())),
              "bad input format");
    return;
  }
  input_ = *std::move(input);
  in_rate_ = rate;
  ReadNext();
}

void ConverseReactor::HandleInput(const v1::ConverseRequest& req) {
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
  }
  const auto bad = [this](const std::string& why) {
    EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT, why), "bad request");
  };
  switch (req.msg_case()) {
    case v1::ConverseRequest::kStart:
      return bad("start comes once, first");
    case v1::ConverseRequest::kAudio: {
      if (input_ended_) return bad("audio after end_of_input");
      std::vector<int16_t> pcm;
      if (absl::Status s = input_->Push(req.audio(), &pcm); !s.ok()) {
        return bad(std::string(s.message()));
      }
      return SendToAgent(pcm);
    }
    case v1::ConverseRequest::kText:
      if (input_ended_) return bad("text after end_of_input");
      if (auto a = agent(); a && !req.text().empty()) {
        a->SendText(req.text());
        sent_input_ = true;
      }
      return;
    case v1::ConverseRequest::kEndOfInput:
      if (req.end_of_input()) EndOfInput();
      return;
    default:
      return;  // an empty message: nothing to do
  }
}

void ConverseReactor::SendToAgent(const std::vector<int16_t>& pcm) {
  std::shared_ptr<AgentSession> a = agent();
  if (pcm.empty() || !a) return;
  if (!budget_.Take(Samples(pcm.size(), in_rate_), absl::Now())) {
    env_->metrics->dropped_in->Increment();
    if (!logged_input_drop_) {
      logged_input_drop_ = true;
      LogWarn("converse input runs too far ahead of real time; dropping audio",
              {{"session_id", session_id_}});
    }
    return;
  }
  a->SendAudio(pcm);
  sent_input_ = true;
}

void ConverseReactor::EndOfInput() {
  if (input_ended_) return;
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
  }
  input_ended_ = true;
  if (input_) {
    std::vector<int16_t> pcm;
    if (absl::Status s = input_->Finish(&pcm); !s.ok()) {
      EndStream(grpc::Status(StatusCode::INVALID_ARGUMENT, std::string(s.message())),
                "bad audio");
      return;
    }
    SendToAgent(pcm);
  }
  if (!sent_input_) {
    EndStream(grpc::Status::OK, "no input");  // nothing for the agent to answer
    return;
  }
  // The agent's VAD ends the user's turn on silence (PROTOCOLS.md B4). Ours,
  // so outside the input budget.
  if (auto a = agent()) {
    const auto n = static_cast<size_t>(
        absl::ToDoubleSeconds(env_->settings.turn.trailing_silence) * in_rate_);
    a->SendAudio(std::vector<int16_t>(n, 0));
  }
  absl::MutexLock lock(&mu_);
  awaiting_turn_end_ = true;
  Arm(&reply_alarm_, env_->settings.turn.reply_timeout, &ConverseReactor::OnReplyTimeout);
}

// ---- agent events (output strand) ----

void ConverseReactor::OnStarted(const std::string& conversation_id, int input_rate,
                                int output_rate) {
  v1::AudioFormat format;
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    format = start_.output_format();
  }
  auto output =
      OutputTranscoder::Create(format, output_rate, env_->settings.turn.reply_bitrate_bps);
  if (!output.ok()) {
    EndStream(grpc::Status(StatusCode::INTERNAL, std::string(output.status().message())),
              "output transcoder");
    return;
  }
  output_ = *std::move(output);
  {
    absl::MutexLock lock(&mu_);
    conversation_id_ = conversation_id;
    input_rate_ = input_rate;
    output_rate_ = output_rate;
    agent_started_ = true;
  }
  MaybeGoLive();
}

// Live once both the agent handle (Connect) and its metadata (OnStarted) are
// here, in whichever order they came.
void ConverseReactor::MaybeGoLive() {
  v1::AudioFormat in_format;
  int in_rate;
  std::string conversation_id;
  {
    absl::MutexLock lock(&mu_);
    if (ending_ || !agent_ || !agent_started_ || phase_ != Phase::kConnecting) return;
    phase_ = Phase::kLive;
    reported_ = true;
    connect_alarm_.Cancel();
    OutItem item;
    v1::ConverseStarted* started = item.msg.mutable_started();
    started->set_session_id(session_id_);
    started->set_conversation_id(conversation_id_);
    started->set_agent_input_format(PcmName(input_rate_));
    started->set_agent_output_format(PcmName(output_rate_));
    outbox_.Push(std::move(item), absl::Now());
    in_format = start_.input_format();
    in_rate = input_rate_;
    conversation_id = conversation_id_;
  }
  Report(/*ended=*/false);
  LogInfo("converse stream started",
          {{"session_id", session_id_}, {"conversation_id", conversation_id}});
  MaybeWrite();
  in_->Post([self = shared_from_this(), in_format, in_rate] {
    self->StartInput(in_format, in_rate);
  });
}

void ConverseReactor::OnAgentAudio(const std::vector<int16_t>& pcm, absl::Time arrived,
                                   uint64_t generation) {
  if (generation != generation_.load() || !output_) return;  // cut off by an interruption
  std::vector<AudioChunk> chunks;
  if (absl::Status s = output_->Push(pcm, &chunks); !s.ok()) {
    EndStream(grpc::Status(StatusCode::INTERNAL, std::string(s.message())), "output transcoding");
    return;
  }
  EnqueueAudio(std::move(chunks), arrived, generation);
}

void ConverseReactor::OnInterrupted(int64_t event_id) {
  std::vector<AudioChunk> chunks;
  if (output_) {
    if (absl::Status s = output_->Interrupt(&chunks); !s.ok()) {
      EndStream(grpc::Status(StatusCode::INTERNAL, std::string(s.message())), "output transcoding");
      return;
    }
  }
  EnqueueAudio(std::move(chunks), absl::InfinitePast(), generation_.load());
  v1::ConverseResponse r;
  r.set_interruption(event_id);
  Enqueue(std::move(r));
}

void ConverseReactor::OnReplyEnd() {
  std::vector<AudioChunk> chunks;
  if (output_) {
    if (absl::Status s = output_->EndReply(&chunks); !s.ok()) {
      EndStream(grpc::Status(StatusCode::INTERNAL, std::string(s.message())), "output transcoding");
      return;
    }
  }
  EnqueueAudio(std::move(chunks), absl::InfinitePast(), generation_.load());
  v1::ConverseResponse r;
  r.set_turn_end(++turns_);
  Enqueue(std::move(r));
  bool last;
  {
    absl::MutexLock lock(&mu_);
    last = awaiting_turn_end_;
  }
  if (last) EndStream(grpc::Status::OK, "turn complete");
}

void ConverseReactor::EnqueueAudio(std::vector<AudioChunk> chunks, absl::Time arrived,
                                   uint64_t generation) {
  if (chunks.empty()) return;
  int dropped = 0;
  {
    absl::MutexLock lock(&mu_);
    if (ending_ || generation != generation_.load()) return;
    const absl::Time now = absl::Now();
    for (AudioChunk& c : chunks) {
      OutItem item;
      item.msg.set_audio(std::move(c.bytes));
      item.audio = c.duration;
      item.droppable = c.droppable;
      item.arrived_at = arrived;
      dropped += outbox_.Push(std::move(item), now);
    }
  }
  if (dropped > 0) env_->metrics->dropped_out->Increment(dropped);
  MaybeWrite();
}

void ConverseReactor::Enqueue(v1::ConverseResponse msg) {
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    OutItem item;
    item.msg = std::move(msg);
    outbox_.Push(std::move(item), absl::Now());
  }
  MaybeWrite();
}

// ---- writing and ending ----

void ConverseReactor::MaybeWrite() {
  int dropped = 0;
  bool write = false, finish = false;
  absl::Time arrived = absl::InfinitePast();
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (write_in_flight_ || finish_called_) return;
    std::optional<OutItem> item;
    if (!cancelled_) item = outbox_.Pop(absl::Now(), &dropped);
    if (item) {
      writing_ = std::move(item->msg);
      arrived = item->arrived_at;
      write_in_flight_ = true;
      ++ops_starting_;
      write = true;
    } else {
      finish = ShouldFinishLocked();
      status = end_status_;
    }
  }
  if (dropped > 0) env_->metrics->dropped_out->Increment(dropped);
  if (write) {
    if (arrived != absl::InfinitePast()) {
      env_->metrics->chunk_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - arrived));
    }
    StartWrite(&writing_);
    OpStarted();
  } else if (finish) {
    Finish(status);
  }
}

void ConverseReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) cancelled_ = true;  // the call is broken: nothing more gets written
  }
  if (!ok) EndStream(grpc::Status(StatusCode::CANCELLED, "the client went away"), "client gone");
  MaybeWrite();
}

void ConverseReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  if (ctx_->deadline() <= std::chrono::system_clock::now()) {
    EndStream(grpc::Status(StatusCode::DEADLINE_EXCEEDED, "the call's deadline passed"),
              "deadline", /*drop_audio=*/true);
  } else {
    EndStream(grpc::Status(StatusCode::CANCELLED, "the client cancelled"), "client cancelled",
              /*drop_audio=*/true);
  }
  MaybeWrite();
}

void ConverseReactor::EndStream(const grpc::Status& status, const std::string& reason,
                                bool drop_audio) {
  std::shared_ptr<AgentSession> agent;
  {
    absl::MutexLock lock(&mu_);
    if (ending_) return;
    ending_ = true;
    end_status_ = status;
    end_reason_ = reason;
    if (drop_audio) outbox_.DropAudio();
    if (!status.ok() && !cancelled_) {  // said in-band too, for clients that read on
      OutItem item;
      item.msg.mutable_error()->set_code(status.error_code());
      item.msg.mutable_error()->set_message(status.error_message());
      outbox_.Push(std::move(item), absl::Now());
    }
    agent = std::move(agent_);
    connect_alarm_.Cancel();
    reply_alarm_.Cancel();
  }
  LogInfo("converse stream ending", {{"session_id", session_id_},
                                     {"reason", reason},
                                     {"code", static_cast<int>(status.error_code())}});
  // Close() may wait for an agent callback in progress: on the blocking pool.
  env_->blocking->Submit(
      [self = shared_from_this(), agent = std::move(agent)] { self->Teardown(agent); });
  MaybeWrite();
}

void ConverseReactor::Teardown(std::shared_ptr<AgentSession> agent) {
  if (agent) agent->Close();  // no agent callback runs after this returns
  Report(/*ended=*/true);
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    torn_down_ = true;
    status = end_status_;
  }
  env_->metrics->Ended(Outcome(status)).Increment();
  MaybeWrite();  // writes what is left, then finishes
}

// Serialised, and nothing after the end: a "started" report that lost the
// race with the "ended" one would leave the controller listing a ghost.
void ConverseReactor::Report(bool ended) {
  absl::MutexLock report_lock(&report_mu_);
  if (ended_reported_) return;
  v1::WorkerMessage m;
  v1::SessionReport* r = m.mutable_session_report();
  {
    absl::MutexLock lock(&mu_);
    if (!reported_) return;  // the controller never heard of it
    r->set_conversation_id(conversation_id_);
    r->set_phone_number_id(start_.phone_number_id());
    r->set_wa_id(start_.wa_id());
    if (ended) r->set_end_reason(end_reason_);
  }
  r->set_session_id(session_id_);
  r->set_converse(true);
  r->set_ended(ended);
  ended_reported_ = ended;
  env_->report(std::move(m));
}

void ConverseReactor::OpStarted() {
  bool finish;
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    --ops_starting_;
    finish = ShouldFinishLocked();
    status = end_status_;
  }
  if (finish) Finish(status);
}

bool ConverseReactor::ShouldFinishLocked() {
  if (finish_called_ || !torn_down_ || ops_starting_ > 0 || write_in_flight_) return false;
  if (!cancelled_ && !outbox_.empty()) return false;
  finish_called_ = true;
  return true;
}

void ConverseReactor::OnDone() {
  env_->metrics->streams->Decrement();
  std::shared_ptr<ConverseReactor> self;
  {
    absl::MutexLock lock(&mu_);
    self = std::move(self_);
  }
  env_->on_done(session_id_);
  // `self` may be the last reference: *this goes with it.
}

void ConverseReactor::Arm(grpc::Alarm* alarm, absl::Duration after,
                          void (ConverseReactor::*fn)()) {
  std::weak_ptr<ConverseReactor> weak = weak_from_this();
  // The callback runs on a gRPC executor thread, never inline.
  alarm->Set(absl::ToChronoTime(absl::Now() + after), [weak, fn](bool fired) {
    if (!fired) return;
    if (auto self = weak.lock()) ((*self).*fn)();
  });
}

void ConverseReactor::OnStartTimeout() {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kAwaitStart) return;
  }
  EndStream(grpc::Status(StatusCode::DEADLINE_EXCEEDED, "no start message in time"),
            "start timeout");
}

void ConverseReactor::OnConnectTimeout() {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kConnecting) return;
  }
  EndStream(grpc::Status(StatusCode::UNAVAILABLE,
                         "the agent did not start the conversation in time"),
            "agent start timeout");
}

void ConverseReactor::OnReplyTimeout() {
  EndStream(grpc::Status(StatusCode::DEADLINE_EXCEEDED,
                         "the agent did not finish its reply in time"),
            "reply timeout");
}

}  // namespace bridge::media_worker
