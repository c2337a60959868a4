// Human takeover. A person takes a session over (TakeOver), writes to the
// user as the business (Say) and hands it back (HandBack); the agent asks
// for one with its handoff client tool (NEEDS_HUMAN). While a person holds
// a session or is asked for, the user's messages become RECORD turns
// (Dispatch): marked read, recorded, seen by operators, never sent to the
// agent. Both facts live in the session record (operator, handoff_reason),
// so they survive a restart or a takeover by another controller.
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator.h"
#include "coordinator_internal.h"

namespace bridge::controller {

void Coordinator::SetRunState(SessionEntry* s, v1::SessionState run_state) {
  v1::Session& ss = s->session;
  if (ss.state() == v1::SESSION_STATE_ENDED) return;
  if (!ss.operator_().empty()) {
    ss.set_state(v1::SESSION_STATE_HUMAN);
  } else if (!ss.handoff_reason().empty()) {
    ss.set_state(v1::SESSION_STATE_NEEDS_HUMAN);
  } else {
    ss.set_state(run_state);
  }
}

void Coordinator::ApplyHandoff(SessionEntry* s, const v1::TurnResult& r) {
  v1::Session& ss = s->session;
  if (!ss.operator_().empty()) return;  // a person already has it
  const bool first = ss.handoff_reason().empty();
  ss.set_handoff_reason(r.handoff_reason().empty() ? "the agent asked for a person"
                                                   : r.handoff_reason());
  SetRunState(s, v1::SESSION_STATE_ACTIVE);
  if (first) metrics_.handoffs->Increment();
  LogInfo("the agent asked for a person", {{"session_id", ss.session_id()}});
}

// An agent reply still in progress must not reach the user after a person
// took over: its worker ends the session there (the turn stops, nothing more
// is sent, its result comes back failed with what the user said), and the
// person's turns get a fresh assignment.
void Coordinator::StopAgentReply(SessionEntry* s) {
  if (!s->inflight || s->inflight->action() != v1::TURN_ACTION_REPLY) return;
  auto w = workers_.find(s->session.worker_id());
  if (w == workers_.end() || w->second.channel == nullptr) return;
  v1::ControllerMessage end;
  end.mutable_end_session()->set_session_id(s->session.session_id());
  end.mutable_end_session()->set_reason("taken over by a person");
  w->second.channel->Send(std::move(end));
  Unassign(s);
}

absl::StatusOr<v1::Session> Coordinator::TakeOver(const std::string& id, const std::string& op) {
  Locked lock(this);
  SessionEntry* s = Find(id);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no session ", id));
  v1::Session& ss = s->session;
  if (ss.state() == v1::SESSION_STATE_ENDED || ss.kind() != v1::SESSION_KIND_WHATSAPP) {
    return absl::FailedPreconditionError("only a live WhatsApp session can be taken over");
  }
  if (!ss.operator_().empty() && ss.operator_() != op) {
    return absl::FailedPreconditionError(absl::StrCat("already taken over by ", ss.operator_()));
  }
  ss.set_operator_(op.empty() ? "operator" : op);
  ss.clear_handoff_reason();
  StopAgentReply(s);
  SetRunState(s, ss.worker_id().empty() ? v1::SESSION_STATE_PENDING : v1::SESSION_STATE_ACTIVE);
  metrics_.takeovers->Increment();
  PersistAsync(*s);
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
  LogInfo("session taken over", {{"session_id", id}, {"operator", ss.operator_()}});
  return Public(ss, false);
}

absl::StatusOr<v1::SayResponse> Coordinator::Say(const std::string& id, const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("nothing to say: text is empty");
  v1::Turn turn;
  {
    absl::MutexLock lock(&mu_);
    SessionEntry* s = Find(id);
    if (s == nullptr) return absl::NotFoundError(absl::StrCat("no session ", id));
    if (s->session.state() != v1::SESSION_STATE_HUMAN) {
      return absl::FailedPreconditionError("take the session over first (TakeOver)");
    }
    if (s->session.window_closed()) {
      return absl::FailedPreconditionError(
          "WhatsApp's 24-hour window is closed: the user must write first (131047)");
    }
    v1::InboundMessage none;
    none.set_phone_number_id(s->session.phone_number_id());
    turn = NewTurn(*s, none, v1::TURN_ACTION_OPERATOR_SAY);
    turn.set_text(text);
    turn.set_operator_(s->session.operator_());
  }
  // Durable before it is acknowledged, like a user's message.
  Txn txn;
  txn.Put(TurnKey(id, turn.turn_id()), turn.SerializeAsString());
  if (auto r = store_->Commit(std::move(txn)); !r.ok()) return r.status();
  Locked lock(this);
  SessionEntry* s = Find(id);
  if (s == nullptr || s->session.state() == v1::SESSION_STATE_ENDED) {
    Txn undo;  // the operator's text does not stay behind
    undo.Delete(TurnKey(id, turn.turn_id()));
    store_->CommitAsync(std::move(undo), [](absl::StatusOr<int64_t> r) {
      if (!r.ok()) LogError("cannot withdraw an operator's message", {{"error", r.status()}});
    });
    return absl::FailedPreconditionError("the session ended meanwhile");
  }
  metrics_.operator_messages->Increment();
  v1::SayResponse out;
  out.set_turn_id(turn.turn_id());
  Enqueue(s, std::move(turn));
  UpdateGauges();
  *out.mutable_session() = Public(s->session, false);
  return out;
}

// The agent takes the conversation again. Its next conversation hears what
// was said meanwhile: the worker closed the open one when the person came,
// and a new one starts with the memory, operator lines included.
absl::StatusOr<v1::Session> Coordinator::HandBack(const std::string& id) {
  Locked lock(this);
  SessionEntry* s = Find(id);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no session ", id));
  v1::Session& ss = s->session;
  if (!HeldForPerson(ss)) return absl::FailedPreconditionError("the agent already has it");
  ss.clear_operator_();
  ss.clear_handoff_reason();
  SetRunState(s, ss.worker_id().empty() ? v1::SESSION_STATE_PENDING : v1::SESSION_STATE_ACTIVE);
  metrics_.handbacks->Increment();
  PersistAsync(*s);
  Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
  LogInfo("session handed back to the agent", {{"session_id", id}});
  return Public(ss, false);
}

}  // namespace bridge::controller
