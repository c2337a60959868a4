#include "coordinator.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator_internal.h"
#include "google/protobuf/util/time_util.h"

namespace bridge::controller {

// Lines of the exchange a session keeps for the next worker's context (the
// worker keeps as many).
constexpr size_t kRecentLines = 10;

using google::protobuf::util::TimeUtil;

Coordinator::Coordinator(SessionStore* store, CoordinatorOptions options)
    : store_(store), options_(options) {}

Coordinator::~Coordinator() = default;

absl::Status Coordinator::Load() {
  auto sessions = store_->Range("s/");
  if (!sessions.ok()) return sessions.status();
  auto turns = store_->Range("t/");
  if (!turns.ok()) return turns.status();
  auto sent = store_->Range("m/");
  if (!sent.ok()) return sent.status();
  absl::MutexLock lock(&mu_);
  for (const KeyValue& kv : *sessions) {
    auto e = std::make_unique<SessionEntry>();
    if (!e->session.ParseFromString(kv.value)) continue;
    e->durable = true;
    if (e->session.state() != v1::SESSION_STATE_ENDED) {
      Index(*e);  // by BSUID and by phone, whichever it has
      // Its worker may be gone: dispatch re-picks when it is.
      e->session.set_state(v1::SESSION_STATE_PENDING);
    }
    sessions_[e->session.session_id()] = std::move(e);
  }
  int restored = 0;
  for (const KeyValue& kv : *turns) {
    v1::Turn t;
    if (!t.ParseFromString(kv.value)) continue;
    auto it = sessions_.find(t.session_id());
    if (it == sessions_.end()) continue;
    it->second->pending.push_back(t);
    it->second->enqueued_at.push_back(absl::Now());
    int64_t seq = 0;
    if (absl::SimpleAtoi(t.turn_id(), &seq)) next_turn_seq_ = std::max(next_turn_seq_, seq + 1);
    ++restored;
  }
  for (const KeyValue& kv : *sent) {
    v1::TurnResult r;
    if (!r.ParseFromString(kv.value) || r.sent_size() != 1) continue;
    sent_[r.sent(0).message_id()] = SentRecord{r.session_id(), r.sent(0)};
    sent_expiry_.emplace_back(absl::Now() + options_.sent_ttl, r.sent(0).message_id());
  }
  LogInfo("controller state restored", {{"sessions", sessions_.size()},
                                        {"pending_turns", restored},
                                        {"sent_messages", sent_.size()}});
  UpdateGauges();
  return absl::OkStatus();
}

void Coordinator::Persist(const SessionEntry& s, Txn* txn) {
  absl::Time expires = s.session.state() == v1::SESSION_STATE_ENDED
                           ? absl::Now() + options_.dedup_ttl
                           : absl::InfiniteFuture();
  txn->Put(SessionKey(s.session.session_id()), s.session.SerializeAsString(), expires);
}

void Coordinator::PersistAsync(const SessionEntry& s, Txn txn) {
  Persist(s, &txn);
  store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
    if (!res.ok()) LogError("cannot record a session change", {{"error", res.status()}});
  });
}

void Coordinator::Enqueue(SessionEntry* e, v1::Turn turn) {
  e->pending.push_back(std::move(turn));
  e->enqueued_at.push_back(absl::Now());
  *e->session.mutable_last_activity_at() = Ts(absl::Now());
  Dispatch(e);
  UpdateGauges();
}

Coordinator::WorkerEntry* Coordinator::PickWorker(const SessionEntry& s) {
  // Sticky: a session stays with its worker while that worker serves.
  if (auto it = workers_.find(s.session.worker_id()); it != workers_.end() &&
      it->second.channel != nullptr &&
      it->second.worker.state() == v1::WORKER_STATE_SERVING) {
    return &it->second;
  }
  WorkerEntry* best = nullptr;
  for (auto& [id, w] : workers_) {
    if (w.channel == nullptr || w.worker.state() != v1::WORKER_STATE_SERVING) continue;
    if (w.worker.active_sessions() >= w.worker.capacity()) continue;
    if (best == nullptr || w.worker.active_sessions() < best->worker.active_sessions()) best = &w;
  }
  return best;
}

void Coordinator::Unassign(SessionEntry* s) {
  auto it = workers_.find(s->session.worker_id());
  if (it != workers_.end()) {
    it->second.worker.set_active_sessions(std::max(0, it->second.worker.active_sessions() - 1));
  }
  s->session.set_worker_id("");
  if (s->session.state() != v1::SESSION_STATE_ENDED) s->session.set_state(v1::SESSION_STATE_PENDING);
}

void Coordinator::Dispatch(SessionEntry* s) {
  if (s->session.state() == v1::SESSION_STATE_ENDED || s->inflight) return;
  SkipWhileWindowClosed(s);
  if (s->pending.empty()) return;
  WorkerEntry* w = PickWorker(*s);
  if (w == nullptr) return;  // waits for a worker; Attach() dispatches again
  if (s->session.worker_id() != w->worker.worker_id()) {
    if (!s->session.worker_id().empty()) Unassign(s);
    s->session.set_worker_id(w->worker.worker_id());
    w->worker.set_active_sessions(w->worker.active_sessions() + 1);
    v1::ControllerMessage assign;
    v1::SessionAssignment* a = assign.mutable_assign();
    a->set_session_id(s->session.session_id());
    a->set_phone_number_id(s->session.phone_number_id());
    a->set_wa_id(s->session.wa_id());
    a->set_user_id(s->session.user_id());
    a->set_profile_name(s->session.profile_name());
    a->set_conversation_id(s->session.conversation_id());
    for (const std::string& line : s->recent) a->add_recent_transcript(line);
    w->channel->Send(std::move(assign));
  }
  s->session.set_state(v1::SESSION_STATE_ACTIVE);
  if (s->pending.front().attempt() >= options_.max_turn_attempts) {
    // A turn that keeps killing workers must not take the fleet down with it.
    v1::TurnResult poisoned;
    poisoned.set_session_id(s->session.session_id());
    poisoned.set_turn_id(s->pending.front().turn_id());
    poisoned.set_outcome(v1::TURN_OUTCOME_FAILED);
    poisoned.set_reason(absl::StrCat("gave up after ", options_.max_turn_attempts, " attempts"));
    s->inflight = std::move(s->pending.front());
    s->pending.pop_front();
    s->enqueued_at.pop_front();
    mu_.Unlock();  // OnTurnResult takes the lock itself
    OnTurnResult(nullptr, poisoned);
    mu_.Lock();
    return;
  }
  v1::Turn turn = std::move(s->pending.front());
  s->pending.pop_front();
  metrics_.queue_wait_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - s->enqueued_at.front()));
  s->enqueued_at.pop_front();
  turn.set_attempt(turn.attempt() + 1);
  if (turn.action() == v1::TURN_ACTION_UNSPECIFIED) turn.set_action(v1::TURN_ACTION_REPLY);
  // Resolved now, not at arrival: the phone may have appeared or changed.
  v1::UserRef* to = turn.mutable_reply_to();
  to->set_wa_id(s->session.wa_id());
  to->set_user_id(s->session.user_id());
  to->set_profile_name(s->session.profile_name());
  to->set_username(s->session.username());
  s->inflight = turn;
  s->inflight_since = absl::Now();
  v1::ControllerMessage msg;
  *msg.mutable_turn() = turn;
  w->channel->Send(std::move(msg));
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
}

void Coordinator::DispatchAll() {
  for (auto& [id, s] : sessions_) Dispatch(s.get());
  UpdateGauges();
}

absl::Status Coordinator::Attach(WorkerChannel* channel, const v1::WorkerHello& hello) {
  if (hello.worker_id().empty()) return absl::InvalidArgumentError("hello without worker_id");
  absl::MutexLock lock(&mu_);
  WorkerEntry& w = workers_[hello.worker_id()];
  if (w.channel != nullptr && w.channel != channel) {
    LogWarn("worker re-attached; dropping its old stream", {{"worker_id", hello.worker_id()}});
    w.channel->Close("replaced by a new stream from the same worker");
  }
  w.channel = channel;
  w.last_heartbeat = absl::Now();
  w.worker.set_worker_id(hello.worker_id());
  w.worker.set_address(hello.advertise_address());
  w.worker.set_capacity(std::max(1, hello.capacity()));
  w.worker.set_version(hello.version());
  w.worker.set_state(v1::WORKER_STATE_SERVING);
  *w.worker.mutable_attached_at() = Ts(absl::Now());
  *w.worker.mutable_last_heartbeat_at() = Ts(absl::Now());
  int held = 0;
  for (const auto& [id, s] : sessions_) held += s->session.worker_id() == hello.worker_id();
  w.worker.set_active_sessions(held);
  LogInfo("worker attached", {{"worker_id", hello.worker_id()},
                              {"address", hello.advertise_address()},
                              {"capacity", hello.capacity()}});
  DispatchAll();
  return absl::OkStatus();
}

Coordinator::WorkerEntry* Coordinator::WorkerOf(WorkerChannel* channel) {
  for (auto& [id, w] : workers_) {
    if (w.channel == channel) return &w;
  }
  return nullptr;
}

void Coordinator::Heartbeat(WorkerChannel* channel, const v1::WorkerHeartbeat&) {
  absl::MutexLock lock(&mu_);
  if (WorkerEntry* w = WorkerOf(channel)) {
    w->last_heartbeat = absl::Now();
    *w->worker.mutable_last_heartbeat_at() = Ts(w->last_heartbeat);
  }
}

void Coordinator::OnTurnResult(WorkerChannel* channel, const v1::TurnResult& r) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(r.session_id());
  if (it == sessions_.end()) return;
  SessionEntry* s = it->second.get();
  if (!s->inflight || s->inflight->turn_id() != r.turn_id()) return;  // stale: already re-run
  v1::Session& ss = s->session;
  if (!r.conversation_id().empty()) ss.set_conversation_id(r.conversation_id());
  *ss.mutable_last_activity_at() = Ts(absl::Now());
  Txn txn;
  switch (r.outcome()) {
    case v1::TURN_OUTCOME_HANDED_BACK:
      s->pending.push_front(*s->inflight);
      s->enqueued_at.push_front(absl::Now());
      metrics_.turns_retried->Increment();
      Unassign(s);
      break;
    case v1::TURN_OUTCOME_DONE:
      ss.set_turns_done(ss.turns_done() + 1);
      metrics_.turns_done->Increment();
      txn.Delete(TurnKey(ss.session_id(), r.turn_id()));
      break;
    default:
      ss.set_turns_failed(ss.turns_failed() + 1);
      ss.set_last_error(r.reason());
      metrics_.turns_failed->Increment();
      LogWarn("turn failed", {{"session_id", ss.session_id()}, {"reason", r.reason()}});
      txn.Delete(TurnKey(ss.session_id(), r.turn_id()));
      break;
  }
  s->inflight.reset();
  for (const std::string& line : r.transcript()) s->recent.push_back(line);
  while (s->recent.size() > kRecentLines) s->recent.pop_front();
  RecordSent(r, &txn);
  Persist(*s, &txn);
  store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
    if (!res.ok()) LogError("cannot record a turn result", {{"error", res.status()}});
  });
  MatchLateFailures(r);
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
  Dispatch(s);
  UpdateGauges();
}

void Coordinator::OnSessionReport(WorkerChannel* channel, const v1::SessionReport& r) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(r.session_id());
  if (it == sessions_.end()) {
    // A Media.Converse stream the worker opened itself: listed and counted
    // against the worker's capacity like any session, never queued.
    if (r.converse() && !r.ended()) StartConverseSession(channel, r);
    return;
  }
  SessionEntry* s = it->second.get();
  if (s->session.kind() == v1::SESSION_KIND_CONVERSE && r.ended()) {
    End(s, r.end_reason().empty() ? "stream ended" : r.end_reason());
    sessions_.erase(it);  // a stream leaves nothing to resume
    DispatchAll();        // its capacity may be what a queued session waits for
    return;
  }
  if (!r.conversation_id().empty()) s->session.set_conversation_id(r.conversation_id());
  if (r.ended() && !s->inflight && s->pending.empty()) End(s, r.end_reason());
  else Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
}

void Coordinator::StartConverseSession(WorkerChannel* channel, const v1::SessionReport& r) {
  WorkerEntry* w = WorkerOf(channel);
  if (w == nullptr) return;
  auto e = std::make_unique<SessionEntry>();
  v1::Session& s = e->session;
  s.set_session_id(r.session_id());
  s.set_phone_number_id(r.phone_number_id());
  s.set_wa_id(r.wa_id());
  s.set_conversation_id(r.conversation_id());
  s.set_worker_id(w->worker.worker_id());
  s.set_state(v1::SESSION_STATE_ACTIVE);
  s.set_kind(v1::SESSION_KIND_CONVERSE);
  *s.mutable_created_at() = Ts(absl::Now());
  *s.mutable_last_activity_at() = Ts(absl::Now());
  w->worker.set_active_sessions(w->worker.active_sessions() + 1);
  e->durable = true;  // nothing to persist: a stream does not survive its worker
  Notify(v1::SESSION_EVENT_TYPE_CREATED, *e);
  sessions_[r.session_id()] = std::move(e);
  UpdateGauges();
}

void Coordinator::Detach(WorkerChannel* channel, const std::string& why) {
  absl::MutexLock lock(&mu_);
  WorkerEntry* w = WorkerOf(channel);
  if (w == nullptr) return;
  const std::string id = w->worker.worker_id();
  w->channel = nullptr;
  w->worker.set_state(v1::WORKER_STATE_DEAD);
  metrics_.workers_dead->Increment();
  LogWarn("worker lost", {{"worker_id", id}, {"why", why}});
  // Its turns run again elsewhere: nothing accepted is lost.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    SessionEntry* s = it->second.get();
    if (s->session.worker_id() == id && s->session.kind() == v1::SESSION_KIND_CONVERSE) {
      End(s, "worker lost");
      it = sessions_.erase(it);
      continue;
    }
    ++it;
  }
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() != id) continue;
    if (s->inflight) {
      s->pending.push_front(*s->inflight);
      s->enqueued_at.push_front(absl::Now());
      s->inflight.reset();
      metrics_.turns_retried->Increment();
    }
    Unassign(s.get());
  }
  w->worker.set_active_sessions(0);
  DispatchAll();
}

void Coordinator::End(SessionEntry* s, const std::string& reason) {
  if (s->session.state() == v1::SESSION_STATE_ENDED) return;
  if (auto w = workers_.find(s->session.worker_id()); w != workers_.end() && w->second.channel) {
    v1::ControllerMessage end;
    end.mutable_end_session()->set_session_id(s->session.session_id());
    end.mutable_end_session()->set_reason(reason);
    w->second.channel->Send(std::move(end));
  }
  Unassign(s);
  s->session.set_state(v1::SESSION_STATE_ENDED);
  s->session.set_end_reason(reason);
  *s->session.mutable_ended_at() = Ts(absl::Now());
  Unindex(*s);
  if (s->session.kind() != v1::SESSION_KIND_CONVERSE) {
    Txn txn;
    txn.DeletePrefix(TurnPrefix(s->session.session_id()));
    Persist(*s, &txn);
    store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
      if (!res.ok()) LogError("cannot record a session end", {{"error", res.status()}});
    });
  }
  s->pending.clear();
  s->enqueued_at.clear();
  LogInfo("session ended", {{"session_id", s->session.session_id()}, {"reason", reason}});
  Notify(v1::SESSION_EVENT_TYPE_ENDED, *s);
  UpdateGauges();
}

void Coordinator::Tick(absl::Time now) {
  std::vector<WorkerChannel*> dead;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, w] : workers_) {
      if (w.channel != nullptr && now - w.last_heartbeat > options_.heartbeat_timeout) {
        dead.push_back(w.channel);
      }
    }
    Prune(now);
    for (auto& [id, s] : sessions_) {
      if (s->session.state() == v1::SESSION_STATE_ENDED || s->inflight || !s->pending.empty() ||
          s->session.kind() == v1::SESSION_KIND_CONVERSE) {  // a stream ends with its call
        continue;
      }
      absl::Time last = absl::FromUnixMicros(
          TimeUtil::TimestampToMicroseconds(s->session.last_activity_at()));
      absl::Time created = absl::FromUnixMicros(
          TimeUtil::TimestampToMicroseconds(s->session.created_at()));
      if (now - last > options_.session_idle_timeout) End(s.get(), "idle timeout");
      else if (now - created > options_.session_max_duration) End(s.get(), "maximum duration");
    }
  }
  for (WorkerChannel* c : dead) {
    c->Close("missed heartbeats");
    Detach(c, "missed heartbeats");
  }
}

void Coordinator::UpdateGauges() {
  int64_t active = 0, pending = 0, serving = 0;
  for (const auto& [id, s] : sessions_) {
    active += s->session.state() != v1::SESSION_STATE_ENDED;
    pending += static_cast<int64_t>(s->pending.size()) + (s->inflight ? 1 : 0);
  }
  for (const auto& [id, w] : workers_) serving += w.worker.state() == v1::WORKER_STATE_SERVING;
  metrics_.sessions_active->Set(static_cast<double>(active));
  metrics_.turns_pending->Set(static_cast<double>(pending));
  metrics_.workers_serving->Set(static_cast<double>(serving));
}

}  // namespace bridge::controller
