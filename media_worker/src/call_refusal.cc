#include "call_refusal.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace bridge::media_worker {

v1::CallReport RefuseCall(GraphApi& graph, const v1::CallOffer& offer, const std::string& reason) {
  v1::CallReport report;
  report.set_call_id(offer.call_id());
  report.set_reason(reason);
  absl::Status s = graph.ActOnCall(offer.phone_number_id(), offer.call_id(), CallAction::kReject, "");
  if (!s.ok()) {
    report.set_outcome(v1::CALL_OUTCOME_REJECT_FAILED);
    report.set_reason(absl::StrCat(report.reason(), "; the reject failed: ", s.message()));
    LogWarn("call reject failed; it rings out",
            {{"call_id", offer.call_id()}, {"error", std::string(s.message())}});
    return report;
  }
  report.set_outcome(v1::CALL_OUTCOME_REJECTED);
  LogInfo("call rejected", {{"call_id", offer.call_id()}, {"reason", report.reason()}});
  return report;
}

}  // namespace bridge::media_worker
