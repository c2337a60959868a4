#include "controller_client.h"

#include <deque>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bridge/v1/ingest.grpc.pb.h"
#include "common/call_auth.h"
#include "common/controller_targets.h"
#include "common/grpc_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace bridge::gateway {

struct ControllerClient::Impl {
  std::unique_ptr<ControllerTargets> targets;
  std::string token;

  // One POST waiting for its group's Deliver.
  struct Waiter {
    const bridge::v1::DeliverRequest* request;
    absl::StatusOr<bridge::v1::DeliverResponse> result;
    bool done = false;
    bool leads = false;  // sends the next group (its own first)
    bool taken = false;  // in a group being sent: must wait for its result
  };
  absl::Mutex mu;
  std::deque<Waiter*> queue ABSL_GUARDED_BY(mu);
  bool sending ABSL_GUARDED_BY(mu) = false;

  absl::StatusOr<bridge::v1::DeliverResponse> Send(const bridge::v1::DeliverRequest& request,
                                                   absl::Duration deadline);
};

ControllerClient::ControllerClient() : impl_(new Impl) {}
ControllerClient::~ControllerClient() = default;

absl::StatusOr<std::unique_ptr<ControllerClient>> ControllerClient::Create(
    const std::string& target, std::string cluster_token) {
  // A hung (paused, partitioned) controller is noticed within ~3 s, after
  // which webhooks get their 503 at once instead of each waiting the deadline.
  grpc::ChannelArguments args = KeepaliveChannelArgs(absl::Seconds(2), absl::Seconds(1));
  // Reconnect quickly after a controller restart: the webhook waits for it.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  auto targets = ControllerTargets::Create(target, args);
  if (!targets.ok()) return targets.status();
  std::unique_ptr<ControllerClient> c(new ControllerClient);
  c->impl_->targets = *std::move(targets);
  c->impl_->token = std::move(cluster_token);
  return c;
}

// Not connected: a reconnection may still succeed this soon (the channel
// retries every 100 to 500 ms), no longer.
constexpr absl::Duration kNotConnectedDeadline = absl::Milliseconds(750);

// The leader/follower group commit: the first POST to find nothing in flight
// sends; POSTs that arrive meanwhile queue; when the call returns, the sender
// answers its whole group and hands the lead to the next queued POST, which
// sends everything queued since in one call. No thread of its own, no timer:
// an idle gateway sends each POST at once.
absl::StatusOr<bridge::v1::DeliverResponse> ControllerClient::Deliver(
    const bridge::v1::DeliverRequest& request, absl::Duration deadline) {
  Impl& d = *impl_;
  Impl::Waiter self{&request, absl::UnknownError("not sent")};
  std::vector<Impl::Waiter*> group;
  {
    absl::MutexLock lock(&d.mu);
    d.queue.push_back(&self);
    if (!d.sending) {
      d.sending = true;
      self.leads = true;
    }
    auto ready = +[](Impl::Waiter* w) { return w->done || w->leads; };
    if (!d.mu.AwaitWithDeadline(absl::Condition(ready, &self), absl::Now() + deadline) &&
        !self.taken) {
      // Still queued behind slow Delivers: give up (503, Meta retries)
      // rather than answer after the webhook's own deadline.
      std::erase(d.queue, &self);
      return absl::UnavailableError("controller: the gateway's queue to it did not move in time");
    }
    d.mu.Await(absl::Condition(ready, &self));
    if (self.done) return std::move(self.result);
    size_t bytes = 0;
    while (!d.queue.empty() && static_cast<int>(group.size()) < kMaxGroup) {
      const size_t size = d.queue.front()->request->ByteSizeLong();
      // Well under the controller's receive limit, whatever the POSTs weigh.
      if (!group.empty() && bytes + size > kMaxGroupBytes) break;
      bytes += size;
      d.queue.front()->taken = true;
      group.push_back(d.queue.front());
      d.queue.pop_front();
    }
  }
  bridge::v1::DeliverRequest merged;
  merged.set_delivery_id(request.delivery_id());
  merged.set_received_at_unix_ms(request.received_at_unix_ms());
  for (Impl::Waiter* w : group) {
    for (const auto& ev : w->request->events()) *merged.add_events() = ev;
  }
  auto result = d.Send(group.size() == 1 ? request : merged, deadline);
  absl::MutexLock lock(&d.mu);
  for (Impl::Waiter* w : group) {
    w->result = result;
    w->done = true;
  }
  if (d.queue.empty()) {
    d.sending = false;
  } else {
    d.queue.front()->leads = true;
  }
  return std::move(self.result);
}

// Tries the controller most likely to lead; a standby's answer names the
// leader and an unreachable one is skipped, each at once, within `deadline`.
// Deliver is idempotent by message id, so a retry after a lost answer is safe.
absl::StatusOr<bridge::v1::DeliverResponse> ControllerClient::Impl::Send(
    const bridge::v1::DeliverRequest& request, absl::Duration deadline) {
  const absl::Time end = absl::Now() + deadline;
  grpc::Status last;
  std::string tried;
  const size_t attempts = targets->size() + 1;
  for (size_t i = 0; i < attempts && absl::Now() < end; ++i) {
    ControllerTargets::Pick pick = targets->Current();
    grpc::ClientContext ctx;
    // A controller that is not there is answered 503 at once (Meta retries):
    // waiting out the deadline per webhook would only pile up HTTP threads.
    // So no wait_for_ready: a connection that breaks under the call, or a
    // controller that just stopped while the channel still says READY, is an
    // immediate UNAVAILABLE. The full deadline is for a connected controller
    // that is slow to commit; a connection still being made gets 750 ms.
    const bool connected = pick.channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY;
    ctx.set_wait_for_ready(false);
    ctx.set_deadline(absl::ToChronoTime(
        std::min(end, absl::Now() + (connected ? deadline : kNotConnectedDeadline))));
    AttachToken(&ctx, token);
    bridge::v1::DeliverResponse response;
    last = bridge::v1::Ingest::NewStub(pick.channel)->Deliver(&ctx, request, &response);
    if (last.ok()) return response;
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", pick.target);
    if (!targets->Failed(pick, last)) break;
  }
  return absl::UnavailableError(absl::StrCat("controller (", tried, "): ", last.error_message(),
                                             " (", last.error_code(), ")"));
}

// Ready when one of the controllers serves Ingest (the leader does).
absl::Status ControllerClient::Check() {
  std::string last = "no controller answered";
  for (size_t i = 0; i < impl_->targets->size(); ++i) {
    ControllerTargets::Pick pick = impl_->targets->Current();
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("bridge.v1.Ingest");
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = grpc::health::v1::Health::NewStub(pick.channel)->Check(&ctx, req, &resp);
    if (s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last = s.ok() ? absl::StrCat(pick.target, " does not serve Ingest (a standby?)")
                  : absl::StrCat(pick.target, ": ", s.error_message());
    // Move on as from an unreachable controller.
    impl_->targets->Failed(pick, grpc::Status(grpc::StatusCode::UNAVAILABLE, last));
  }
  return absl::UnavailableError(absl::StrCat("controller: ", last));
}

}  // namespace bridge::gateway
