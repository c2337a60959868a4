// Delivery: what workers sent, `failed` statuses correlated with it (also
// when they overtake the TurnResult), resends as text, the closed window.
#include "coordinator.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator_internal.h"

namespace bridge::controller {

bool ResendsVoiceAsText(int code) {
  switch (code) {
    case 131047:  // more than 24 h since the user wrote: a text fails too
    case 131031:  // account locked
    case 368:     // temporarily blocked for policy violations
    case 190:     // access token expired: an operator problem
    case 131049:  // per-user marketing limit (templates only)
    case 131050:  // the user stopped marketing messages
    case 130472:  // the user is part of a Meta experiment
      return false;
    default:  // 131053 media unusable, 131026 undeliverable (an old app may
              // take text), 131062 (voice cannot go to a BSUID; text can) ...
      return true;
  }
}

// Statuses are not turns; only a `failed` one for a message we sent does
// anything (PROTOCOLS.md A2: a 200 from /messages means accepted).
std::optional<Coordinator::Planned> Coordinator::PlanStatus(const v1::StatusUpdate& st) {
  if (st.status() != v1::DELIVERY_STATUS_FAILED) {
    LogDebug("status update", {{"message_id", st.message_id()}, {"status", st.status_name()}});
    return std::nullopt;
  }
  auto it = sent_.find(st.message_id());
  if (it == sent_.end()) {
    // Maybe the worker's TurnResult naming it is still on its way.
    LogInfo("failed status for a message not (yet) known", {{"message_id", st.message_id()}});
    metrics_.failures_unmatched->Increment();
    if (unmatched_failures_.size() < 10000) {
      unmatched_failures_[st.message_id()] = UnmatchedFailure{st, absl::Now()};
    }
    return std::nullopt;
  }
  return PlanFailure(it->second, st);
}

// Recorded once per wamid (the "f/" key), however often Meta repeats the
// status: counted, noted on the session, and a failed voice note is followed
// by its text; 131047 closes the session's window.
Coordinator::Planned Coordinator::PlanFailure(const SentRecord& rec, const v1::StatusUpdate& st) {
  const int code = st.errors_size() > 0 ? st.errors(0).code() : 0;
  const std::string error =
      st.errors_size() > 0 ? absl::StrCat(code, " ", st.errors(0).title()) : "failed";
  Txn txn;
  txn.IfAbsent(FailedKey(st.message_id()))
      .Put(FailedKey(st.message_id()), "", absl::Now() + options_.sent_ttl);
  std::optional<v1::Turn> resend;
  SessionEntry* s = Find(rec.session_id);
  if (s != nullptr && s->session.state() != v1::SESSION_STATE_ENDED &&
      rec.sent.kind() == v1::SENT_KIND_VOICE && !rec.sent.text().empty() &&
      ResendsVoiceAsText(code)) {
    v1::InboundMessage m;  // nothing inbound: names the failed message
    m.set_phone_number_id(s->session.phone_number_id());
    m.set_target_message_id(st.message_id());
    m.set_timestamp(absl::ToUnixSeconds(absl::Now()));
    resend = NewTurn(*s, m, v1::TURN_ACTION_RESEND_AS_TEXT);
    resend->set_fallback_text(rec.sent.text());
    txn.Put(TurnKey(resend->session_id(), resend->turn_id()), resend->SerializeAsString());
  }
  const std::string session_id = rec.session_id;
  const std::string wamid = st.message_id();
  Planned p{std::move(txn), [this, session_id, wamid, code, error, resend]()
                                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    metrics_.delivery_failures->Add({{"code", absl::StrCat(code)}}).Increment();
    LogWarn("a sent message failed", {{"session_id", session_id}, {"message_id", wamid},
                                      {"error", error}, {"resend_as_text", resend.has_value()}});
    SessionEntry* e = Find(session_id);
    if (e == nullptr) return Outcome::kStatus;
    v1::Session& ss = e->session;
    ss.set_delivery_failures(ss.delivery_failures() + 1);
    ss.set_last_delivery_error(error);
    if (code == 131047) ss.set_window_closed(true);
    PersistAsync(*e);
    Notify(v1::SESSION_EVENT_TYPE_UPDATED, *e);
    if (resend) {
      metrics_.actions->Add({{"action", "resend_as_text"}}).Increment();
      Enqueue(e, *resend);
    }
    return Outcome::kStatus;
  }};
  p.on_conflict = Outcome::kStatus;
  return p;
}

// While the window is closed (131047) nothing can reach the user: turns that
// would send are completed here, recorded as failed and never run; INFORM
// turns still go to the agent. The user writing again reopens it.
void Coordinator::SkipWhileWindowClosed(SessionEntry* s) {
  if (!s->session.window_closed()) return;
  Txn txn;
  bool skipped = false;
  while (!s->pending.empty() && SendsToUser(s->pending.front())) {
    const v1::Turn& t = s->pending.front();
    txn.Delete(TurnKey(t.session_id(), t.turn_id()));
    s->session.set_turns_failed(s->session.turns_failed() + 1);
    s->session.set_last_error("not sent: the 24-hour window is closed (131047)");
    metrics_.turns_window_closed->Increment();
    s->pending.pop_front();
    s->enqueued_at.pop_front();
    skipped = true;
  }
  if (!skipped) return;
  LogInfo("turns completed without sending: window closed",
          {{"session_id", s->session.session_id()}});
  PersistAsync(*s, std::move(txn));
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
}

// Kept (store and memory) so that statuses days later, or after a restart,
// find the message, its session and what it said.
void Coordinator::RecordSent(const v1::TurnResult& r, Txn* txn) {
  for (const v1::SentMessage& m : r.sent()) {
    if (m.message_id().empty()) continue;
    v1::TurnResult record;
    record.set_session_id(r.session_id());
    record.set_turn_id(r.turn_id());
    *record.add_sent() = m;
    txn->Put(SentKey(m.message_id()), record.SerializeAsString(), absl::Now() + options_.sent_ttl);
    sent_[m.message_id()] = SentRecord{r.session_id(), m};
    sent_expiry_.emplace_back(absl::Now() + options_.sent_ttl, m.message_id());
  }
}

// `failed` statuses that overtook this result.
void Coordinator::MatchLateFailures(const v1::TurnResult& r) {
  for (const v1::SentMessage& m : r.sent()) {
    auto it = unmatched_failures_.find(m.message_id());
    if (it == unmatched_failures_.end()) continue;
    v1::StatusUpdate st = it->second.status;
    unmatched_failures_.erase(it);
    CommitPlanned(PlanFailure(sent_[m.message_id()], st));
  }
}

// A planned change outside an ingest batch.
void Coordinator::CommitPlanned(Planned p) {
  CommitAsync(std::move(p.txn), [this, apply = std::move(p.apply)](absl::StatusOr<int64_t> r) {
    if (r.ok()) {
      Locked l(this);
      apply();
    } else if (!absl::IsFailedPrecondition(r.status())) {
      LogError("cannot record a delivery failure", {{"error", r.status()}});
    }
  });
}

void Coordinator::Prune(absl::Time now) {
  while (!sent_expiry_.empty() && sent_expiry_.front().first < now) {
    sent_.erase(sent_expiry_.front().second);
    sent_expiry_.pop_front();
  }
  for (auto it = unmatched_failures_.begin(); it != unmatched_failures_.end();) {
    if (now - it->second.seen > options_.unmatched_failure_ttl) it = unmatched_failures_.erase(it);
    else ++it;
  }
}

}  // namespace bridge::controller
