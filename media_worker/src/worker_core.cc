#include "worker_core.h"

#include "absl/time/clock.h"
#include "common/log.h"

namespace bridge::media_worker {

// An acknowledged result is still remembered this long: a duplicate
// dispatch racing the acknowledgement finds it instead of running again.
constexpr absl::Duration kRememberAcked = absl::Minutes(10);

WorkerCore::WorkerCore(TurnSettings settings, GraphApi* graph, SpeechToText* stt,
                       ws::ClientPool* pool, int threads, Report report)
    : settings_(std::move(settings)),
      graph_(graph),
      stt_(stt),
      pool_(pool),
      report_(std::move(report)),
      threads_(threads) {}

WorkerCore::~WorkerCore() = default;

void WorkerCore::OnMessage(const v1::ControllerMessage& m) {
  switch (m.msg_case()) {
    case v1::ControllerMessage::kAssign: {
      absl::MutexLock lock(&mu_);
      assignments_[m.assign().session_id()] = m.assign();
      metrics_.sessions->Set(static_cast<double>(assignments_.size()));
      break;
    }
    case v1::ControllerMessage::kTurn: {
      const v1::Turn turn = m.turn();
      std::optional<v1::TurnResult> again;
      {
        absl::MutexLock lock(&mu_);
        auto [it, fresh] = ran_.try_emplace(Key(turn.session_id(), turn.turn_id()));
        if (!fresh) {
          // Dispatched again: never run twice. A running turn reports when it
          // ends; a finished one reports its result again.
          LogInfo("turn dispatched again; not run again",
                  {{"session_id", turn.session_id()}, {"turn_id", turn.turn_id()},
                   {"finished", it->second.finished}});
          if (it->second.finished) again = it->second.result;
        } else if (leaving_) {
          ran_.erase(it);
          again.emplace();
          again->set_session_id(turn.session_id());
          again->set_turn_id(turn.turn_id());
          again->set_outcome(v1::TURN_OUTCOME_HANDED_BACK);
          again->set_reason("worker shutting down");
        } else {
          it->second.turn.set_session_id(turn.session_id());
          it->second.turn.set_turn_id(turn.turn_id());
          ++active_turns_;
          metrics_.turns_active->Set(active_turns_);
        }
      }
      if (again) {
        v1::WorkerMessage out;
        *out.mutable_turn_result() = *std::move(again);
        report_(std::move(out));
        break;
      }
      threads_.Submit([this, turn] { RunTurn(turn); });
      break;
    }
    case v1::ControllerMessage::kResultAck: {
      absl::MutexLock lock(&mu_);
      auto it = ran_.find(Key(m.result_ack().session_id(), m.result_ack().turn_id()));
      if (it != ran_.end()) it->second.acked = true;
      Forget(absl::Now());
      break;
    }
    case v1::ControllerMessage::kEndSession:
      EndSession(m.end_session());
      break;
    case v1::ControllerMessage::kDrain: {
      absl::MutexLock lock(&mu_);
      draining_ = true;
      LogInfo("draining", {{"reason", m.drain().reason()}});
      break;
    }
    default:
      break;
  }
}

void WorkerCore::EndSession(const v1::SessionEnd& end) {
  std::shared_ptr<SessionRunner> runner;
  {
    absl::MutexLock lock(&mu_);
    assignments_.erase(end.session_id());
    auto it = sessions_.find(end.session_id());
    if (it != sessions_.end()) {
      runner = it->second;
      sessions_.erase(it);
    }
    metrics_.sessions->Set(static_cast<double>(assignments_.size()));
  }
  // End() is safe beside a running turn; it can wait for an agent callback
  // in progress, so not on the gRPC thread.
  if (runner) threads_.Submit([runner] { runner->End(); });
  LogInfo("session ended", {{"session_id", end.session_id()}, {"reason", end.reason()}});
}

void WorkerCore::RunTurn(const v1::Turn& turn) {
  std::shared_ptr<SessionRunner> runner;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(turn.session_id());
    if (it == sessions_.end()) {
      auto a = assignments_.find(turn.session_id());
      v1::SessionAssignment assignment;
      if (a != assignments_.end()) {
        assignment = a->second;
      } else {
        assignment.set_session_id(turn.session_id());
        assignment.set_phone_number_id(turn.message().phone_number_id());
        assignment.set_wa_id(turn.message().from().wa_id());
        assignment.set_user_id(turn.message().from().user_id());
        assignment.set_profile_name(turn.message().from().profile_name());
      }
      auto start_agent = [pool = pool_](const AgentOptions& o, AgentEvents ev) {
        return AgentSession::Start(o, std::move(ev), pool);
      };
      it = sessions_.emplace(turn.session_id(), std::make_shared<SessionRunner>(
                                                    assignment, settings_,
                                                    TurnServices{graph_, stt_, start_agent,
                                                                 &metrics_}))
               .first;
    }
    runner = it->second;
  }
  v1::WorkerMessage out;
  v1::TurnResult& result = *out.mutable_turn_result();
  result = runner->RunTurn(turn);
  {
    absl::MutexLock lock(&mu_);
    // Stopped by SIGTERM before anything reached the user: another worker
    // runs it now, without waiting for this one's link to time out.
    if (leaving_ && result.outcome() != v1::TURN_OUTCOME_DONE && result.sent_size() == 0) {
      result.set_outcome(v1::TURN_OUTCOME_HANDED_BACK);
      ran_.erase(Key(turn.session_id(), turn.turn_id()));
    } else {
      Ran& ran = ran_[Key(turn.session_id(), turn.turn_id())];
      ran.finished = true;
      ran.finished_at = absl::Now();
      ran.result = result;
    }
    --active_turns_;
    metrics_.turns_active->Set(active_turns_);
  }
  report_(std::move(out));  // lost with a broken link: the next hello says it again
}

void WorkerCore::Forget(absl::Time now) {
  for (auto it = ran_.begin(); it != ran_.end();) {
    if (it->second.acked && now - it->second.finished_at > kRememberAcked) it = ran_.erase(it);
    else ++it;
  }
}

void WorkerCore::FillHello(v1::WorkerHello* hello) {
  absl::MutexLock lock(&mu_);
  hello->set_draining(draining_);
  for (const auto& [id, a] : assignments_) hello->add_held_session_ids(id);
  for (const auto& [key, ran] : ran_) {
    if (ran.acked) continue;
    if (ran.finished) {
      *hello->add_finished_turns() = ran.result;
    } else {
      *hello->add_running_turns() = ran.turn;
    }
  }
}

v1::WorkerHeartbeat WorkerCore::Load() {
  absl::MutexLock lock(&mu_);
  v1::WorkerHeartbeat hb;
  hb.set_active_sessions(static_cast<int32_t>(assignments_.size()));
  hb.set_active_turns(active_turns_);
  return hb;
}

void WorkerCore::HandBack(absl::Duration timeout) {
  std::vector<std::shared_ptr<SessionRunner>> runners;
  {
    absl::MutexLock lock(&mu_);
    leaving_ = true;
    for (const auto& [id, r] : sessions_) runners.push_back(r);
  }
  for (const auto& r : runners) r->End();
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](int* active) { return *active == 0; }, &active_turns_),
                       timeout);
}

}  // namespace bridge::media_worker
