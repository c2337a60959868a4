// The worker side of the coordinator: attach and reconcile, heartbeats, turn
// results (acknowledged once durable), session reports, and what happens to
// a worker's sessions when its link breaks (LOST, then DEAD after the grace).
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator.h"
#include "coordinator_internal.h"

namespace bridge::controller {

absl::Status Coordinator::Attach(WorkerChannel* channel, const v1::WorkerHello& hello) {
  if (hello.worker_id().empty()) return absl::InvalidArgumentError("hello without worker_id");
  Locked lock(this);
  WorkerEntry& w = workers_[hello.worker_id()];
  if (w.channel != nullptr && w.channel != channel) {
    LogWarn("worker re-attached; dropping its old stream", {{"worker_id", hello.worker_id()}});
    w.channel->Close("replaced by a new stream from the same worker");
  }
  const bool returning = w.worker.state() == v1::WORKER_STATE_LOST;
  w.channel = channel;
  w.leaving = false;
  w.last_heartbeat = absl::Now();
  w.worker.set_worker_id(hello.worker_id());
  w.worker.set_address(hello.advertise_address());
  w.worker.set_capacity(std::max(1, hello.capacity()));
  w.worker.set_version(hello.version());
  // A drained worker stays drained (its hello says so), whichever leader it
  // attaches to: an upgrade's drain must not be undone by a link blip.
  w.worker.set_state(hello.draining() ? v1::WORKER_STATE_DRAINING : v1::WORKER_STATE_SERVING);
  *w.worker.mutable_attached_at() = Ts(absl::Now());
  *w.worker.mutable_last_heartbeat_at() = Ts(absl::Now());
  Reconcile(&w, hello);
  LogInfo("worker attached", {{"worker_id", hello.worker_id()},
                              {"address", hello.advertise_address()},
                              {"capacity", hello.capacity()},
                              {"returning", returning},
                              {"running_turns", hello.running_turns_size()},
                              {"finished_turns", hello.finished_turns_size()}});
  DispatchAll();
  return absl::OkStatus();
}

// What a (re-)attaching worker holds against what the controller thinks it
// holds. Finished results count first (their turns must not run again);
// running turns stay with it; sessions it holds that are no longer its own
// are ended there (their agent sockets close); sessions the controller gave
// it that it lost (a restarted worker) are assigned afresh.
void Coordinator::Reconcile(WorkerEntry* w, const v1::WorkerHello& hello) {
  const std::string& id = hello.worker_id();
  for (const v1::TurnResult& r : hello.finished_turns()) ApplyResult(r, id);
  std::set<std::string> running;
  for (const v1::TurnRef& ref : hello.running_turns()) {
    running.insert(ref.session_id());
    SessionEntry* s = Find(ref.session_id());
    if (s == nullptr || s->session.state() == v1::SESSION_STATE_ENDED) continue;
    if (s->inflight && s->inflight->turn_id() == ref.turn_id()) continue;  // still its own
    if (s->inflight || s->pending.empty() || s->pending.front().turn_id() != ref.turn_id()) {
      continue;  // already re-run elsewhere or done: its late result is stale
    }
    // After a controller restart: the turn is running there, not waiting.
    if (s->session.worker_id() != id) {
      if (!s->session.worker_id().empty()) Unassign(s);
      s->session.set_worker_id(id);
    }
    SetRunState(s, v1::SESSION_STATE_ACTIVE);
    s->inflight = std::move(s->pending.front());
    s->inflight->set_attempt(s->inflight->attempt() + 1);
    s->inflight_since = absl::Now();
    s->pending.pop_front();
    s->enqueued_at.pop_front();
    metrics_.turns_reclaimed->Increment();
  }
  std::set<std::string> held(hello.held_session_ids().begin(), hello.held_session_ids().end());
  for (const std::string& sid : held) {
    SessionEntry* s = Find(sid);
    if (s != nullptr && s->session.worker_id() == id &&
        s->session.state() != v1::SESSION_STATE_ENDED) {
      continue;
    }
    v1::ControllerMessage end;
    end.mutable_end_session()->set_session_id(sid);
    end.mutable_end_session()->set_reason(s == nullptr || s->session.state() == v1::SESSION_STATE_ENDED
                                              ? "session ended while the link was down"
                                              : "session moved to another worker");
    w->channel->Send(std::move(end));
  }
  int count = 0;
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() != id) continue;
    if (s->inflight && !running.count(sid)) {
      // Neither running there nor finished (its hello would have said): a
      // restarted worker under the same id. The turn runs again.
      Requeue(s.get(), *std::move(s->inflight));
      s->inflight.reset();
    }
    if (!held.count(sid) && !running.count(sid) && !Ephemeral(s->session)) {
      s->session.set_worker_id("");  // it forgot it: the next turn assigns it afresh
      continue;
    }
    ++count;
  }
  w->worker.set_active_sessions(count);
}

Coordinator::WorkerEntry* Coordinator::WorkerOf(WorkerChannel* channel) {
  for (auto& [id, w] : workers_) {
    if (w.channel == channel) return &w;
  }
  return nullptr;
}

void Coordinator::Heartbeat(WorkerChannel* channel, const v1::WorkerHeartbeat& hb) {
  absl::MutexLock lock(&mu_);
  if (WorkerEntry* w = WorkerOf(channel)) {
    w->last_heartbeat = absl::Now();
    *w->worker.mutable_last_heartbeat_at() = Ts(w->last_heartbeat);
    w->worker.set_active_turns(hb.active_turns());
    w->worker.set_active_calls(hb.active_calls());
  }
}

void Coordinator::OnTurnResult(WorkerChannel* channel, const v1::TurnResult& r) {
  Locked lock(this);
  WorkerEntry* w = WorkerOf(channel);
  if (!ApplyResult(r, w ? w->worker.worker_id() : "")) return;
  if (SessionEntry* s = Find(r.session_id())) Dispatch(s);
  UpdateGauges();
}

bool Coordinator::ApplyResult(const v1::TurnResult& r, const std::string& acked_by) {
  SessionEntry* s = Find(r.session_id());
  const bool inflight = s && s->inflight && s->inflight->turn_id() == r.turn_id();
  // After a restart the turn is pending again until its worker reports.
  const bool pending = s && !inflight && !s->pending.empty() &&
                       s->pending.front().turn_id() == r.turn_id() &&
                       r.outcome() != v1::TURN_OUTCOME_HANDED_BACK;
  if (!inflight && !pending) {
    // Stale: re-run elsewhere (nothing to keep), or its session ended while
    // it ran: what it said to the user still belongs in the transcript, and
    // its conversation is one a later erasure must find.
    if (s != nullptr && s->session.state() == v1::SESSION_STATE_ENDED &&
        r.outcome() != v1::TURN_OUTCOME_HANDED_BACK && r.lines_size() > 0) {
      Txn txn;
      RecordExchange(s, v1::Turn(), r, 0, &txn);
      CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
        if (!res.ok()) LogError("cannot record a late exchange", {{"error", res.status()}});
      });
    }
    Ack(acked_by, r);
    return false;
  }
  v1::Session& ss = s->session;
  if (!r.conversation_id().empty()) ss.set_conversation_id(r.conversation_id());
  *ss.mutable_last_activity_at() = Ts(absl::Now());
  v1::Turn turn = inflight ? *std::move(s->inflight) : std::move(s->pending.front());
  s->inflight.reset();
  if (pending) {
    s->pending.pop_front();
    s->enqueued_at.pop_front();
  }
  Txn txn;
  if (r.outcome() == v1::TURN_OUTCOME_HANDED_BACK) {
    Split(s, std::move(turn));
    Unassign(s);
  } else {
    if (r.outcome() == v1::TURN_OUTCOME_DONE) {
      ss.set_turns_done(ss.turns_done() + 1);
      metrics_.turns_done->Increment();
    } else {
      ss.set_turns_failed(ss.turns_failed() + 1);
      ss.set_last_error(r.reason());
      metrics_.turns_failed->Increment();
      LogWarn("turn failed", {{"session_id", ss.session_id()}, {"reason", r.reason()}});
    }
    txn.Delete(TurnKey(ss.session_id(), r.turn_id()));
    // The turns that joined it are settled with it (by the worker's word
    // and by the turn as sent); after a controller restart they may still
    // sit in the queue on their own.
    std::set<std::string> joined(r.coalesced_turn_ids().begin(), r.coalesced_turn_ids().end());
    joined.insert(turn.coalesced_turn_ids().begin(), turn.coalesced_turn_ids().end());
    for (const std::string& id : joined) {
      txn.Delete(TurnKey(ss.session_id(), id));
      for (size_t i = 0; i < s->pending.size(); ++i) {
        if (s->pending[i].turn_id() != id) continue;
        s->pending.erase(s->pending.begin() + static_cast<long>(i));
        s->enqueued_at.erase(s->enqueued_at.begin() + static_cast<long>(i));
        break;
      }
    }
    RecordExchange(s, turn, r, inflight ? s->inflight_queue_ms : 0, &txn);
    if (r.handoff_requested()) ApplyHandoff(s, r);
  }
  RecordSent(r, &txn);
  Persist(*s, &txn);
  CommitAsync(std::move(txn), [this, acked_by, r](absl::StatusOr<int64_t> res) {
    if (!res.ok()) {
      // Not acknowledged: the worker keeps the result and says it again
      // when it re-attaches.
      LogError("cannot record a turn result", {{"error", res.status()}});
      return;
    }
    if (options_.exported) options_.exported();
    Locked lock(this);
    Ack(acked_by, r);
  });
  MatchLateFailures(r);
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
  return true;
}

void Coordinator::Ack(const std::string& worker_id, const v1::TurnResult& r) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.channel == nullptr) return;  // said again on re-attach
  v1::ControllerMessage ack;
  ack.mutable_result_ack()->set_session_id(r.session_id());
  ack.mutable_result_ack()->set_turn_id(r.turn_id());
  it->second.channel->Send(std::move(ack));
}

void Coordinator::OnSessionReport(WorkerChannel* channel, const v1::SessionReport& r) {
  Locked lock(this);
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

void Coordinator::OnLeaving(WorkerChannel* channel, const v1::WorkerLeaving& leaving) {
  Locked lock(this);
  WorkerEntry* w = WorkerOf(channel);
  if (w == nullptr) return;
  w->leaving = true;
  w->worker.set_state(v1::WORKER_STATE_DRAINING);
  LogInfo("worker leaving", {{"worker_id", w->worker.worker_id()}, {"reason", leaving.reason()}});
  // Idle sessions move now; a turn it still runs moves with its result
  // (handed back) or when its stream ends.
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() == w->worker.worker_id() && !s->inflight &&
        !Ephemeral(s->session)) {
      Unassign(s.get());
    }
  }
  DispatchAll();
}

void Coordinator::StartConverseSession(WorkerChannel* channel, const v1::SessionReport& r) {
  WorkerEntry* w = WorkerOf(channel);
  if (w == nullptr) return;
  v1::Session s;
  s.set_session_id(r.session_id());
  s.set_phone_number_id(r.phone_number_id());
  s.set_wa_id(r.wa_id());
  s.set_conversation_id(r.conversation_id());
  s.set_state(v1::SESSION_STATE_ACTIVE);
  s.set_kind(v1::SESSION_KIND_CONVERSE);
  AddEphemeralSession(std::move(s), w);
}

// A stream's or a call's session: on `w` from the start, counted against
// its capacity, never persisted (it does not survive its worker).
Coordinator::SessionEntry* Coordinator::AddEphemeralSession(v1::Session s, WorkerEntry* w) {
  auto e = std::make_unique<SessionEntry>();
  s.set_worker_id(w->worker.worker_id());
  *s.mutable_created_at() = Ts(absl::Now());
  *s.mutable_last_activity_at() = Ts(absl::Now());
  e->session = std::move(s);
  w->worker.set_active_sessions(w->worker.active_sessions() + 1);
  e->durable = true;  // nothing to persist
  Notify(v1::SESSION_EVENT_TYPE_CREATED, *e);
  SessionEntry* added = e.get();
  const std::string id = e->session.session_id();
  sessions_[id] = std::move(e);
  UpdateGauges();
  return added;
}

void Coordinator::Detach(WorkerChannel* channel, const std::string& why) {
  Locked lock(this);
  WorkerEntry* w = WorkerOf(channel);
  if (w == nullptr) return;
  Lose(w, why);
  if (w->leaving) Abandon(w);  // it said goodbye: no reason to wait
  DispatchAll();
}

// The stream is gone; the worker may not be. Its Media.Converse streams do
// not outlive the link's view of them (the worker re-announces live ones).
void Coordinator::Lose(WorkerEntry* w, const std::string& why) {
  w->channel = nullptr;
  w->worker.set_state(v1::WORKER_STATE_LOST);
  w->lost_at = absl::Now();
  LogWarn("worker link lost", {{"worker_id", w->worker.worker_id()}, {"why", why},
                               {"grace_ms", absl::ToInt64Milliseconds(options_.reattach_grace)}});
  std::vector<SessionEntry*> calls;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    SessionEntry* s = it->second.get();
    if (s->session.worker_id() == w->worker.worker_id() &&
        s->session.kind() == v1::SESSION_KIND_CONVERSE) {
      End(s, "worker lost");
      it = sessions_.erase(it);
      continue;
    }
    if (s->session.worker_id() == w->worker.worker_id() &&
        s->session.kind() == v1::SESSION_KIND_CALL && s->session.state() != v1::SESSION_STATE_ENDED) {
      calls.push_back(s);
    }
    ++it;
  }
  for (SessionEntry* s : calls) EndCallOfLostWorker(s);
}

// The worker did not come back: its turns run again elsewhere (nothing
// accepted is lost; a turn it was running may have been answered, which is
// why the grace exists).
void Coordinator::Abandon(WorkerEntry* w) {
  const std::string id = w->worker.worker_id();
  w->worker.set_state(v1::WORKER_STATE_DEAD);
  if (w->leaving) {  // a rollout's SIGTERM: expected, and no alert should fire on it
    metrics_.workers_left->Increment();
    LogInfo("worker left; its sessions move", {{"worker_id", id}});
  } else {
    metrics_.workers_dead->Increment();
    LogWarn("worker dead; its sessions move", {{"worker_id", id}});
  }
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() != id) continue;
    if (s->inflight) {
      Requeue(s.get(), *std::move(s->inflight));
      s->inflight.reset();
    }
    Unassign(s.get());
  }
  w->worker.set_active_sessions(0);
}

}  // namespace bridge::controller
