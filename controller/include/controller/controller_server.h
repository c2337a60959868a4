// The control plane: ingests webhook batches durably, keeps the session table,
// assigns sessions to media workers attached over WorkerLink, and serves the
// operator API (bridge.v1.Sessions).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/service.h"

namespace bridge::controller {

struct ControllerOptions {
  std::string listen = "0.0.0.0:7000";
  std::string metrics_listen = "0.0.0.0:9100";
  std::string store = "sqlite:./data/controller.db";
};

// Endpoints: grpc=, metrics=.
class ControllerServer : public Service {
 public:
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(const ControllerOptions& opts);

  virtual std::string grpc_address() const = 0;
  virtual std::string metrics_address() const = 0;
};

}  // namespace bridge::controller
