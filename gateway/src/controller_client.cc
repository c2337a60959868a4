#include "controller_client.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bridge/v1/ingest.grpc.pb.h"
#include "common/call_auth.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace bridge::gateway {

struct ControllerClient::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<bridge::v1::Ingest::Stub> ingest;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  std::string token;
};

ControllerClient::ControllerClient(const std::string& target, std::string cluster_token)
    : impl_(new Impl) {
  impl_->token = std::move(cluster_token);
  // Reconnect quickly after a controller restart: the webhook waits for it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  // A hung (paused, partitioned) controller is noticed within ~3 s, after
  // which webhooks get their 503 at once instead of each waiting the deadline.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  impl_->channel =
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  impl_->ingest = bridge::v1::Ingest::NewStub(impl_->channel);
  impl_->health = grpc::health::v1::Health::NewStub(impl_->channel);
}

ControllerClient::~ControllerClient() = default;

// Not connected: a reconnection may still succeed this soon (the channel
// retries every 100 to 500 ms), no longer.
constexpr absl::Duration kNotConnectedDeadline = absl::Milliseconds(750);

absl::StatusOr<bridge::v1::DeliverResponse> ControllerClient::Deliver(
    const bridge::v1::DeliverRequest& request, absl::Duration deadline) {
  grpc::ClientContext ctx;
  // A controller that is not there is answered 503 at once (Meta retries):
  // waiting out the deadline per webhook would only pile up HTTP threads.
  // So no wait_for_ready: a connection that breaks under the call, or a
  // controller that just stopped while the channel still says READY, is an
  // immediate UNAVAILABLE. The full deadline is for a connected controller
  // that is slow to commit; a connection still being made gets 750 ms.
  const bool connected = impl_->channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY;
  ctx.set_wait_for_ready(false);
  ctx.set_deadline(absl::ToChronoTime(
      absl::Now() + (connected ? deadline : std::min(deadline, kNotConnectedDeadline))));
  AttachToken(&ctx, impl_->token);
  bridge::v1::DeliverResponse response;
  grpc::Status s = impl_->ingest->Deliver(&ctx, request, &response);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("controller: ", s.error_message(), " (",
                                               s.error_code(), ")"));
  }
  return response;
}

absl::Status ControllerClient::Check() {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("bridge.v1.Ingest");
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = impl_->health->Check(&ctx, req, &resp);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("controller: ", s.error_message()));
  if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError("controller: not serving");
  }
  return absl::OkStatus();
}

}  // namespace bridge::gateway
