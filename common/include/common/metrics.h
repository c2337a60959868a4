// Prometheus metrics: one registry per process, build-info and process
// metrics, and either a standalone exposer (controller, worker) or text
// serialisation for a server that already has an HTTP port (gateway).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace bridge {

// The process-wide registry, with bridge_build_info and process_* metrics.
std::shared_ptr<prometheus::Registry> MetricsRegistry();

// Sets bridge_build_info{service,version}. Call once at start-up.
void RegisterBuildInfo(const std::string& service);

// The registry in the Prometheus text format.
std::string SerializeMetrics();

class MetricsServer {
 public:
  // Serves /metrics on `listen` (host:port, port 0 allowed).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace bridge
