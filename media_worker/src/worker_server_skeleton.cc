// Temporary: the worker without its media pipeline (see CMakeLists.txt).
#include "media_worker/worker_server.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "bridge/v1/media.grpc.pb.h"
#include "common/grpc_server.h"
#include "common/grpc_unimplemented.h"
#include "common/log.h"
#include "common/metrics.h"

namespace bridge::media_worker {
namespace {

namespace v1 = ::bridge::v1;

class MediaService final : public v1::Media::CallbackService {
  grpc::ServerBidiReactor<v1::ConverseRequest, v1::ConverseResponse>* Converse(
      grpc::CallbackServerContext*) override {
    return new UnimplementedBidiReactor<v1::ConverseRequest, v1::ConverseResponse>(
        "bridge.v1.Media/Converse");
  }
};

std::string DefaultWorkerId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid());
}

class WorkerServerImpl final : public WorkerServer {
 public:
  absl::Status Init(const WorkerOptions& opts) {
    opts_ = opts;
    if (opts_.worker_id.empty()) opts_.worker_id = DefaultWorkerId();
    RegisterBuildInfo("bridge-worker");
    auto metrics = MetricsServer::Start(opts.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
    auto grpc = GrpcServer::Start(opts.listen, {{&media_, "bridge.v1.Media"}});
    if (!grpc.ok()) return grpc.status();
    grpc_ = *std::move(grpc);
    if (opts_.advertise.empty()) opts_.advertise = grpc_->address();
    LogInfo("worker serving", {{"worker_id", opts_.worker_id},
                               {"grpc", grpc_->address()},
                               {"advertise", opts_.advertise},
                               {"controller", opts_.controller},
                               {"capacity", opts_.capacity}});
    return absl::OkStatus();
  }

  std::string grpc_address() const override { return grpc_->address(); }
  std::string metrics_address() const override { return metrics_->address(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"grpc", grpc_address()}, {"metrics", metrics_address()}};
  }
  void Shutdown() override { grpc_->Shutdown(absl::Seconds(1)); }

 private:
  WorkerOptions opts_;
  MediaService media_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<GrpcServer> grpc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& opts) {
  auto server = std::make_unique<WorkerServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::media_worker
