#include "leader_election.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "common/log.h"
#include "grpcpp/client_context.h"

namespace bridge::controller {
namespace {

namespace pb = ::etcdserverpb;

// Leadership is timed on the monotonic clock: a wall clock stepped back (NTP)
// must not stretch an ex-leader's belief that it still leads.
int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Each etcd call of the election is bounded well inside the lease.
absl::Duration CallDeadline(absl::Duration lease) {
  return std::clamp(lease / 4, absl::Milliseconds(250), absl::Seconds(2));
}


}  // namespace

LeaderElection::LeaderElection(std::shared_ptr<grpc::Channel> channel, const EtcdConfig& config,
                               Options options, Callbacks callbacks)
    : key_(config.ns + "/leader"),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      kv_(pb::KV::NewStub(channel)),
      lease_stub_(pb::Lease::NewStub(channel)) {}

void LeaderElection::Start() { thread_ = std::thread([this] { Run(); }); }

LeaderElection::~LeaderElection() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

bool LeaderElection::Leading() const {
  return SteadyNanos() < valid_until_ns_.load();
}

std::string LeaderElection::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

void LeaderElection::SetLeader(const std::string& leader) {
  {
    absl::MutexLock lock(&mu_);
    if (leader_ == leader) return;
    leader_ = leader;
  }
  if (callbacks_.leader_changed) callbacks_.leader_changed(leader);
}

void LeaderElection::Run() {
  // A standby campaigns often (the takeover waits for the lease, then at most
  // one poll); a leader renews three times per lease.
  const absl::Duration poll = std::clamp(options_.lease / 10, absl::Milliseconds(100),
                                         absl::Milliseconds(500));
  for (;;) {
    if (leading_) Renew(); else Campaign();
    if (stop_.WaitForNotificationWithTimeout(leading_ ? options_.lease / 3 : poll)) break;
  }
  if (leading_) RevokeLease();
}

void LeaderElection::Campaign() {
  // Who leads now (and is the key free)?
  pb::TxnRequest look;
  *look.add_compare() = KeyAbsent(key_);
  look.add_failure()->mutable_request_range()->set_key(key_);
  pb::TxnResponse seen;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
  if (grpc::Status s = kv_->Txn(&ctx, look, &seen); !s.ok()) {
    // Once per outage, not once per poll.
    if (std::exchange(etcd_reachable_, false)) {
      LogWarn("etcd unreachable; cannot campaign", {{"error", EtcdError(s, "txn")}});
    }
    return;
  }
  if (!std::exchange(etcd_reachable_, true)) LogInfo("etcd reachable again; campaigning");
  if (!seen.succeeded()) {
    const auto& kvs = seen.responses(0).response_range().kvs();
    SetLeader(kvs.empty() ? "" : kvs[0].value());
    return;
  }
  if (lease_id_ == 0 && !GrantLease()) return;
  pb::TxnRequest claim;
  *claim.add_compare() = KeyAbsent(key_);
  pb::PutRequest* put = claim.add_success()->mutable_request_put();
  put->set_key(key_);
  put->set_value(options_.advertise);
  put->set_lease(lease_id_);
  claim.add_failure()->mutable_request_range()->set_key(key_);
  pb::TxnResponse won;
  grpc::ClientContext claim_ctx;
  claim_ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
  if (grpc::Status s = kv_->Txn(&claim_ctx, claim, &won); !s.ok()) {
    // The put may have landed: the next look finds our own key, which we
    // cannot renew without knowing; it lapses within a lease. Start over.
    LogWarn("campaign interrupted", {{"error", EtcdError(s, "txn")}});
    RevokeLease();
    return;
  }
  if (!won.succeeded()) {
    const auto& kvs = won.responses(0).response_range().kvs();
    SetLeader(kvs.empty() ? "" : kvs[0].value());
    RevokeLease();  // a fresh one for the next campaign: its validity counts from its grant
    return;
  }
  fence_revision_ = won.header().revision();
  leading_ = true;
  // etcd counts the lease from when it received the grant, after we sent it.
  valid_until_ns_ = lease_sent_ns_ + absl::ToInt64Nanoseconds(lease() * 9 / 10);
  LogInfo("elected leader", {{"key", key_}, {"fence_revision", fence_revision_},
                             {"lease", absl::FormatDuration(lease())}});
  SetLeader(options_.advertise);
  callbacks_.elected(fence_revision_);
  Renew();  // loading may have taken a while
}

bool LeaderElection::GrantLease() {
  pb::LeaseGrantRequest req;
  req.set_ttl(std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(options_.lease, absl::Seconds(1)))));
  pb::LeaseGrantResponse resp;
  grpc::ClientContext ctx;
  lease_sent_ns_ = SteadyNanos();
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
  if (grpc::Status s = lease_stub_->LeaseGrant(&ctx, req, &resp); !s.ok()) {
    LogWarn("cannot get an etcd lease", {{"error", EtcdError(s, "lease grant")}});
    return false;
  }
  lease_id_ = resp.id();
  ttl_seconds_ = resp.ttl();
  return true;
}

// One keep-alive round trip; then a check that the key is still ours (an
// operator may have deleted it to force a new election).
void LeaderElection::Renew() {
  const int64_t sent = SteadyNanos();
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
  auto stream = lease_stub_->LeaseKeepAlive(&ctx);
  pb::LeaseKeepAliveRequest req;
  req.set_id(lease_id_);
  pb::LeaseKeepAliveResponse resp;
  const bool answered = stream->Write(req) && stream->Read(&resp);
  stream->WritesDone();
  (void)stream->Finish();
  if (answered && resp.ttl() <= 0) return Depose("the lease expired");
  if (answered) {
    valid_until_ns_ = sent + resp.ttl() * 900'000'000;  // 90 %: clock rates
    pb::RangeRequest get;
    get.set_key(key_);
    pb::RangeResponse got;
    grpc::ClientContext get_ctx;
    get_ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
    if (kv_->Range(&get_ctx, get, &got).ok() &&
        (got.kvs().empty() || got.kvs(0).mod_revision() != fence_revision_)) {
      return Depose("the election key changed hands");
    }
  }
  if (!Leading()) Depose("the lease could not be renewed in time");
}

void LeaderElection::Depose(const std::string& why) {
  valid_until_ns_ = 0;
  leading_ = false;
  lease_id_ = 0;
  LogError("no longer the leader", {{"why", why}});
  callbacks_.deposed(why);
}

void LeaderElection::RevokeLease() {
  if (lease_id_ == 0) return;
  pb::LeaseRevokeRequest req;
  req.set_id(lease_id_);
  pb::LeaseRevokeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + CallDeadline(options_.lease)));
  (void)lease_stub_->LeaseRevoke(&ctx, req, &resp);
  lease_id_ = 0;
  valid_until_ns_ = 0;
}

}  // namespace bridge::controller
