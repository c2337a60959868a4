// WhatsApp calls (PROTOCOLS.md A6, docs/calls.md): a `calls` connect is
// offered to the least loaded worker, which answers it through the Graph API
// and carries its media, or refuses it with a reason. A call is a session of
// its own kind (SESSION_KIND_CALL, its id Meta's call id): listed, watched,
// counted against its worker's capacity and endable through Sessions, never
// stored. Its end reaches the worker that holds it as a CallEnd: the caller
// hung up (Meta already knows), an operator ended it, or the worker died
// (another worker sends `terminate` for it). Not durable on purpose: a call
// is answered within Meta's ~30-60 s or not at all.
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "coordinator.h"
#include "coordinator_internal.h"

namespace bridge::controller {
namespace {
// Meta retries a webhook it saw no 200 for; a call rings at most about a
// minute, so an id seen within this long is the same call again.
constexpr absl::Duration kCallRemembered = absl::Minutes(10);
// How long a call waits for a worker to attach: Meta fails it unless it is
// accepted within about 30 s, and the worker needs up to 20 s for media.
constexpr absl::Duration kCallHeld = absl::Seconds(10);

const char* ReportOutcome(v1::CallOutcome o) {
  switch (o) {
    case v1::CALL_OUTCOME_REJECTED: return "rejected";
    case v1::CALL_OUTCOME_REJECT_FAILED: return "reject_failed";
    case v1::CALL_OUTCOME_ANSWERED: return "answered";
    case v1::CALL_OUTCOME_FAILED: return "failed";
    case v1::CALL_OUTCOME_ENDED: return "live_ended";
    default: return "unknown";
  }
}
}  // namespace

Coordinator::Outcome Coordinator::OnCallEvent(const v1::CallEvent& call) {
  auto count = [this](const char* outcome) { metrics_.calls->Add({{"outcome", outcome}}).Increment(); };
  if (call.type() == v1::CALL_EVENT_TYPE_TERMINATE) {
    count("ended");
    LogInfo("call ended", {{"call_id", call.call_id()}, {"status", call.status()},
                           {"duration_s", call.duration_s()}});
    std::erase_if(held_calls_,
                  [&](const HeldCall& h) { return h.call.call_id() == call.call_id(); });
    if (auto it = sessions_.find(call.call_id()); it != sessions_.end() &&
        it->second->session.kind() == v1::SESSION_KIND_CALL) {
      const std::string reason = absl::StrCat("the call ended (", call.status(), ")");
      SendCallEnd(*it->second, reason, /*terminate=*/false);  // Meta knows: no terminate
      End(it->second.get(), reason);
    }
    return Outcome::kCall;
  }
  const absl::Time now = absl::Now();
  for (auto it = calls_seen_.begin(); it != calls_seen_.end();) {
    it = now - it->second > kCallRemembered ? calls_seen_.erase(it) : std::next(it);
  }
  if (!calls_seen_.emplace(call.call_id(), now).second) {
    count("duplicate");
    return Outcome::kCall;
  }
  if (!PlaceCall(call)) {
    count("held");
    LogWarn("call offered with no worker attached: held for one",
            {{"call_id", call.call_id()}, {"up_to_s", absl::ToInt64Seconds(kCallHeld)}});
    held_calls_.push_back({call, now});
  }
  return Outcome::kCall;
}

// The least loaded serving worker answers a call. With workers attached but
// none with room (each at capacity or draining), one of them rejects it with
// the reason, so the caller hears it end instead of ringing for a minute.
// With none attached (a rollout, a restart), the call waits for one, for as
// long as it can still be answered within Meta's accept window.
bool Coordinator::PlaceCall(const v1::CallEvent& call) {
  if (WorkerEntry* w = PickWorker(SessionEntry())) {
    OfferCall(call, w, "");
    return true;
  }
  for (auto& [id, w] : workers_) {
    if (w.channel == nullptr) continue;
    metrics_.calls->Add({{"outcome", "no_capacity"}}).Increment();
    OfferCall(call, &w, "no worker has room for a call: each is at capacity or draining");
    return true;
  }
  return false;
}

void Coordinator::OfferCall(const v1::CallEvent& call, WorkerEntry* w,
                            const std::string& refuse_reason) {
  SessionEntry* s = StartCallSession(call, w);
  v1::ControllerMessage m;
  v1::CallOffer* offer = m.mutable_call_offer();
  offer->set_call_id(call.call_id());
  offer->set_phone_number_id(call.phone_number_id());
  *offer->mutable_from() = call.from();
  offer->set_sdp(call.sdp());
  offer->set_refuse_reason(refuse_reason);
  if (refuse_reason.empty()) {
    FillMemory(s, offer->mutable_recent_transcript());
  }
  w->channel->Send(std::move(m));
  if (refuse_reason.empty()) metrics_.calls->Add({{"outcome", "offered"}}).Increment();
  LogInfo(refuse_reason.empty() ? "call offered" : "call offered to be refused",
          {{"call_id", call.call_id()}, {"worker_id", w->worker.worker_id()},
           {"reason", refuse_reason}});
}

void Coordinator::PlaceHeldCalls(absl::Time now) {
  std::erase_if(held_calls_, [&](const HeldCall& h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (now - h.since > kCallHeld) {
      metrics_.calls->Add({{"outcome", "no_worker"}}).Increment();
      LogWarn("call rang out: no worker attached in time",
              {{"call_id", h.call.call_id()}, {"held_s", absl::ToInt64Seconds(now - h.since)}});
      return true;
    }
    return PlaceCall(h.call);
  });
}

// Listed from the offer on (PENDING while it is answered), so an operator
// sees a call ringing and where.
Coordinator::SessionEntry* Coordinator::StartCallSession(const v1::CallEvent& call,
                                                       WorkerEntry* w) {
  v1::Session s;
  s.set_session_id(call.call_id());
  s.set_kind(v1::SESSION_KIND_CALL);
  s.set_phone_number_id(call.phone_number_id());
  s.set_wa_id(call.from().wa_id());
  s.set_user_id(call.from().user_id());
  s.set_profile_name(call.from().profile_name());
  s.set_state(v1::SESSION_STATE_PENDING);
  return AddEphemeralSession(std::move(s), w);
}

void Coordinator::OnCallReport(WorkerChannel* channel, const v1::CallReport& report) {
  Locked lock(this);
  WorkerEntry* w = WorkerOf(channel);
  metrics_.calls->Add({{"outcome", ReportOutcome(report.outcome())}}).Increment();
  LogInfo("call report", {{"call_id", report.call_id()}, {"outcome", ReportOutcome(report.outcome())},
                          {"worker_id", w ? w->worker.worker_id() : ""},
                          {"reason", report.reason()}, {"duration_ms", report.duration_ms()}});
  auto it = sessions_.find(report.call_id());
  if (it == sessions_.end() || it->second->session.kind() != v1::SESSION_KIND_CALL) return;
  SessionEntry* s = it->second.get();
  const bool ended = s->session.state() == v1::SESSION_STATE_ENDED;
  if (report.outcome() == v1::CALL_OUTCOME_ANSWERED) {
    if (ended) return;  // the caller hung up while we accepted: it stays ended
    s->session.set_state(v1::SESSION_STATE_ACTIVE);
    *s->session.mutable_last_activity_at() = Ts(absl::Now());
    Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
    return;
  }
  if (report.outcome() != v1::CALL_OUTCOME_ENDED) s->session.set_last_error(report.reason());
  if (report.lines_size() > 0) RecordCall(s, report);
  if (ended && report.outcome() != v1::CALL_OUTCOME_ENDED) {
    // Meta's terminate webhook for our own reject can overtake the worker's
    // report: the worker's reason is the cause, Meta's status ("the call
    // ended (REJECTED)") only its consequence.
    s->session.set_end_reason(report.reason());
    Notify(v1::SESSION_EVENT_TYPE_UPDATED, *s);
    return;
  }
  End(s, report.reason());
  DispatchAll();  // its capacity may be what a queued session waits for
}

// What was said on a call is one exchange of its session: the transcript
// keeps it (Sessions.GetTranscript, the console, the transcript webhook) and
// the caller's next conversation remembers it.
void Coordinator::RecordCall(SessionEntry* s, const v1::CallReport& report) {
  v1::TranscriptEntry e;
  e.set_turn_id(report.call_id());
  *e.mutable_lines() = report.lines();
  e.set_outcome(v1::TURN_OUTCOME_DONE);
  e.set_reason(report.reason());
  e.set_conversation_id(report.conversation_id());
  Txn txn;
  Record(s, std::move(e), &txn);
  CommitAsync(std::move(txn), [id = report.call_id()](absl::StatusOr<int64_t> r) {
    if (!r.ok()) LogError("cannot record a call's transcript", {{"call_id", id}, {"error", r.status()}});
  });
}

void Coordinator::SendCallEnd(const SessionEntry& s, const std::string& reason, bool terminate) {
  auto w = workers_.find(s.session.worker_id());
  if (w == workers_.end() || w->second.channel == nullptr) return;
  v1::ControllerMessage m;
  v1::CallEnd* end = m.mutable_call_end();
  end->set_call_id(s.session.session_id());
  end->set_reason(reason);
  end->set_terminate(terminate);
  end->set_phone_number_id(s.session.phone_number_id());
  w->second.channel->Send(std::move(m));
}

// Its media died with it: the caller hears silence until Meta is told. Any
// serving worker can say `terminate` for it; the call's capacity is freed.
void Coordinator::EndCallOfLostWorker(SessionEntry* s) {
  const std::string reason = "the worker carrying the call was lost";
  if (WorkerEntry* other = PickWorker(SessionEntry()); other != nullptr) {
    v1::ControllerMessage m;
    v1::CallEnd* end = m.mutable_call_end();
    end->set_call_id(s->session.session_id());
    end->set_reason(reason);
    end->set_terminate(true);
    end->set_phone_number_id(s->session.phone_number_id());
    other->channel->Send(std::move(m));
    metrics_.calls->Add({{"outcome", "worker_lost"}}).Increment();
    LogWarn("call's worker lost: terminate sent through another worker",
            {{"call_id", s->session.session_id()}, {"via", other->worker.worker_id()}});
  } else {
    LogWarn("call's worker lost and no other worker to terminate it: Meta ends it",
            {{"call_id", s->session.session_id()}});
  }
  End(s, reason);
}

}  // namespace bridge::controller
