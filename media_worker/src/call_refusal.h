// A call the worker will not answer is refused at once with `reject`: the
// caller hears it end instead of ringing for a minute, and the reason goes
// back to the controller (counted in bridge_controller_calls_total, logged).
// Reasons: calls off, an offer we cannot answer (what is wrong with it), no
// capacity, the worker draining (call_desk.h).
#pragma once

#include <string>

#include "bridge/v1/worker_link.pb.h"
#include "media_worker/graph_api.h"

namespace bridge::media_worker {

// Runs on a blocking thread: the Graph call blocks (with its retries).
v1::CallReport RefuseCall(GraphApi& graph, const v1::CallOffer& offer, const std::string& reason);

}  // namespace bridge::media_worker
