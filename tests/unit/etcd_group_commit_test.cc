// The etcd write path when etcd hangs mid-call (a real etcd, SIGSTOPped):
// every commit's call times out, so its outcome is unknown to the client.
// When etcd comes back, the queued request and the writer's claim of the
// group's marker race inside etcd; whichever wins, each commit's reported
// outcome must be the truth (OK: its key is there at that revision; an error:
// its key is absent), and callbacks come in submit order.
#include <csignal>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "etcd_client.h"
#include "etcd_group_commit.h"
#include "etcd_process.h"
#include "etcd_store.h"
#include "gtest/gtest.h"

namespace bridge::controller {
namespace {

TEST(EtcdGroupCommitTest, OutcomesOfCallsThatTimedOutAreTheTruth) {
  if (!testing::EtcdInstalled()) GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server)";
  testing::EtcdProcess etcd;
  ASSERT_TRUE(etcd.ok()) << etcd.Logs();
  auto config = ParseEtcdSpec(etcd.StoreSpec("resolve").substr(5));
  ASSERT_TRUE(config.ok());
  auto channel = NewEtcdChannel(*config);
  ASSERT_TRUE(channel.ok());
  const std::string prefix = config->ns + "/";
  auto commit = std::make_unique<EtcdGroupCommit>(*channel, prefix, absl::Milliseconds(300));
  commit->Start(0);

  constexpr int kCommits = 6;
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<absl::StatusOr<int64_t>> results(kCommits, absl::UnknownError("no callback"));
  absl::Notification all_done;
  // Leases are granted before the hang, so the hang hits the commit itself.
  ASSERT_TRUE([&] {
    absl::Notification warm;
    commit->Submit(Txn().Put("warm", "1", absl::Now() + absl::Hours(1)),
                   [&](absl::StatusOr<int64_t>) { warm.Notify(); });
    return warm.WaitForNotificationWithTimeout(absl::Seconds(30));
  }());

  etcd.Signal(0, SIGSTOP);
  for (int i = 0; i < kCommits; ++i) {
    commit->Submit(Txn().IfAbsent(absl::StrCat("k", i)).Put(absl::StrCat("k", i), "v"),
                   [&, i](absl::StatusOr<int64_t> r) {
                     absl::MutexLock lock(&mu);
                     results[i] = std::move(r);
                     order.push_back(i);
                     if (order.size() == kCommits) all_done.Notify();
                   });
  }
  // The hang lasts past several call deadlines: calls time out, resolution
  // attempts time out too; then etcd resumes with all of them queued.
  absl::SleepFor(absl::Seconds(2));
  etcd.Signal(0, SIGCONT);
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(90)));

  auto store = EtcdStore::Open(*config, *channel);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::MutexLock lock(&mu);
  for (int i = 0; i < kCommits; ++i) {
    EXPECT_EQ(order[i], i) << "callbacks out of submit order";
    auto kv = (*store)->Get(absl::StrCat("k", i));
    ASSERT_TRUE(kv.ok()) << kv.status();
    if (results[i].ok()) {
      ASSERT_TRUE(kv->has_value()) << "commit " << i << " reported applied but is absent";
      EXPECT_EQ((*kv)->mod_revision, *results[i]);
    } else {
      EXPECT_FALSE(kv->has_value()) << "commit " << i << " reported failed ("
                                    << results[i].status() << ") but is there";
    }
  }
}

}  // namespace
}  // namespace bridge::controller
