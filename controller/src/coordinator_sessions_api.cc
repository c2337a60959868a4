// The Sessions API: what operators list, end, drain and watch; ids masked
// unless revealed.
#include "coordinator.h"
#include "coordinator_internal.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace bridge::controller {

std::string MaskId(const std::string& id) {
  if (id.size() <= 7) return std::string(id.size(), '*');
  return absl::StrCat(id.substr(0, 4), std::string(id.size() - 7, '*'), id.substr(id.size() - 3));
}

std::vector<v1::Session> Coordinator::ListSessions(const v1::ListSessionsRequest& req) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Session> out;
  for (const auto& [id, s] : sessions_) {
    if (!req.include_ended() && s->session.state() == v1::SESSION_STATE_ENDED) continue;
    if (!req.worker_id().empty() && s->session.worker_id() != req.worker_id()) continue;
    out.push_back(Public(s->session, req.reveal_ids()));
    out.back().set_turns_pending(static_cast<int64_t>(s->pending.size() + (s->inflight ? 1 : 0)));
    if (req.limit() > 0 && static_cast<int>(out.size()) >= req.limit()) break;
  }
  return out;
}

absl::StatusOr<v1::Session> Coordinator::GetSession(const std::string& id, bool reveal_ids) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session ", id));
  v1::Session s = Public(it->second->session, reveal_ids);
  s.set_turns_pending(static_cast<int64_t>(it->second->pending.size() + (it->second->inflight ? 1 : 0)));
  return s;
}

absl::StatusOr<v1::Session> Coordinator::EndSession(const std::string& id,
                                                    const std::string& reason) {
  Locked lock(this);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session ", id));
  const std::string why = reason.empty() ? "ended by operator" : reason;
  if (it->second->session.kind() == v1::SESSION_KIND_CALL) {
    SendCallEnd(*it->second, why, /*terminate=*/true);
  }
  End(it->second.get(), why);
  return Public(it->second->session, false);
}

std::vector<v1::Worker> Coordinator::ListWorkers(bool include_dead) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Worker> out;
  for (const auto& [id, w] : workers_) {
    if (include_dead || w.worker.state() != v1::WORKER_STATE_DEAD) out.push_back(w.worker);
  }
  return out;
}

absl::StatusOr<v1::Worker> Coordinator::DrainWorker(const std::string& id) {
  Locked lock(this);
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.channel == nullptr) {
    return absl::NotFoundError(absl::StrCat("no live worker ", id));
  }
  it->second.worker.set_state(v1::WORKER_STATE_DRAINING);
  v1::ControllerMessage drain;
  drain.mutable_drain()->set_reason("drained by operator");
  it->second.channel->Send(std::move(drain));
  // Its idle sessions move now, and their agent sockets close there; busy
  // ones after their current turn (Dispatch moves them).
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() != id || s->inflight ||
        Ephemeral(s->session)) {
      continue;
    }
    v1::ControllerMessage moved;
    moved.mutable_end_session()->set_session_id(sid);
    moved.mutable_end_session()->set_reason("moved: worker draining");
    it->second.channel->Send(std::move(moved));
    Unassign(s.get());
  }
  DispatchAll();
  LogInfo("worker draining", {{"worker_id", id}});
  return it->second.worker;
}

int Coordinator::Watch(std::function<void(const v1::SessionEvent&)> fn, bool reveal_ids) {
  absl::MutexLock emitting(&emit_mu_);
  absl::MutexLock lock(&mu_);
  int id = next_watcher_++;
  watchers_[id] = std::make_shared<const Watcher>(Watcher{id, std::move(fn), reveal_ids});
  live_watchers_.insert(id);
  return id;
}

// After it returns, the watcher's function is never called again.
void Coordinator::Unwatch(int id) {
  absl::MutexLock emitting(&emit_mu_);
  live_watchers_.erase(id);
  absl::MutexLock lock(&mu_);
  watchers_.erase(id);
}

// Queued under mu_, delivered by Emit once it is released: a watcher may be
// slow or call back in, and must not do either under the coordinator's lock.
void Coordinator::Notify(v1::SessionEventType type, const SessionEntry& s,
                         const v1::TranscriptEntry* entry) {
  for (const auto& [id, w] : watchers_) {
    QueuedEvent& q = events_.emplace_back();
    q.watcher = w;
    q.event.set_type(type);
    *q.event.mutable_session() = Public(s.session, w->reveal_ids);
    if (entry != nullptr) {
      v1::TranscriptEntry* e = q.event.mutable_transcript();
      *e = *entry;
      if (!w->reveal_ids) {
        e->set_wa_id(MaskId(e->wa_id()));
        e->set_user_id(MaskId(e->user_id()));
      }
    }
  }
}

void Coordinator::Emit() {
  absl::MutexLock emitting(&emit_mu_);  // batches leave in the order they were taken
  std::vector<QueuedEvent> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(events_);
  }
  for (const QueuedEvent& q : batch) {
    if (live_watchers_.count(q.watcher->id)) q.watcher->fn(q.event);
  }
}

v1::Session Coordinator::Public(const v1::Session& s, bool reveal_ids) const {
  v1::Session out = s;
  if (!reveal_ids) {
    out.set_wa_id(MaskId(s.wa_id()));
    out.set_user_id(MaskId(s.user_id()));
    out.set_username(MaskId(s.username()));
  }
  return out;
}

}  // namespace bridge::controller
