#include "controller/controller_server.h"

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "coordinator.h"
#include "services.h"

namespace bridge::controller {
namespace {

class ControllerServerImpl final : public ControllerServer {
 public:
  ~ControllerServerImpl() override { Shutdown(); }

  absl::Status Init(const ControllerOptions& opts) {
    RegisterBuildInfo("bridge-controller");
    auto store = OpenSessionStore(opts.store);
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    CoordinatorOptions co;
    co.session_idle_timeout = opts.session_idle_timeout;
    co.session_max_duration = opts.session_max_duration;
    co.heartbeat_timeout = opts.heartbeat_timeout;
    co.max_message_age = opts.max_message_age;
    co.reattach_grace = opts.reattach_grace;
    co.max_pending_turns = opts.max_pending_turns;
    co.ended_retention = opts.ended_retention;
    coordinator_ = std::make_unique<Coordinator>(store_.get(), co);
    if (auto s = coordinator_->Load(); !s.ok()) return s;
    if (auto s = RequireTokenOffLoopback(
            opts.listen, !opts.cluster_token.empty() && !opts.admin_token.empty(),
            "BRIDGE_CLUSTER_TOKEN (--cluster_token) and BRIDGE_ADMIN_TOKEN (--admin_token)");
        !s.ok()) {
      return s;
    }
    if (!opts.cluster_token.empty() && opts.cluster_token == opts.admin_token) {
      return absl::InvalidArgumentError(
          "BRIDGE_ADMIN_TOKEN must differ from BRIDGE_CLUSTER_TOKEN: every gateway and worker "
          "holds the cluster token");
    }
    ingest_ = NewIngestService(coordinator_.get(), CallAuth(opts.cluster_token, "ingest"));
    worker_link_ =
        NewWorkerLinkService(coordinator_.get(), CallAuth(opts.cluster_token, "worker_link"));
    sessions_ = NewSessionsService(coordinator_.get(), CallAuth(opts.admin_token, "sessions"));

    auto metrics = MetricsServer::Start(opts.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
    auto grpc = GrpcServer::Start(opts.listen, {{ingest_.get(), "bridge.v1.Ingest"},
                                                {worker_link_.get(), "bridge.v1.WorkerLink"},
                                                {sessions_.get(), "bridge.v1.Sessions"}});
    if (!grpc.ok()) return grpc.status();
    grpc_ = *std::move(grpc);
    ticker_ = std::thread([this] {
      absl::Time expired = absl::Now();
      while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
        coordinator_->Tick(absl::Now());
        // Dedup keys, ended sessions and sent-message records expire in the
        // store too (a blocking statement: this thread, not a gRPC one).
        if (absl::Now() - expired > absl::Minutes(1)) {
          expired = absl::Now();
          if (auto n = store_->ExpireNow(); !n.ok()) {
            LogWarn("cannot expire old records", {{"error", n.status()}});
          }
        }
      }
    });
    LogInfo("controller serving", {{"grpc", grpc_->address()},
                                   {"metrics", metrics_->address()},
                                   {"store", opts.store}});
    return absl::OkStatus();
  }

  std::string grpc_address() const override { return grpc_->address(); }
  std::string metrics_address() const override { return metrics_->address(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"grpc", grpc_address()}, {"metrics", metrics_address()}};
  }

  // Stop serving first (in-flight Delivers finish or fail over to a retry),
  // then housekeeping, then the store, which flushes its last batch.
  void Shutdown() override {
    if (grpc_) grpc_->Shutdown(absl::Seconds(1));
    if (ticker_.joinable()) {
      stop_.Notify();
      ticker_.join();
    }
    // The store first: its last commits call back into the coordinator.
    store_.reset();
    coordinator_.reset();
  }

 private:
  std::unique_ptr<SessionStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<v1::Ingest::CallbackService> ingest_;
  std::unique_ptr<v1::WorkerLink::CallbackService> worker_link_;
  std::unique_ptr<v1::Sessions::CallbackService> sessions_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<GrpcServer> grpc_;
  absl::Notification stop_;
  std::thread ticker_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const ControllerOptions& opts) {
  auto server = std::make_unique<ControllerServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::controller
