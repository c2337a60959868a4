// WhatsApp calls (PROTOCOLS.md A6, docs/calls.md): a `calls` connect is
// offered to the least loaded worker, which answers it through the Graph API
// (today: refuses it at once, see media_worker/src/call_refusal.h); the
// call's end and the worker's report are counted and logged. Not durable on
// purpose: a call is answered within Meta's ~30-60 s or not at all, and an
// offer lost with a controller rings out (Meta's retry of the webhook, if
// the gateway could not acknowledge it, brings it again).
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "coordinator.h"

namespace bridge::controller {
namespace {
// Meta retries a webhook it saw no 200 for; a call rings at most about a
// minute, so an id seen within this long is the same call again.
constexpr absl::Duration kCallRemembered = absl::Minutes(10);
}  // namespace

Coordinator::Outcome Coordinator::OnCallEvent(const v1::CallEvent& call) {
  auto count = [this](const char* outcome) { metrics_.calls->Add({{"outcome", outcome}}).Increment(); };
  if (call.type() == v1::CALL_EVENT_TYPE_TERMINATE) {
    count("ended");
    LogInfo("call ended", {{"call_id", call.call_id()}, {"status", call.status()},
                           {"duration_s", call.duration_s()}});
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
  WorkerEntry* w = PickWorker(SessionEntry());
  if (w == nullptr) {
    count("no_worker");
    LogWarn("call offered with no worker to take it: it rings out", {{"call_id", call.call_id()}});
    return Outcome::kCall;
  }
  v1::ControllerMessage m;
  v1::CallOffer* offer = m.mutable_call_offer();
  offer->set_call_id(call.call_id());
  offer->set_phone_number_id(call.phone_number_id());
  *offer->mutable_from() = call.from();
  offer->set_sdp(call.sdp());
  w->channel->Send(std::move(m));
  count("offered");
  LogInfo("call offered", {{"call_id", call.call_id()}, {"worker_id", w->worker.worker_id()}});
  return Outcome::kCall;
}

void Coordinator::OnCallReport(WorkerChannel* channel, const v1::CallReport& report) {
  Locked lock(this);
  WorkerEntry* w = WorkerOf(channel);
  const bool rejected = report.outcome() == v1::CALL_OUTCOME_REJECTED;
  metrics_.calls->Add({{"outcome", rejected ? "rejected" : "reject_failed"}}).Increment();
  LogInfo(rejected ? "call rejected" : "call reject failed",
          {{"call_id", report.call_id()}, {"worker_id", w ? w->worker.worker_id() : ""},
           {"reason", report.reason()}});
}

}  // namespace bridge::controller
