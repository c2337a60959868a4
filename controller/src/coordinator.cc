#include "coordinator.h"

#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator_internal.h"
#include "google/protobuf/util/time_util.h"

namespace bridge::controller {

using google::protobuf::util::TimeUtil;

Coordinator::Coordinator(SessionStore* store, CoordinatorOptions options)
    : store_(store), options_(options) {}

Coordinator::~Coordinator() {
  absl::MutexLock lock(&commits_mu_);
  commits_mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &commits_));
}

void Coordinator::CommitAsync(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done) {
  {
    absl::MutexLock lock(&commits_mu_);
    ++commits_;
  }
  store_->CommitAsync(std::move(txn), [this, done = std::move(done)](absl::StatusOr<int64_t> r) {
    done(std::move(r));
    absl::MutexLock lock(&commits_mu_);
    --commits_;
  });
}

Coordinator::Locked::Locked(Coordinator* c) : c_(c) { c->mu_.Lock(); }

Coordinator::Locked::~Locked() {
  const bool any = !c_->events_.empty();
  c_->mu_.Unlock();
  if (any) c_->Emit();
}

absl::Status Coordinator::Load() {
  auto sessions = store_->Range("s/");
  if (!sessions.ok()) return sessions.status();
  auto turns = store_->Range("t/");
  if (!turns.ok()) return turns.status();
  auto sent = store_->Range("m/");
  if (!sent.ok()) return sent.status();
  auto memory = store_->Range("r/");
  if (!memory.ok()) return memory.status();
  Locked lock(this);
  // Turn ids must never repeat, even across restarts: a worker remembers the
  // turns it ran (to never run one twice) by id. The clock seeds them.
  next_turn_seq_ = std::max<int64_t>(next_turn_seq_, absl::ToUnixMicros(absl::Now()));
  for (const KeyValue& kv : *sessions) {
    auto e = std::make_unique<SessionEntry>();
    if (!e->session.ParseFromString(kv.value)) continue;
    // The store keeps ended sessions for dedup_ttl; memory only for the
    // retention (Evict), so they are not read back in to be evicted.
    if (e->session.state() == v1::SESSION_STATE_ENDED &&
        absl::Now() - absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(
                          e->session.ended_at())) > options_.ended_retention) {
      continue;
    }
    e->durable = true;
    if (e->session.state() != v1::SESSION_STATE_ENDED) {
      Index(*e);  // by BSUID and by phone, whichever it has
      SetRunState(e.get(), v1::SESSION_STATE_PENDING);
      // Its worker may still be running its turn: it gets the grace to
      // re-attach and say so before anything moves (Reconcile).
      if (const std::string& wid = e->session.worker_id(); !wid.empty()) {
        WorkerEntry& w = workers_[wid];
        w.worker.set_worker_id(wid);
        w.worker.set_state(v1::WORKER_STATE_LOST);
        w.lost_at = absl::Now();
      }
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
  for (auto& [id, e] : sessions_) {
    if (auto w = workers_.find(e->session.worker_id()); w != workers_.end()) {
      w->second.worker.set_active_sessions(w->second.worker.active_sessions() + 1);
    }
  }
  LoadMemory(*memory);
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
  // Counted here, not by a walk of every session per message: the bound
  // (--max_pending_turns) stays exact upwards; UpdateGauges recounts.
  ++pending_total_;
  metrics_.turns_pending->Increment();
  Dispatch(e);
}

Coordinator::WorkerEntry* Coordinator::PickWorker(const SessionEntry& s) {
  // Sticky: a session stays with its worker while that worker serves.
  if (auto it = workers_.find(s.session.worker_id()); it != workers_.end() &&
      it->second.channel != nullptr &&
      it->second.worker.state() == v1::WORKER_STATE_SERVING) {
    return &it->second;
  }
  // Least sessions first; among equals, the one running fewer turns (its
  // last heartbeat), so that a restart spreads work again.
  WorkerEntry* best = nullptr;
  auto load = [](const WorkerEntry& w) {
    return std::make_pair(w.worker.active_sessions(), w.worker.active_turns());
  };
  for (auto& [id, w] : workers_) {
    if (w.channel == nullptr || w.worker.state() != v1::WORKER_STATE_SERVING) continue;
    if (w.worker.active_sessions() >= w.worker.capacity()) continue;
    if (best == nullptr || load(w) < load(*best)) best = &w;
  }
  return best;
}

void Coordinator::Unassign(SessionEntry* s) {
  auto it = workers_.find(s->session.worker_id());
  if (it != workers_.end()) {
    it->second.worker.set_active_sessions(std::max(0, it->second.worker.active_sessions() - 1));
  }
  s->session.set_worker_id("");
  if (s->session.state() != v1::SESSION_STATE_ENDED) SetRunState(s, v1::SESSION_STATE_PENDING);
}

// Messages that queued while the previous turn ran join the next one, so a
// burst gets one answer. Only plain replies to what the user wrote or said:
// a welcome, an apology or an operator's text stays a turn of its own.
void Coordinator::Coalesce(SessionEntry* s, v1::Turn* turn) {
  constexpr int kMaxCoalesced = 20;  // one agent message stays readable
  auto joins = [](const v1::Turn& t) {
    return (t.action() == v1::TURN_ACTION_REPLY || t.action() == v1::TURN_ACTION_UNSPECIFIED) &&
           t.message().type() != v1::MESSAGE_TYPE_REQUEST_WELCOME &&
           t.message().type() != v1::MESSAGE_TYPE_SYSTEM;
  };
  if (!options_.coalesce || turn->action() != v1::TURN_ACTION_REPLY || !joins(*turn)) return;
  while (!s->pending.empty() && joins(s->pending.front()) &&
         turn->coalesced_size() < kMaxCoalesced) {
    v1::Turn& next = s->pending.front();
    *turn->add_coalesced() = std::move(*next.mutable_message());
    turn->add_coalesced_turn_ids(next.turn_id());
    s->pending.pop_front();
    s->enqueued_at.pop_front();
  }
  if (turn->coalesced_size() > 0) metrics_.turns_coalesced->Increment(turn->coalesced_size());
}

// Back in the queue as it arrived: the turn, then the ones that had joined it
// (they may join again, or not, at the next dispatch).
void Coordinator::Split(SessionEntry* s, v1::Turn turn) {
  std::vector<v1::Turn> parts;
  for (int i = 0; i < turn.coalesced_size(); ++i) {
    v1::Turn& t = parts.emplace_back();
    t.set_session_id(turn.session_id());
    t.set_turn_id(turn.coalesced_turn_ids(i));
    t.set_action(v1::TURN_ACTION_REPLY);
    *t.mutable_message() = std::move(*turn.mutable_coalesced(i));
  }
  turn.clear_coalesced();
  turn.clear_coalesced_turn_ids();
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    s->pending.push_front(std::move(*it));
    s->enqueued_at.push_front(absl::Now());
  }
  Requeue(s, std::move(turn));
}

void Coordinator::Requeue(SessionEntry* s, v1::Turn turn) {
  // Held for a person when it was sent, it is the agent's again (Dispatch
  // holds it anew if the person still has the session): what the user
  // wrote is answered, a reaction, edit or revoke is told.
  if (turn.action() == v1::TURN_ACTION_RECORD) {
    const v1::MessageType type = turn.message().type();
    turn.set_action(type == v1::MESSAGE_TYPE_REACTION || type == v1::MESSAGE_TYPE_EDIT ||
                            type == v1::MESSAGE_TYPE_REVOKE
                        ? v1::TURN_ACTION_INFORM
                        : v1::TURN_ACTION_REPLY);
  }
  s->pending.push_front(std::move(turn));
  s->enqueued_at.push_front(absl::Now());
  metrics_.turns_retried->Increment();
}

// A session whose worker's link broke waits for it (see reattach_grace).
bool Coordinator::WaitsForItsWorker(const SessionEntry& s) {
  auto it = workers_.find(s.session.worker_id());
  return it != workers_.end() && it->second.worker.state() == v1::WORKER_STATE_LOST;
}

void Coordinator::Dispatch(SessionEntry* s) {
  if (options_.may_dispatch && !options_.may_dispatch()) return;
  while (s->session.state() != v1::SESSION_STATE_ENDED && !s->inflight) {
    SkipWhileWindowClosed(s);
    if (s->pending.empty() || WaitsForItsWorker(*s)) return;
    v1::Turn& next = s->pending.front();
    if (next.attempt() >= options_.max_turn_attempts) {
      GiveUp(s);
      continue;
    }
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
      a->set_handoff_tool(options_.handoff_tool);
      a->set_handoff_message(options_.handoff_message);
      FillMemory(s, a->mutable_recent_transcript());
      w->channel->Send(std::move(assign));
      // Durable, so that after a controller restart the session waits for
      // this worker to say what it ran (Reconcile) instead of running twice.
      PersistAsync(*s);
    }
    SetRunState(s, v1::SESSION_STATE_ACTIVE);
    v1::Turn turn = std::move(next);
    s->pending.pop_front();
    const absl::Duration waited = absl::Now() - s->enqueued_at.front();
    metrics_.queue_wait_seconds->Observe(absl::ToDoubleSeconds(waited));
    s->inflight_queue_ms = absl::ToDoubleMilliseconds(waited);
    s->enqueued_at.pop_front();
    turn.set_attempt(turn.attempt() + 1);
    if (turn.action() == v1::TURN_ACTION_UNSPECIFIED) turn.set_action(v1::TURN_ACTION_REPLY);
    // While a person holds the conversation (or is asked for), what the
    // user says is recorded for them, never answered by the agent.
    if ((turn.action() == v1::TURN_ACTION_REPLY || turn.action() == v1::TURN_ACTION_INFORM) &&
        HeldForPerson(s->session)) {
      turn.set_action(v1::TURN_ACTION_RECORD);
    }
    Coalesce(s, &turn);
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
}

// A turn that keeps losing its worker must not take the fleet down with it,
// nor leave the user unanswered: it becomes the short apology (which needs no
// agent and no media). An apology that fails as often is recorded, counted
// and dropped: nothing more can be done for that message.
void Coordinator::GiveUp(SessionEntry* s) {
  if (s->pending.front().coalesced_size() > 0) {  // its messages each get their own fate
    v1::Turn joined = std::move(s->pending.front());
    s->pending.pop_front();
    s->enqueued_at.pop_front();
    Split(s, std::move(joined));
  }
  v1::Turn& t = s->pending.front();
  const std::string why = absl::StrCat("gave up after ", options_.max_turn_attempts, " attempts");
  LogWarn("turn failed for good", {{"session_id", s->session.session_id()},
                                   {"turn_id", t.turn_id()}, {"why", why}});
  // No bot apology for an operator's text, nor while a person holds the
  // conversation: the person sees the failure in the session instead.
  if (t.action() != v1::TURN_ACTION_APOLOGIZE && SendsToUser(t) &&
      t.action() != v1::TURN_ACTION_OPERATOR_SAY && !HeldForPerson(s->session)) {
    t.set_action(v1::TURN_ACTION_APOLOGIZE);
    t.set_attempt(0);
    s->session.set_last_error(why);
    metrics_.turns_given_up->Increment();
    return;
  }
  s->session.set_turns_failed(s->session.turns_failed() + 1);
  s->session.set_last_error(absl::StrCat(why, "; the user was not told"));
  metrics_.turns_failed->Increment();
  metrics_.turns_unanswered->Increment();
  Txn txn;
  txn.Delete(TurnKey(s->session.session_id(), t.turn_id()));
  s->pending.pop_front();
  s->enqueued_at.pop_front();
  PersistAsync(*s, std::move(txn));
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
}

void Coordinator::DispatchAll() {
  PlaceHeldCalls(absl::Now());
  for (auto& [id, s] : sessions_) Dispatch(s.get());
  UpdateGauges(/*force=*/true);
}

void Coordinator::End(SessionEntry* s, const std::string& reason) {
  if (s->session.state() == v1::SESSION_STATE_ENDED) return;
  // A call's end goes to its worker as a CallEnd, by whoever ends it.
  if (auto w = workers_.find(s->session.worker_id());
      w != workers_.end() && w->second.channel && s->session.kind() != v1::SESSION_KIND_CALL) {
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
  if (!Ephemeral(s->session)) {
    Txn txn;
    txn.DeletePrefix(TurnPrefix(s->session.session_id()));
    Persist(*s, &txn);
    store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
      if (!res.ok()) LogError("cannot record a session end", {{"error", res.status()}});
    });
  }
  s->pending.clear();
  s->enqueued_at.clear();
  s->inflight.reset();
  LogInfo("session ended", {{"session_id", s->session.session_id()}, {"reason", reason}});
  Notify(v1::SESSION_EVENT_TYPE_ENDED, *s);
  UpdateGauges();
}

void Coordinator::Tick(absl::Time now) {
  Locked lock(this);
  Prune(now);
  PruneMemory(now);
  Evict(now);  // before ending more: what ends now is listed until the next tick
  for (auto& [id, s] : sessions_) {
    if (s->session.state() == v1::SESSION_STATE_ENDED || s->inflight || !s->pending.empty() ||
        Ephemeral(s->session) ||  // a stream or a call ends with itself
        HeldForPerson(s->session)) {  // the user was told a person will reply: no timeout
      continue;
    }
    absl::Time last = absl::FromUnixMicros(
        TimeUtil::TimestampToMicroseconds(s->session.last_activity_at()));
    absl::Time created = absl::FromUnixMicros(
        TimeUtil::TimestampToMicroseconds(s->session.created_at()));
    if (now - last > options_.session_idle_timeout) End(s.get(), "idle timeout");
    else if (now - created > options_.session_max_duration) End(s.get(), "maximum duration");
  }
  for (auto& [id, w] : workers_) {
    if (w.channel != nullptr && now - w.last_heartbeat > options_.heartbeat_timeout) {
      // Under mu_: the channel cannot be destroyed before its OnDone
      // detaches, which waits for mu_ (and Close never re-enters here).
      w.channel->Close("missed heartbeats");
      Lose(&w, "missed heartbeats");
      Abandon(&w);  // it already had its grace, and more
    } else if (w.worker.state() == v1::WORKER_STATE_LOST &&
               now - w.lost_at > options_.reattach_grace) {
      Abandon(&w);
    }
  }
  DispatchAll();
}

// Ended sessions leave memory after their retention (the store keeps their
// record until dedup_ttl for restarts; dedup keys expire in the store), and
// dead workers once nothing refers to them: memory follows what is live.
void Coordinator::Evict(absl::Time now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const v1::Session& ss = it->second->session;
    absl::Time ended = absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(ss.ended_at()));
    if (ss.state() == v1::SESSION_STATE_ENDED && now - ended > options_.ended_retention) {
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.worker.state() == v1::WORKER_STATE_DEAD &&
        now - it->second.lost_at > options_.ended_retention) {
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

// A walk of every session: at most every 100 ms (Tick forces one each
// second), so that a burst of webhooks does not pay it per message. Between
// walks pending_total_ only over-counts (Enqueue adds, nothing subtracts), so
// admission errs on the safe side.
void Coordinator::UpdateGauges(bool force) {
  const absl::Time now = absl::Now();
  if (!force && now - gauges_at_ < absl::Milliseconds(100)) {
    gauges_stale_ = true;
    return;
  }
  gauges_at_ = now;
  gauges_stale_ = false;
  int64_t active = 0, pending = 0, serving = 0, waiting = 0;
  for (const auto& [id, s] : sessions_) {
    active += s->session.state() != v1::SESSION_STATE_ENDED;
    waiting += s->session.state() == v1::SESSION_STATE_NEEDS_HUMAN;
    pending += static_cast<int64_t>(s->pending.size()) + (s->inflight ? 1 : 0);
  }
  for (const auto& [id, w] : workers_) serving += w.worker.state() == v1::WORKER_STATE_SERVING;
  pending_total_ = pending;
  metrics_.sessions_active->Set(static_cast<double>(active));
  metrics_.turns_pending->Set(static_cast<double>(pending));
  metrics_.workers_serving->Set(static_cast<double>(serving));
  metrics_.sessions_waiting_for_person->Set(static_cast<double>(waiting));
}

}  // namespace bridge::controller
