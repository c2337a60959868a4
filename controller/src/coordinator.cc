#include "coordinator.h"

#include <atomic>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "google/protobuf/util/time_util.h"

namespace bridge::controller {
namespace {

using google::protobuf::util::TimeUtil;

// Store keys. Sessions and turns sort by id and sequence, so a prefix range
// returns a session's queue in arrival order.
std::string SessionKey(const std::string& id) { return absl::StrCat("s/", id); }
std::string TurnPrefix(const std::string& session) { return absl::StrCat("t/", session, "/"); }
std::string TurnKey(const std::string& session, const std::string& turn_id) {
  return absl::StrCat(TurnPrefix(session), turn_id);
}
std::string DedupKey(const std::string& message_id) { return absl::StrCat("d/", message_id); }
// What a worker sent (a TurnResult with that one message), and the mark that
// a `failed` status for it was handled: both outlive a restart.
std::string SentKey(const std::string& wamid) { return absl::StrCat("m/", wamid); }
std::string FailedKey(const std::string& wamid) { return absl::StrCat("f/", wamid); }

// One session per business number and user. A user has up to two keys: the
// business-scoped id (BSUID, stable) and the phone (shared only sometimes).
std::string BsuidKey(const std::string& phone_number_id, const std::string& user_id) {
  return absl::StrCat(phone_number_id, "/u:", user_id);
}
std::string PhoneKey(const std::string& phone_number_id, const std::string& wa_id) {
  return absl::StrCat(phone_number_id, "/", wa_id);
}

google::protobuf::Timestamp Ts(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

std::string NewSessionId() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("s_%x%04x", absl::ToUnixMicros(absl::Now()), counter++ & 0xffff);
}

// Turns that end with something sent to the user (not INFORM).
bool SendsToUser(const v1::Turn& t) { return t.action() != v1::TURN_ACTION_INFORM; }

}  // namespace

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

std::string MaskId(const std::string& id) {
  if (id.size() <= 7) return std::string(id.size(), '*');
  return absl::StrCat(id.substr(0, 4), std::string(id.size() - 7, '*'), id.substr(id.size() - 3));
}

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

void Coordinator::Index(const SessionEntry& e) {
  const v1::Session& s = e.session;
  if (!s.user_id().empty()) by_key_[BsuidKey(s.phone_number_id(), s.user_id())] = s.session_id();
  if (!s.wa_id().empty()) by_key_[PhoneKey(s.phone_number_id(), s.wa_id())] = s.session_id();
}

void Coordinator::Unindex(const SessionEntry& e) {
  const v1::Session& s = e.session;
  for (const std::string& key : {BsuidKey(s.phone_number_id(), s.user_id()),
                                 PhoneKey(s.phone_number_id(), s.wa_id())}) {
    auto it = by_key_.find(key);
    if (it != by_key_.end() && it->second == s.session_id()) by_key_.erase(it);
  }
}

Coordinator::SessionEntry* Coordinator::Find(const std::string& session_id) {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

Coordinator::SessionEntry* Coordinator::FindSession(const v1::UserRef& from,
                                                    const std::string& phone_number_id) {
  auto lookup = [&](const std::string& key) -> SessionEntry* {
    auto it = by_key_.find(key);
    return it == by_key_.end() ? nullptr : Find(it->second);
  };
  // The BSUID first: it is the stable key.
  if (!from.user_id().empty()) {
    if (SessionEntry* s = lookup(BsuidKey(phone_number_id, from.user_id()))) return s;
  }
  if (from.wa_id().empty()) return nullptr;
  SessionEntry* s = lookup(PhoneKey(phone_number_id, from.wa_id()));
  // A phone already linked to another BSUID is a recycled number: a new user.
  if (s != nullptr && !from.user_id().empty() && !s->session.user_id().empty() &&
      s->session.user_id() != from.user_id()) {
    return nullptr;
  }
  return s;
}

// Links what a message says about its sender to the session: the BSUID to a
// session found by phone (sessions from before BSUIDs), a phone that appeared
// or changed, a new profile name or username. True when anything changed.
bool Coordinator::Link(SessionEntry* e, const v1::UserRef& from) {
  v1::Session& s = e->session;
  bool changed = false;
  auto update = [&changed](const std::string& v, std::string* field) {
    if (v.empty() || v == *field) return;
    *field = v;
    changed = true;
  };
  if (from.user_id() != s.user_id() || (!from.wa_id().empty() && from.wa_id() != s.wa_id())) {
    Unindex(*e);
    update(from.user_id(), s.mutable_user_id());
    update(from.wa_id(), s.mutable_wa_id());  // a phone that disappears stays known
    Index(*e);
  }
  update(from.profile_name(), s.mutable_profile_name());
  update(from.username(), s.mutable_username());
  return changed;
}

Coordinator::SessionEntry* Coordinator::FindOrCreateSession(const v1::InboundMessage& m,
                                                            bool* created, bool* changed) {
  *created = false;
  *changed = false;
  if (SessionEntry* s = FindSession(m.from(), m.phone_number_id())) {
    *changed = Link(s, m.from());
    return s;
  }
  *created = true;
  auto e = std::make_unique<SessionEntry>();
  v1::Session& s = e->session;
  s.set_session_id(NewSessionId());
  s.set_phone_number_id(m.phone_number_id());
  s.set_wa_id(m.from().wa_id());
  s.set_user_id(m.from().user_id());
  s.set_profile_name(m.from().profile_name());
  s.set_username(m.from().username());
  s.set_state(v1::SESSION_STATE_PENDING);
  s.set_kind(v1::SESSION_KIND_WHATSAPP);
  *s.mutable_created_at() = Ts(absl::Now());
  *s.mutable_last_activity_at() = Ts(absl::Now());
  SessionEntry* raw = e.get();
  Index(*raw);
  sessions_[s.session_id()] = std::move(e);
  return raw;
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

void Coordinator::Ingest(const v1::DeliverRequest& request,
                         std::function<void(absl::StatusOr<v1::DeliverResponse>)> done) {
  auto batch = std::make_shared<IngestBatch>(&metrics_, std::move(done));
  absl::MutexLock lock(&mu_);
  std::vector<Planned> plans;
  for (const v1::WebhookEvent& ev : request.events()) {
    std::optional<Planned> plan;
    Outcome now = Outcome::kIgnored;
    if (ev.has_status()) {
      now = Outcome::kStatus;
      plan = PlanStatus(ev.status());
    } else if (ev.has_message()) {
      plan = PlanMessage(ev.message(), &now);
    } else {
      LogInfo("webhook event ignored", {{"field", ev.other().field()},
                                        {"errors", ev.other().errors_size()}});
    }
    if (plan) plans.push_back(*std::move(plan));
    else batch->Record(now, /*committed=*/false);
  }
  batch->Expect(static_cast<int>(plans.size()));
  for (Planned& p : plans) {
    store_->CommitAsync(std::move(p.txn), [this, batch, apply = std::move(p.apply),
                                           conflict = p.on_conflict](absl::StatusOr<int64_t> r) {
      if (r.ok()) {
        Outcome o;
        {
          absl::MutexLock l(&mu_);
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
  return Planned{std::move(txn), [this, turn, outcome] { return ApplyTurn(turn, outcome); }};
}

Coordinator::Planned Coordinator::PlanTooOld(SessionEntry* s, const v1::InboundMessage& m,
                                             Txn txn) {
  const std::string session_id = s->session.session_id();
  const std::string message_id = m.message_id();
  const int64_t age_s = absl::ToInt64Seconds(absl::Now() - absl::FromUnixSeconds(m.timestamp()));
  return Planned{std::move(txn), [this, session_id, message_id, age_s] {
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
  return Planned{std::move(txn), [this, session_id, new_wa_id] {
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

void Coordinator::Enqueue(SessionEntry* e, v1::Turn turn) {
  e->pending.push_back(std::move(turn));
  e->enqueued_at.push_back(absl::Now());
  *e->session.mutable_last_activity_at() = Ts(absl::Now());
  Dispatch(e);
  UpdateGauges();
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
  Planned p{std::move(txn), [this, session_id, wamid, code, error, resend] {
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
  store_->CommitAsync(std::move(p.txn), [this, apply = std::move(p.apply)](absl::StatusOr<int64_t> r) {
    if (r.ok()) {
      absl::MutexLock l(&mu_);
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
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no session ", id));
  End(it->second.get(), reason.empty() ? "ended by operator" : reason);
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
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.channel == nullptr) {
    return absl::NotFoundError(absl::StrCat("no live worker ", id));
  }
  it->second.worker.set_state(v1::WORKER_STATE_DRAINING);
  v1::ControllerMessage drain;
  drain.mutable_drain()->set_reason("drained by operator");
  it->second.channel->Send(std::move(drain));
  // Its idle sessions move now; busy ones after their current turn.
  for (auto& [sid, s] : sessions_) {
    if (s->session.worker_id() == id && !s->inflight) Unassign(s.get());
  }
  DispatchAll();
  LogInfo("worker draining", {{"worker_id", id}});
  return it->second.worker;
}

int Coordinator::Watch(std::function<void(const v1::SessionEvent&)> fn, bool reveal_ids) {
  absl::MutexLock lock(&mu_);
  int id = next_watcher_++;
  watchers_[id] = Watcher{std::move(fn), reveal_ids};
  return id;
}

void Coordinator::Unwatch(int id) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(id);
}

void Coordinator::Notify(v1::SessionEventType type, const SessionEntry& s) {
  for (const auto& [id, w] : watchers_) {
    v1::SessionEvent ev;
    ev.set_type(type);
    *ev.mutable_session() = Public(s.session, w.reveal_ids);
    w.fn(ev);
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
