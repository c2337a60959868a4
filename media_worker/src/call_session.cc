#include "call_session.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audio/resampler.h"
#include "common/log.h"
#include "session_runner.h"
#include "turn_lines.h"

namespace bridge::media_worker {

// The call's PCM rate (Meta asks for <= 16 kHz, the agent's default input
// and output are 16 kHz) and the agent's, when they differ.
class CallResampling {
 public:
  std::unique_ptr<audio::Resampler> to_agent, to_caller;
  std::vector<int16_t> buffer;
};

namespace {

constexpr int kCallRate = 16000;
constexpr absl::Duration kGoodbyePoll = absl::Milliseconds(100);

const char* OutcomeName(v1::CallOutcome o) {
  switch (o) {
    case v1::CALL_OUTCOME_ENDED: return "ended";
    case v1::CALL_OUTCOME_FAILED:
    case v1::CALL_OUTCOME_REJECT_FAILED: return "failed";
    default: return "rejected";
  }
}

}  // namespace

std::shared_ptr<CallSession> CallSession::Answer(const CallEnv* env, MediaLoop* loop,
                                                 v1::CallOffer offer, SdpOffer sdp) {
  auto call = std::make_shared<CallSession>(env, loop, std::move(offer), std::move(sdp));
  env->metrics->active->Increment();
  loop->Post([call] {
    call->loop_->AssertInLoop();
    call->Begin();
  });
  return call;
}

CallSession::CallSession(const CallEnv* env, MediaLoop* loop, v1::CallOffer offer, SdpOffer sdp)
    : env_(env), loop_(loop), offer_(std::move(offer)), sdp_(std::move(sdp)), offered_at_(absl::Now()) {}

CallSession::~CallSession() = default;

void CallSession::End(std::string reason, bool terminate) {
  loop_->Post([self = shared_from_this(), reason = std::move(reason), terminate] {
    self->loop_->AssertInLoop();
    if (self->phase_ == Phase::kDone) return;
    self->Finish(self->phase_ == Phase::kAnswering ? v1::CALL_OUTCOME_FAILED
                                                   : v1::CALL_OUTCOME_ENDED,
                 reason, terminate);
  });
}

// ---- answering: gather, pre_accept, connect, accept ----

void CallSession::Begin() {
  self_ = shared_from_this();  // alive until Finish, whoever else lets go
  CallMediaOptions o;
  o.network = env_->settings.network;
  // RFC 8445: against an ICE-lite offerer (Meta) the answerer controls;
  // against a full-ICE one (a browser) the offerer does.
  o.controlling = sdp_.ice_lite;
  o.dtls_role = AnswerSetup(sdp_.setup) == DtlsSetup::kActive ? DtlsRole::kClient : DtlsRole::kServer;
  o.opus_payload_type = sdp_.opus_payload_type;
  o.pcm_rate = kCallRate;
  o.connect_timeout = env_->settings.connect_timeout;
  std::weak_ptr<CallSession> weak = weak_from_this();
  CallMediaEvents ev;
  // CallMedia calls these on its loop, which is this call's.
  ev.on_connected = [weak] {
    if (auto s = weak.lock()) {
      s->loop_->AssertInLoop();
      s->MediaUp();
    }
  };
  ev.on_failed = [weak](const absl::Status& why) {
    if (auto s = weak.lock()) {
      s->loop_->AssertInLoop();
      s->Finish(s->phase_ == Phase::kLive ? v1::CALL_OUTCOME_ENDED : v1::CALL_OUTCOME_FAILED,
                absl::StrCat("media: ", why.message()), /*tell_meta=*/true);
    }
  };
  ev.on_audio = [weak](absl::Span<const int16_t> pcm, absl::Duration waited) {
    if (auto s = weak.lock()) {
      s->loop_->AssertInLoop();
      s->CallerAudio(pcm, waited);
    }
  };
  ev.on_played = [m = env_->metrics](absl::Duration late) {
    m->to_caller_seconds->Observe(absl::ToDoubleSeconds(late));
  };
  auto media = CallMedia::Create(loop_, env_->identity, o, std::move(ev));
  if (!media.ok()) {
    Finish(v1::CALL_OUTCOME_REJECTED, absl::StrCat("media: ", media.status().message()), true);
    return;
  }
  media_ = *std::move(media);
  media_->Gather([weak](absl::StatusOr<LocalDescription> local) {
    if (auto s = weak.lock()) {
      s->loop_->AssertInLoop();
      s->Gathered(std::move(local));
    }
  });
}

void CallSession::Gathered(absl::StatusOr<LocalDescription> local) {
  if (phase_ == Phase::kDone) return;
  if (!local.ok()) {
    Finish(v1::CALL_OUTCOME_REJECTED, absl::StrCat("media: ", local.status().message()), true);
    return;
  }
  SdpAnswerParams ours{local->ice_ufrag, local->ice_pwd, local->candidates,
                       local->fingerprint_sha256};
  if (!env_->settings.network.public_ip.empty()) ours.origin_address = env_->settings.network.public_ip;
  answer_sdp_ = BuildSdpAnswer(sdp_, ours);
  Graph(CallAction::kPreAccept,
        [weak = weak_from_this()](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread) {
          if (auto self = weak.lock()) self->PreAccepted(s);
        });
}

void CallSession::PreAccepted(const absl::Status& s) {
  if (phase_ == Phase::kDone) return;
  if (!s.ok()) {
    Finish(v1::CALL_OUTCOME_REJECT_FAILED, absl::StrCat("pre_accept failed: ", s.message()), false);
    return;
  }
  pre_accepted_ = true;
  if (absl::Status c = media_->Connect(sdp_); !c.ok()) {
    Finish(v1::CALL_OUTCOME_FAILED, absl::StrCat("media: ", c.message()), true);
    return;
  }
  StartAgent();  // while ICE and DTLS run: the agent is ready when audio is
}

void CallSession::MediaUp() {
  if (phase_ != Phase::kAnswering) return;
  env_->metrics->setup_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - offered_at_));
  Graph(CallAction::kAccept,
        [weak = weak_from_this()](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread) {
          if (auto self = weak.lock()) self->Accepted(s);
        });
}

void CallSession::Accepted(const absl::Status& s) {
  if (phase_ != Phase::kAnswering) return;
  if (!s.ok()) {
    Finish(v1::CALL_OUTCOME_FAILED, absl::StrCat("accept failed: ", s.message()), true);
    return;
  }
  phase_ = Phase::kLive;
  live_at_ = absl::Now();
  env_->metrics->Ended("answered").Increment();
  v1::WorkerMessage m;
  m.mutable_call_report()->set_call_id(offer_.call_id());
  m.mutable_call_report()->set_outcome(v1::CALL_OUTCOME_ANSWERED);
  m.mutable_call_report()->set_reason(media_->stats().selected_pair);
  env_->report(std::move(m));
  LogInfo("call answered", {{"call_id", offer_.call_id()},
                            {"setup_ms", absl::ToInt64Milliseconds(live_at_ - offered_at_)},
                            {"pair", media_->stats().selected_pair}});
  limit_timer_ = loop_->After(env_->settings.max_duration, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->loop_->AssertInLoop();
      self->limit_timer_ = 0;
      self->Finish(v1::CALL_OUTCOME_ENDED, "the call reached --call_max_duration", true);
    }
  });
}

// `then` runs back on the loop.
void CallSession::Graph(CallAction action, std::function<void(absl::Status)> then) {
  env_->blocking->Submit([self = shared_from_this(), action, sdp = answer_sdp_,
                          then = std::move(then)] {
    absl::Status s = self->env_->graph->ActOnCall(self->offer_.phone_number_id(),
                                                  self->offer_.call_id(), action, sdp);
    self->loop_->Post([self, s, then] {
      self->loop_->AssertInLoop();
      then(s);
    });
  });
}

// ---- the agent ----

void CallSession::StartAgent() {
  AgentOptions opts = env_->settings.agent;
  const std::string& user = offer_.from().user_id().empty() ? offer_.from().wa_id()
                                                            : offer_.from().user_id();
  opts.user_id = DeriveUserId(env_->settings.user_id_salt, offer_.phone_number_id(), user);
  if (!offer_.from().profile_name().empty()) {
    opts.dynamic_variables["user_name"] = offer_.from().profile_name();
  }
  env_->blocking->Submit([self = shared_from_this(), opts] {
    absl::StatusOr<std::unique_ptr<AgentSession>> agent =
        AgentSession::Start(opts, self->AgentCallbacks(), self->env_->ws_pool);
    std::shared_ptr<AgentSession> started;
    if (agent.ok()) started = *std::move(agent);
    self->loop_->Post([self, started, status = agent.status()] {
      self->loop_->AssertInLoop();
      if (!status.ok()) {
        self->Finish(self->phase_ == Phase::kLive ? v1::CALL_OUTCOME_ENDED : v1::CALL_OUTCOME_FAILED,
                     absl::StrCat("agent: ", status.message()), true);
        return;
      }
      if (self->phase_ == Phase::kDone) {
        self->env_->blocking->Submit([started] { started->Close(); });
        return;
      }
      self->agent_ = started;
      // What the caller wrote or said in voice notes before: the agent on
      // the call knows it, as a new conversation in writing would.
      const std::string context = EarlierExchangesContext(self->offer_.recent_transcript());
      if (!context.empty()) started->SendContextualUpdate(context);
    });
  });
}

// Agent callbacks run on the ws io thread: they only hop to the loop.
AgentEvents CallSession::AgentCallbacks() {
  std::weak_ptr<CallSession> weak = weak_from_this();
  MediaLoop* loop = loop_;
  // `fn` runs on the loop, and only while the call lasts.
  auto hop = [weak, loop](std::function<void(CallSession*)> fn) {
    if (auto s = weak.lock()) loop->Post([s, fn = std::move(fn)] {
      s->loop_->AssertInLoop();
      if (s->phase_ != Phase::kDone) fn(s.get());
    });
  };
  // The lambdas handed to `hop` run there: ON_LOOP lets the analysis check them.
#define ON_LOOP ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread)
  AgentEvents ev;
  ev.on_started = [hop](const std::string& conversation_id, int in_rate, int out_rate) {
    hop([conversation_id, in_rate, out_rate](CallSession* s) ON_LOOP {
      s->conversation_id_ = conversation_id;
      s->AgentStarted(in_rate, out_rate);
    });
  };
  ev.on_audio = [hop](std::vector<int16_t> pcm, int64_t) {
    hop([pcm = std::move(pcm)](CallSession* s) ON_LOOP { s->AgentAudio(pcm); });
  };
  ev.on_interruption = [hop](int64_t) {
    hop([](CallSession* s) ON_LOOP { s->CutAgentAudio(); });
  };
  ev.on_user_transcript = [hop, id = offer_.call_id()](const std::string& text) {
    LogInfo("call: the caller said", {{"call_id", id}, {"chars", static_cast<int64_t>(text.size())}});
    hop([text](CallSession* s) ON_LOOP {
      s->caller_had_turn_ = true;
      s->Said(v1::SPEAKER_USER, text);
    });
  };
  ev.on_agent_response = [hop](const std::string& text) {
    hop([text](CallSession* s) ON_LOOP { s->Said(v1::SPEAKER_AGENT, text); });
  };
  // After an interruption the agent says what it really got to say.
  ev.on_agent_correction = [hop](const std::string& original, const std::string& corrected) {
    hop([original, corrected](CallSession* s) ON_LOOP {
      for (auto it = s->said_.rbegin(); it != s->said_.rend(); ++it) {
        if (it->speaker() != v1::SPEAKER_AGENT || it->text() != original) continue;
        it->set_text(corrected);
        break;
      }
    });
  };
  ev.on_reply_end = [hop](ReplyEnd why) {
    if (why != ReplyEnd::kEndCall) return;
    hop([](CallSession* s) ON_LOOP { s->EndAfterPlayout("the agent ended the call (end_call)"); });
  };
  ev.on_closed = [hop](int code, const std::string& reason, bool) {
    hop([code, reason](CallSession* s) ON_LOOP {
      s->agent_.reset();  // closed: nothing to close
      s->EndAfterPlayout(absl::StrCat("the agent's conversation closed (", code,
                                      reason.empty() ? "" : ": ", reason, ")"));
    });
  };
#undef ON_LOOP
  return ev;
}

void CallSession::Said(v1::Speaker who, const std::string& text) {
  if (!text.empty()) said_.push_back(SentLine(who, text, /*message_id=*/"", "call"));
}

void CallSession::AgentStarted(int input_rate, int output_rate) {
  auto r = std::make_unique<CallResampling>();
  auto to_agent = audio::Resampler::Create(kCallRate, input_rate);
  auto to_caller = audio::Resampler::Create(output_rate, kCallRate);
  if (!to_agent.ok() || !to_caller.ok()) {
    Finish(v1::CALL_OUTCOME_ENDED, "the agent's audio formats cannot be resampled", true);
    return;
  }
  r->to_agent = *std::move(to_agent);
  r->to_caller = *std::move(to_caller);
  resampling_ = std::move(r);
}

void CallSession::CallerAudio(absl::Span<const int16_t> pcm, absl::Duration waited) {
  BargeIn(pcm);
  if (phase_ != Phase::kLive || !agent_ || !resampling_) return;  // nobody listens yet
  const absl::Time t0 = absl::Now();
  resampling_->buffer.clear();
  resampling_->to_agent->Process(pcm, &resampling_->buffer);
  agent_->SendAudio(resampling_->buffer);
  env_->metrics->to_agent_seconds->Observe(absl::ToDoubleSeconds(waited + (absl::Now() - t0)));
}

// Speech that starts while the agent's audio is queued cuts that audio at
// once; the agent's own `interruption` follows when its VAD agrees.
void CallSession::BargeIn(absl::Span<const int16_t> pcm) {
  int peak = 0;
  for (int16_t v : pcm) peak = std::max(peak, std::abs(static_cast<int>(v)));
  if (peak < env_->settings.barge_in_level) {
    speech_run_ = absl::ZeroDuration();
    speaking_ = false;
    return;
  }
  speech_run_ += absl::Seconds(static_cast<double>(pcm.size()) / kCallRate);
  if (speaking_ || speech_run_ < env_->settings.barge_in_after) return;
  speaking_ = true;  // once per stretch of speech
  // Not over the greeting: an agent with disable_first_message_interruptions
  // wants it heard whole (PROTOCOLS.md B4), and only its own `interruption`
  // can say it allows one then.
  if (caller_had_turn_) CutAgentAudio();
}

// Whichever notices first, our level check or the agent's VAD (its
// `interruption`), drops the queued agent audio; one barge-in is counted
// per cut of audio that was still to play.
void CallSession::CutAgentAudio() {
  if (!media_ || media_->queued() == absl::ZeroDuration()) return;
  media_->ClearPlayout();
  env_->metrics->barge_ins->Increment();
}

void CallSession::AgentAudio(const std::vector<int16_t>& pcm) {
  if (!resampling_ || !media_) return;
  resampling_->buffer.clear();
  resampling_->to_caller->Process(pcm, &resampling_->buffer);
  media_->Play(resampling_->buffer);
}

// ---- the end ----

void CallSession::EndAfterPlayout(std::string reason) {
  if (phase_ == Phase::kDone || goodbye_timer_ != 0) return;
  if (phase_ != Phase::kLive) {
    Finish(v1::CALL_OUTCOME_FAILED, std::move(reason), true);
    return;
  }
  phase_ = Phase::kEnding;
  goodbye_reason_ = std::move(reason);
  goodbye_since_ = absl::Now();
  GoodbyePoll();
}

// The agent's last words are queued: terminate once they have played.
void CallSession::GoodbyePoll() {
  goodbye_timer_ = 0;
  if (phase_ == Phase::kDone) return;
  if (media_->queued() == absl::ZeroDuration() ||
      absl::Now() - goodbye_since_ > env_->settings.goodbye_max) {
    Finish(v1::CALL_OUTCOME_ENDED, goodbye_reason_, true);
    return;
  }
  goodbye_timer_ = loop_->After(kGoodbyePoll, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->loop_->AssertInLoop();
      self->GoodbyePoll();
    }
  });
}

// `tell_meta`: reject (never answered) or terminate (answered) through the
// Graph API; not when Meta told us (the caller hung up).
void CallSession::Finish(v1::CallOutcome outcome, std::string reason, bool tell_meta) {
  if (phase_ == Phase::kDone) return;
  const bool was_live = phase_ == Phase::kLive || phase_ == Phase::kEnding;
  phase_ = Phase::kDone;
  loop_->Cancel(limit_timer_);
  loop_->Cancel(goodbye_timer_);
  limit_timer_ = goodbye_timer_ = 0;
  v1::CallReport report;
  report.set_call_id(offer_.call_id());
  report.set_outcome(outcome);
  report.set_reason(reason);
  if (was_live) report.set_duration_ms(absl::ToInt64Milliseconds(absl::Now() - live_at_));
  for (v1::TranscriptLine& l : said_) *report.add_lines() = std::move(l);
  said_.clear();
  report.set_conversation_id(conversation_id_);
  if (media_) {
    const CallMediaStats st = media_->stats();
    CallMetrics& m = *env_->metrics;
    m.packets_received->Increment(static_cast<double>(st.in.received));
    m.packets_lost->Increment(static_cast<double>(st.in.lost));
    m.packets_recovered->Increment(static_cast<double>(st.in.recovered));
    if (st.in.received > 0) m.jitter_seconds->Observe(st.in.jitter_seconds);
    LogInfo("call ended", {{"call_id", offer_.call_id()}, {"outcome", OutcomeName(outcome)},
                           {"reason", reason}, {"received", static_cast<int64_t>(st.in.received)},
                           {"lost", static_cast<int64_t>(st.in.lost)},
                           {"recovered", static_cast<int64_t>(st.in.recovered)},
                           {"late", static_cast<int64_t>(st.in.late)},
                           {"undecryptable", static_cast<int64_t>(st.undecryptable)},
                           {"rtcp", static_cast<int64_t>(st.rtcp_received)},
                           {"sent", static_cast<int64_t>(st.packets_sent)},
                           {"silence_sent", static_cast<int64_t>(st.silence_sent)}});
    media_->Close();
  }
  env_->metrics->Ended(OutcomeName(outcome)).Increment();
  env_->metrics->active->Decrement();
  // Blocking work off the loop: the agent's close, Meta's terminate.
  std::shared_ptr<AgentSession> agent = std::move(agent_);
  std::shared_ptr<CallSession> self = std::move(self_);
  // A call Meta never saw us answer is rejected; one we answered, terminated.
  const CallAction action = outcome == v1::CALL_OUTCOME_REJECTED || !pre_accepted_
                                ? CallAction::kReject
                                : CallAction::kTerminate;
  // The report goes first: Meta's terminate webhook for our own terminate
  // must not reach the controller before the reason the call ended does.
  v1::WorkerMessage m;
  *m.mutable_call_report() = std::move(report);
  env_->report(std::move(m));
  env_->blocking->Submit([self, agent, tell_meta, action] {
    if (agent) agent->Close();
    if (tell_meta) {
      absl::Status s = self->env_->graph->ActOnCall(self->offer_.phone_number_id(),
                                                    self->offer_.call_id(), action, "");
      if (!s.ok()) {
        LogWarn("call reject/terminate failed",
                {{"call_id", self->offer_.call_id()}, {"error", std::string(s.message())}});
      }
    }
    self->env_->on_done(self->offer_.call_id());
  });
}

}  // namespace bridge::media_worker
