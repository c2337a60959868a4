#include "controller_probe.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace bridge::gateway {

struct ControllerProbe::Impl {
  std::unique_ptr<grpc::health::v1::Health::Stub> stub;
};

ControllerProbe::ControllerProbe(const std::string& target) : impl_(new Impl) {
  impl_->stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
}

ControllerProbe::~ControllerProbe() = default;

absl::Status ControllerProbe::Check() {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("bridge.v1.Ingest");
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = impl_->stub->Check(&ctx, req, &resp);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("controller: ", s.error_message()));
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError("controller: not serving");
  }
  return absl::OkStatus();
}

}  // namespace bridge::gateway
