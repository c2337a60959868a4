#include "worker_core.h"

#include "common/log.h"

namespace bridge::media_worker {

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
      threads_.Submit([this, turn] { RunTurn(turn); });
      break;
    }
    case v1::ControllerMessage::kEndSession: {
      std::shared_ptr<SessionRunner> runner;
      {
        absl::MutexLock lock(&mu_);
        assignments_.erase(m.end_session().session_id());
        auto it = sessions_.find(m.end_session().session_id());
        if (it != sessions_.end()) {
          runner = it->second;
          sessions_.erase(it);
        }
        metrics_.sessions->Set(static_cast<double>(assignments_.size()));
      }
      // End() is safe beside a running turn; it can wait for an agent
      // callback in progress, so not on the gRPC thread.
      if (runner) threads_.Submit([runner] { runner->End(); });
      LogInfo("session ended", {{"session_id", m.end_session().session_id()},
                                {"reason", m.end_session().reason()}});
      break;
    }
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
      it = sessions_.emplace(turn.session_id(), std::make_shared<SessionRunner>(
                                                    assignment, settings_,
                                                    TurnServices{graph_, stt_, pool_, &metrics_}))
               .first;
    }
    runner = it->second;
    ++active_turns_;
    metrics_.turns_active->Set(active_turns_);
  }
  v1::WorkerMessage out;
  *out.mutable_turn_result() = runner->RunTurn(turn);
  report_(std::move(out));
  absl::MutexLock lock(&mu_);
  --active_turns_;
  metrics_.turns_active->Set(active_turns_);
}

std::vector<std::string> WorkerCore::HeldSessions() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, a] : assignments_) ids.push_back(id);
  return ids;
}

v1::WorkerHeartbeat WorkerCore::Load() {
  absl::MutexLock lock(&mu_);
  v1::WorkerHeartbeat hb;
  hb.set_active_sessions(static_cast<int32_t>(assignments_.size()));
  hb.set_active_turns(active_turns_);
  return hb;
}

}  // namespace bridge::media_worker
