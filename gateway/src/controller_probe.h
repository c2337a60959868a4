// Readiness of the controller as the gateway sees it: a gRPC health check on
// bridge.v1.Ingest with a short deadline, so /readyz tells a load balancer
// whether webhooks can be acked right now.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace bridge::gateway {

class ControllerProbe {
 public:
  explicit ControllerProbe(const std::string& target);
  ~ControllerProbe();
  absl::Status Check();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bridge::gateway
