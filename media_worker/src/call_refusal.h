// What a worker does with a call offered to it today. The call media path
// (ICE, DTLS-SRTP, Opus; issue #15, docs/calls.md) is not built yet, so every
// call is refused at once with `reject`: the caller hears it end instead of
// ringing for a minute, and the reason goes back to the controller (counted
// in bridge_controller_calls_total, logged). An offer we could not read is
// refused with what is wrong with it.
#pragma once

#include "bridge/v1/worker_link.pb.h"
#include "media_worker/graph_api.h"

namespace bridge::media_worker {

// Runs on a turn thread: the Graph call blocks (with its retries).
v1::CallReport RefuseCall(GraphApi& graph, const v1::CallOffer& offer);

}  // namespace bridge::media_worker
