// The gateway's view of the controllers: hand over one webhook batch
// (bridge.v1.Ingest.Deliver, with a deadline) to whichever leads, and probe
// readiness (a gRPC health check on bridge.v1.Ingest, SERVING only on the
// leader) for /readyz. `target` is --controller: one or a comma list
// (common/controller_targets.h).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bridge/v1/ingest.pb.h"

namespace bridge::gateway {

class ControllerClient {
 public:
  // `cluster_token` goes with every Deliver (common/call_auth.h).
  // InvalidArgument for an empty --controller.
  static absl::StatusOr<std::unique_ptr<ControllerClient>> Create(const std::string& target,
                                                                  std::string cluster_token);
  ~ControllerClient();

  // OK only once the controller has made the batch durable. Group commit at
  // the edge: webhooks that arrive while a Deliver is in flight go to the
  // controller together in the next one (at most kMaxGroup), so under load
  // one gRPC call and one ingest carry many POSTs; alone, a POST goes at once.
  // The response's counts are the whole group's.
  absl::StatusOr<bridge::v1::DeliverResponse> Deliver(const bridge::v1::DeliverRequest& request,
                                                       absl::Duration deadline);
  static constexpr int kMaxGroup = 64;
  static constexpr size_t kMaxGroupBytes = 2 << 20;
  absl::Status Check();

 private:
  ControllerClient();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bridge::gateway
