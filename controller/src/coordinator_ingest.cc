// Ingest: each webhook event becomes a planned store transaction (a turn,
// a number change, a too-old record, a status) whose in-memory effect runs
// once it committed; edits and revokes of waiting turns change those turns.
#include "coordinator.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator_internal.h"

namespace bridge::controller {

// Collects the outcome of a batch's commits and answers once all are in.
class Coordinator::IngestBatch {
 public:
  IngestBatch(ControllerMetrics* metrics,
              std::function<void(absl::StatusOr<v1::DeliverResponse>)> done)
      : metrics_(metrics), done_(std::move(done)) {}

  void Expect(int n) {
    absl::MutexLock l(&mu_);
    remaining_ = n;
    if (n == 0) Finish();
  }
  // One event's outcome; for committed events, the last one answers.
  void Record(Outcome o, bool committed) {
    absl::MutexLock l(&mu_);
    Count(o);
    if (committed && --remaining_ == 0) Finish();
  }
  void Refuse(const absl::Status& error) {
    absl::MutexLock l(&mu_);
    error_ = error;
    Finish();
  }
  void Fail(const absl::Status& error) {
    absl::MutexLock l(&mu_);
    error_ = error;
    if (--remaining_ == 0) Finish();
  }

 private:
  void Count(Outcome o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::DeliverResponse& r = response_;
    switch (o) {
      case Outcome::kAccepted:
        metrics_->messages_accepted->Increment();
        return r.set_accepted(r.accepted() + 1);
      case Outcome::kDuplicate:
        metrics_->messages_duplicate->Increment();
        return r.set_duplicates(r.duplicates() + 1);
      case Outcome::kTooOld:
        metrics_->messages_too_old->Increment();
        return r.set_too_old(r.too_old() + 1);
      case Outcome::kApplied:
        metrics_->messages_applied->Increment();
        return r.set_applied(r.applied() + 1);
      case Outcome::kStatus:
        metrics_->statuses->Increment();
        return r.set_statuses(r.statuses() + 1);
      case Outcome::kIgnored:
        metrics_->other_events->Increment();
        return r.set_ignored(r.ignored() + 1);
      case Outcome::kCall:
        return r.set_calls(r.calls() + 1);
    }
  }
  void Finish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    metrics_->ingest_commit_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - started_));
    if (!error_.ok()) metrics_->ingest_failures->Increment();
    done_(error_.ok() ? absl::StatusOr<v1::DeliverResponse>(response_) : error_);
  }

  ControllerMetrics* metrics_;
  std::function<void(absl::StatusOr<v1::DeliverResponse>)> done_;
  const absl::Time started_ = absl::Now();
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  v1::DeliverResponse response_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

void Coordinator::Ingest(const v1::DeliverRequest& request,
                         std::function<void(absl::StatusOr<v1::DeliverResponse>)> done) {
  auto batch = std::make_shared<IngestBatch>(&metrics_, std::move(done));
  Locked lock(this);
  // pending_total_ over-counts between walks: before refusing, recount if
  // anything changed since the last walk (not once per refused webhook).
  if (pending_total_ >= options_.max_pending_turns && gauges_stale_) UpdateGauges(/*force=*/true);
  if (pending_total_ >= options_.max_pending_turns) {
    // Nothing is recorded, so nothing is lost: the gateway answers 503 and
    // Meta delivers again later.
    metrics_.ingest_refused->Increment();
    batch->Refuse(absl::ResourceExhaustedError(absl::StrCat(
        pending_total_, " turns are waiting (--max_pending_turns): retry later")));
    return;
  }
  std::vector<Planned> plans;
  for (const v1::WebhookEvent& ev : request.events()) {
    std::optional<Planned> plan;
    Outcome now = Outcome::kIgnored;
    if (ev.has_status()) {
      now = Outcome::kStatus;
      plan = PlanStatus(ev.status());
    } else if (ev.has_message()) {
      plan = PlanMessage(ev.message(), &now);
    } else if (ev.has_call()) {
      now = OnCallEvent(ev.call());
    } else {
      LogInfo("webhook event ignored", {{"field", ev.other().field()},
                                        {"errors", ev.other().errors_size()}});
    }
    if (plan) plans.push_back(*std::move(plan));
    else batch->Record(now, /*committed=*/false);
  }
  batch->Expect(static_cast<int>(plans.size()));
  for (Planned& p : plans) {
    CommitAsync(std::move(p.txn), [this, batch, apply = std::move(p.apply),
                                   conflict = p.on_conflict](absl::StatusOr<int64_t> r) {
      if (r.ok()) {
        Outcome o;
        {
          Locked l(this);
          o = apply();
        }
        batch->Record(o, true);
      } else if (absl::IsFailedPrecondition(r.status())) {
        batch->Record(conflict, true);  // a retry of what was already recorded
      } else {
        batch->Fail(r.status());
      }
    });
  }
}

v1::Turn Coordinator::NewTurn(const SessionEntry& s, const v1::InboundMessage& m,
                              v1::TurnAction action) {
  v1::Turn turn;
  turn.set_session_id(s.session.session_id());
  turn.set_turn_id(absl::StrFormat("%020d", next_turn_seq_++));
  *turn.mutable_message() = m;
  turn.set_action(action);
  return turn;
}

// A message becomes a transaction: its dedup key, its turn, the session if new
// or changed. What it does in memory waits for the commit (`apply`).
std::optional<Coordinator::Planned> Coordinator::PlanMessage(const v1::InboundMessage& m,
                                                             Outcome* now) {
  if (m.type() == v1::MESSAGE_TYPE_SYSTEM) return PlanSystem(m, now);
  bool created = false, changed = false;
  SessionEntry* s = FindOrCreateSession(m, &created, &changed);
  if (created) Notify(v1::SESSION_EVENT_TYPE_CREATED, *s);
  Txn txn;
  if (!m.message_id().empty()) {
    txn.IfAbsent(DedupKey(m.message_id()))
        .Put(DedupKey(m.message_id()), "", absl::Now() + options_.dedup_ttl);
  }
  if (!s->durable || changed) Persist(*s, &txn);
  if (m.timestamp() > 0 &&
      absl::Now() - absl::FromUnixSeconds(m.timestamp()) > options_.max_message_age) {
    return PlanTooOld(s, m, std::move(txn));
  }
  // Reactions, and edits or revokes of what already ran, are context for
  // the agent (PROTOCOLS.md A2): never answered.
  v1::TurnAction action = v1::TURN_ACTION_REPLY;
  Outcome outcome = Outcome::kAccepted;
  if (m.type() == v1::MESSAGE_TYPE_REACTION || m.type() == v1::MESSAGE_TYPE_EDIT ||
      m.type() == v1::MESSAGE_TYPE_REVOKE) {
    action = v1::TURN_ACTION_INFORM;
    outcome = Outcome::kApplied;
  }
  v1::Turn turn = NewTurn(*s, m, action);
  txn.Put(TurnKey(turn.session_id(), turn.turn_id()), turn.SerializeAsString());
  return Planned{std::move(txn), [this, turn, outcome]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                   return ApplyTurn(turn, outcome);
                 }};
}

Coordinator::Planned Coordinator::PlanTooOld(SessionEntry* s, const v1::InboundMessage& m,
                                             Txn txn) {
  const std::string session_id = s->session.session_id();
  const std::string message_id = m.message_id();
  const int64_t age_s = absl::ToInt64Seconds(absl::Now() - absl::FromUnixSeconds(m.timestamp()));
  return Planned{std::move(txn), [this, session_id, message_id,
                                  age_s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    LogInfo("message older than --max_message_age: recorded, not answered",
            {{"session_id", session_id}, {"message_id", message_id}, {"age_s", age_s}});
    if (SessionEntry* e = Find(session_id)) {
      e->durable = true;
      e->session.set_messages_too_old(e->session.messages_too_old() + 1);
      PersistAsync(*e);
      Notify(v1::SESSION_EVENT_TYPE_UPDATED, *e);
    }
    return Outcome::kTooOld;
  }};
}

// Only a number change does anything: the session follows the new phone.
std::optional<Coordinator::Planned> Coordinator::PlanSystem(const v1::InboundMessage& m,
                                                            Outcome* now) {
  SessionEntry* s = FindSession(m.from(), m.phone_number_id());
  if (m.system_type() != "user_changed_number" || m.new_wa_id().empty() || s == nullptr) {
    LogInfo("system message ignored", {{"type", m.system_type()}, {"known_user", s != nullptr}});
    *now = Outcome::kIgnored;
    return std::nullopt;
  }
  Txn txn;
  if (!m.message_id().empty()) {
    txn.IfAbsent(DedupKey(m.message_id()))
        .Put(DedupKey(m.message_id()), "", absl::Now() + options_.dedup_ttl);
  }
  const std::string session_id = s->session.session_id();
  const std::string new_wa_id = m.new_wa_id();
  return Planned{std::move(txn), [this, session_id,
                                  new_wa_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    SessionEntry* e = Find(session_id);
    if (e != nullptr && e->session.state() != v1::SESSION_STATE_ENDED) Rekey(e, new_wa_id);
    return Outcome::kApplied;
  }};
}

void Coordinator::Rekey(SessionEntry* e, const std::string& new_wa_id) {
  Unindex(*e);
  e->session.set_wa_id(new_wa_id);
  Index(*e);
  metrics_.actions->Add({{"action", "number_changed"}}).Increment();
  LogInfo("user changed number: session re-keyed", {{"session_id", e->session.session_id()}});
  PersistAsync(*e);
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *e);
}

// Runs once the turn is durable: an edit or revoke of a turn still waiting
// changes that turn instead; anything else joins the session's queue.
Coordinator::Outcome Coordinator::ApplyTurn(const v1::Turn& turn, Outcome outcome) {
  SessionEntry* e = Find(turn.session_id());
  if (e == nullptr) return outcome;
  e->durable = true;
  const v1::MessageType type = turn.message().type();
  if (e->session.window_closed()) {
    e->session.set_window_closed(false);  // they wrote again: the window is open
    PersistAsync(*e);
  }
  if (type == v1::MESSAGE_TYPE_EDIT && ApplyEdit(e, turn)) return outcome;
  if (type == v1::MESSAGE_TYPE_REVOKE && ApplyRevoke(e, turn)) return outcome;
  if (type == v1::MESSAGE_TYPE_REACTION) {
    metrics_.actions->Add({{"action", "reaction_inform"}}).Increment();
  } else if (type == v1::MESSAGE_TYPE_EDIT) {
    metrics_.actions->Add({{"action", "edit_inform"}}).Increment();
  } else if (type == v1::MESSAGE_TYPE_REVOKE) {
    metrics_.actions->Add({{"action", "revoke_inform"}}).Increment();
  }
  Enqueue(e, turn);
  return outcome;
}

// An edit of a message whose turn has not started: the turn answers the new
// text, and the edit's own (INFORM) turn is dropped.
bool Coordinator::ApplyEdit(SessionEntry* e, const v1::Turn& edit) {
  const std::string& target = edit.message().target_message_id();
  for (v1::Turn& t : e->pending) {
    if (target.empty() || t.message().message_id() != target || !SendsToUser(t)) continue;
    t.mutable_message()->set_text(edit.message().text());
    if (t.message().has_media()) t.mutable_message()->mutable_media()->set_caption(edit.message().text());
    Txn txn;
    txn.Put(TurnKey(t.session_id(), t.turn_id()), t.SerializeAsString());
    txn.Delete(TurnKey(edit.session_id(), edit.turn_id()));
    store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
      if (!res.ok()) LogError("cannot record an edit", {{"error", res.status()}});
    });
    metrics_.actions->Add({{"action", "edit_replaced"}}).Increment();
    return true;
  }
  return false;
}

// A revoke of a message whose turn has not started: both turns are dropped.
bool Coordinator::ApplyRevoke(SessionEntry* e, const v1::Turn& revoke) {
  const std::string& target = revoke.message().target_message_id();
  for (size_t i = 0; i < e->pending.size(); ++i) {
    const v1::Turn& t = e->pending[i];
    if (target.empty() || t.message().message_id() != target || !SendsToUser(t)) continue;
    Txn txn;
    txn.Delete(TurnKey(t.session_id(), t.turn_id()));
    txn.Delete(TurnKey(revoke.session_id(), revoke.turn_id()));
    store_->CommitAsync(std::move(txn), [](absl::StatusOr<int64_t> res) {
      if (!res.ok()) LogError("cannot record a revoke", {{"error", res.status()}});
    });
    e->pending.erase(e->pending.begin() + static_cast<std::ptrdiff_t>(i));
    e->enqueued_at.erase(e->enqueued_at.begin() + static_cast<std::ptrdiff_t>(i));
    metrics_.actions->Add({{"action", "revoke_dropped"}}).Increment();
    UpdateGauges();
    Notify(v1::SESSION_EVENT_TYPE_UPDATED, *e);
    return true;
  }
  return false;
}

}  // namespace bridge::controller
