// gRPC server bootstrap shared by the controller and the worker: binds (port 0
// allowed), serves grpc.health.v1.Health with a status per service and server
// reflection, and shuts down with a deadline.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"

namespace bridge {

struct GrpcServiceEntry {
  grpc::Service* service;  // callback or sync service; not owned
  std::string name;        // full name for health, e.g. "bridge.v1.Ingest"
  bool serving = true;     // its health status at start (a standby's Ingest: false)
};

class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::string& listen, const std::vector<GrpcServiceEntry>& services);
  ~GrpcServer();

  // host:port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Sets one service's grpc.health.v1 status.
  void SetServing(const std::string& name, bool serving);

  // Marks every service NOT_SERVING, then stops, cancelling what is still
  // running after `grace`.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> names_;
  std::vector<std::string> not_serving_;
  std::string address_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
};

// "0.0.0.0:7000" -> {"0.0.0.0", 7000}; "[::1]:0" -> {"::1", 0}.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& listen);

}  // namespace bridge
