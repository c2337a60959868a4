// Leader election and fencing against a real etcd (started by this test
// process on free ports): one of two candidates leads, the other names it;
// a deposed leader hears so; and a store fenced on the old leader's election
// revision can no longer write, whatever its own view of time.
#include <memory>

#include "absl/synchronization/notification.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "etcd_process.h"
#include "etcd_store.h"
#include "gtest/gtest.h"
#include "leader_election.h"

namespace bridge::controller {
namespace {

struct Candidate {
  absl::Notification elected, deposed;
  int64_t fence = 0;
  absl::Mutex mu;
  std::string leader ABSL_GUARDED_BY(mu);
  std::unique_ptr<LeaderElection> election;

  Candidate(std::shared_ptr<grpc::Channel> ch, const EtcdConfig& cfg, const std::string& me) {
    LeaderElection::Callbacks cb;
    cb.elected = [this](int64_t f) {
      fence = f;
      elected.Notify();
    };
    cb.deposed = [this](const std::string&) { deposed.Notify(); };
    cb.leader_changed = [this](const std::string& l) {
      absl::MutexLock lock(&mu);
      leader = l;
    };
    // The shortest lease etcd grants: a takeover within the test's patience.
    election = std::make_unique<LeaderElection>(
        ch, cfg, LeaderElection::Options{me, absl::Seconds(2)}, std::move(cb));
    election->Start();
  }
  bool AwaitLeader(const std::string& want) {
    absl::MutexLock lock(&mu);
    auto named = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return leader == want; };
    return mu.AwaitWithTimeout(absl::Condition(&named), absl::Seconds(30));
  }
};

class LeaderElectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::EtcdInstalled()) GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server)";
    etcd_ = std::make_unique<testing::EtcdProcess>(1);
    ASSERT_TRUE(etcd_->ok()) << etcd_->Logs();
    std::string spec = etcd_->StoreSpec("election");
    auto cfg = ParseEtcdSpec(spec.substr(5));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    config_ = *cfg;
    auto ch = NewEtcdChannel(config_);
    ASSERT_TRUE(ch.ok());
    channel_ = *ch;
  }
  std::unique_ptr<EtcdStore> FencedStore(const Candidate& c) {
    auto store = EtcdStore::Open(config_, channel_);
    EXPECT_TRUE(store.ok()) << store.status();
    (*store)->Fence(c.election->key(), c.fence);
    return *std::move(store);
  }

  std::unique_ptr<testing::EtcdProcess> etcd_;
  EtcdConfig config_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(LeaderElectionTest, OneLeadsTheOtherNamesItAndTakesOverWhenItStops) {
  auto a = std::make_unique<Candidate>(channel_, config_, "a:7000");
  ASSERT_TRUE(a->elected.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(a->election->Leading());
  Candidate b(channel_, config_, "b:7000");
  EXPECT_TRUE(b.AwaitLeader("a:7000"));
  EXPECT_FALSE(b.elected.HasBeenNotified());
  EXPECT_FALSE(b.election->Leading());

  auto fenced_a = FencedStore(*a);
  EXPECT_TRUE(fenced_a->Commit(Txn().Put("k", "from a")).ok());
  a.reset();  // a clean stop revokes the lease: b takes over at its next poll
  ASSERT_TRUE(b.elected.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(b.AwaitLeader("b:7000"));
  // The ex-leader's store is fenced off by etcd itself.
  auto late = fenced_a->Commit(Txn().Put("k", "late write from a"));
  EXPECT_TRUE(absl::IsAborted(late.status())) << late.status();
  auto fenced_b = FencedStore(b);
  EXPECT_TRUE(fenced_b->Commit(Txn().Put("k", "from b")).ok());
  EXPECT_EQ((*fenced_b->Get("k"))->value, "from b");
  // A compare that fails inside the fence is a plain conflict, not a deposal.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      fenced_b->Commit(Txn().IfAbsent("k").Put("k", "again")).status()));
}

TEST_F(LeaderElectionTest, ALeaderWhoseKeyIsTakenAwayIsDeposed) {
  Candidate a(channel_, config_, "a:7000");
  ASSERT_TRUE(a.elected.WaitForNotificationWithTimeout(absl::Seconds(30)));
  // An operator deleting the key forces a new election.
  auto kv = etcdserverpb::KV::NewStub(channel_);
  grpc::ClientContext ctx;
  etcdserverpb::DeleteRangeRequest del;
  del.set_key(a.election->key());
  etcdserverpb::DeleteRangeResponse resp;
  ASSERT_TRUE(kv->DeleteRange(&ctx, del, &resp).ok());
  EXPECT_TRUE(a.deposed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_FALSE(a.election->Leading());
}

}  // namespace
}  // namespace bridge::controller
