// What every long-running binary is to its main(): something started that has
// endpoints to announce and can be shut down. RunUntilSignal() is the shared
// lifecycle: READY line, wait for SIGTERM/SIGINT, graceful shutdown, exit code.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bridge {

class Service {
 public:
  virtual ~Service() = default;
  // The READY line's key=value pairs, e.g. {"grpc", "127.0.0.1:7000"}.
  virtual std::vector<std::pair<std::string, std::string>> endpoints() const = 0;
  // Stops accepting, finishes or hands back what is in flight (bounded).
  virtual void Shutdown() = 0;
};

// Returns the process exit code: 0 after a clean shutdown, 2 when the service
// could not start because of its configuration, 1 for any other start failure.
int RunUntilSignal(absl::string_view name, absl::StatusOr<std::unique_ptr<Service>> service);

}  // namespace bridge
