#include "controller/controller_server.h"

#include "bridge/v1/ingest.grpc.pb.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "bridge/v1/worker_link.grpc.pb.h"
#include "common/grpc_server.h"
#include "common/grpc_unimplemented.h"
#include "common/log.h"
#include "common/metrics.h"

namespace bridge::controller {
namespace {

namespace v1 = ::bridge::v1;

class IngestService final : public v1::Ingest::CallbackService {
  grpc::ServerUnaryReactor* Deliver(grpc::CallbackServerContext* ctx, const v1::DeliverRequest*,
                                    v1::DeliverResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Ingest/Deliver");
  }
};

class WorkerLinkService final : public v1::WorkerLink::CallbackService {
  grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControllerMessage>* Attach(
      grpc::CallbackServerContext*) override {
    return new UnimplementedBidiReactor<v1::WorkerMessage, v1::ControllerMessage>(
        "bridge.v1.WorkerLink/Attach");
  }
};

class SessionsService final : public v1::Sessions::CallbackService {
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest*,
                                         v1::ListSessionsResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Sessions/ListSessions");
  }
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest*,
                                       v1::GetSessionResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Sessions/GetSession");
  }
  grpc::ServerUnaryReactor* EndSession(grpc::CallbackServerContext* ctx,
                                       const v1::EndSessionRequest*,
                                       v1::EndSessionResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Sessions/EndSession");
  }
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest*,
                                        v1::ListWorkersResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Sessions/ListWorkers");
  }
  grpc::ServerUnaryReactor* DrainWorker(grpc::CallbackServerContext* ctx,
                                        const v1::DrainWorkerRequest*,
                                        v1::DrainWorkerResponse*) override {
    return UnimplementedUnary(ctx, "bridge.v1.Sessions/DrainWorker");
  }
  grpc::ServerWriteReactor<v1::SessionEvent>* WatchSessions(
      grpc::CallbackServerContext*, const v1::WatchSessionsRequest*) override {
    return new UnimplementedWriteReactor<v1::SessionEvent>("bridge.v1.Sessions/WatchSessions");
  }
};

class ControllerServerImpl final : public ControllerServer {
 public:
  absl::Status Init(const ControllerOptions& opts) {
    RegisterBuildInfo("bridge-controller");
    auto metrics = MetricsServer::Start(opts.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
    auto grpc = GrpcServer::Start(opts.listen, {{&ingest_, "bridge.v1.Ingest"},
                                                {&worker_link_, "bridge.v1.WorkerLink"},
                                                {&sessions_, "bridge.v1.Sessions"}});
    if (!grpc.ok()) return grpc.status();
    grpc_ = *std::move(grpc);
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
  void Shutdown() override { grpc_->Shutdown(absl::Seconds(1)); }

 private:
  IngestService ingest_;
  WorkerLinkService worker_link_;
  SessionsService sessions_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<GrpcServer> grpc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const ControllerOptions& opts) {
  auto server = std::make_unique<ControllerServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::controller
