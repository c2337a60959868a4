// The contract every SessionStore implementation must meet: the embedded
// SQLite store, and the etcd store against a real etcd this process starts
// (own data directory, free ports; one per test process, stopped at exit).
#include <algorithm>
#include <set>
#include <thread>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "controller/session_store.h"
#include "etcd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bridge::controller {
namespace {

using ::testing::ElementsAre;

struct StoreFactory {
  std::string name;
  // Returns a spec for OpenSessionStore; the same spec reopens the same data.
  std::function<std::string(const std::string& unique)> spec;
  bool server_expires = false;  // ExpireNow has nothing to do (etcd's leases)
};

// One etcd for this test process; its destructor (at exit) stops it.
testing::EtcdProcess* SharedEtcd() {
  static auto* etcd = [] {
    static std::unique_ptr<testing::EtcdProcess> owner;
    if (testing::EtcdInstalled()) owner = std::make_unique<testing::EtcdProcess>(1);
    return owner.get();
  }();
  return etcd;
}

void PrintTo(const StoreFactory& f, std::ostream* os) { *os << f.name; }

class SessionStoreContract : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    if (GetParam().name == "etcd" && (SharedEtcd() == nullptr || !SharedEtcd()->ok())) {
      GTEST_SKIP() << "etcd is not installed or did not start (apt-get install etcd-server)";
    }
    spec_ = GetParam().spec(absl::StrCat(getpid(), "-",
        ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto s = OpenSessionStore(spec_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  std::string Value(const std::string& key) {
    auto kv = store_->Get(key);
    EXPECT_TRUE(kv.ok()) << kv.status();
    return kv.ok() && kv->has_value() ? (*kv)->value : "<absent>";
  }

  std::string spec_;
  std::unique_ptr<SessionStore> store_;
};

TEST_P(SessionStoreContract, PutGetAndRevisions) {
  EXPECT_EQ(Value("a"), "<absent>");
  auto r1 = store_->Commit(Txn().Put("a", "1"));
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto r2 = store_->Commit(Txn().Put("a", "2").Put("b", std::string("x\0y", 3)));
  ASSERT_TRUE(r2.ok());
  EXPECT_GT(*r2, *r1);
  EXPECT_EQ(store_->revision(), *r2);
  EXPECT_EQ(Value("a"), "2");
  EXPECT_EQ(Value("b"), std::string("x\0y", 3));
  EXPECT_EQ((*store_->Get("a"))->mod_revision, *r2);
}

TEST_P(SessionStoreContract, FailedCompareAppliesNothing) {
  ASSERT_TRUE(store_->Commit(Txn().Put("k", "v")).ok());
  auto r = store_->Commit(Txn().IfAbsent("k").Put("k", "w").Put("other", "x"));
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_EQ(Value("k"), "v");
  EXPECT_EQ(Value("other"), "<absent>");
}

TEST_P(SessionStoreContract, CompareAndSetOnModRevision) {
  auto r = store_->Commit(Txn().Put("k", "v1"));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(store_->Commit(Txn().IfRevision("k", *r).Put("k", "v2")).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(
      store_->Commit(Txn().IfRevision("k", *r).Put("k", "v3")).status()));
  EXPECT_EQ(Value("k"), "v2");
}

TEST_P(SessionStoreContract, RangeDeleteAndDeletePrefix) {
  ASSERT_TRUE(store_->Commit(Txn().Put("q/s1/002", "b").Put("q/s1/001", "a").Put("q/s2/001", "c")
                                 .Put("q/s10/001", "d")).ok());
  auto all = store_->Range("q/s1/");
  ASSERT_TRUE(all.ok());
  std::vector<std::string> keys;
  for (const auto& kv : *all) keys.push_back(kv.key);
  EXPECT_THAT(keys, ElementsAre("q/s1/001", "q/s1/002"));
  EXPECT_EQ(store_->Range("q/", 2)->size(), 2u);
  ASSERT_TRUE(store_->Commit(Txn().Delete("q/s1/001")).ok());
  EXPECT_EQ(store_->Range("q/s1/")->size(), 1u);
  ASSERT_TRUE(store_->Commit(Txn().DeletePrefix("q/s1/")).ok());
  EXPECT_TRUE(store_->Range("q/s1/")->empty());
  EXPECT_EQ(store_->Range("q/")->size(), 2u);
}

TEST_P(SessionStoreContract, ExpiredKeysVanish) {
  ASSERT_TRUE(store_->Commit(Txn().Put("dedup/old", "1", absl::Now() - absl::Seconds(1))
                                 .Put("dedup/new", "1", absl::Now() + absl::Hours(168))).ok());
  EXPECT_EQ(Value("dedup/old"), "<absent>");
  EXPECT_EQ(store_->Range("dedup/")->size(), 1u);
  // An expired key counts as absent for compares too.
  EXPECT_TRUE(store_->Commit(Txn().IfAbsent("dedup/old").Put("dedup/old", "2")).ok());
  ASSERT_TRUE(store_->Commit(Txn().Put("gone", "1", absl::Now() - absl::Seconds(1))).ok());
  auto n = store_->ExpireNow();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, GetParam().server_expires ? 0 : 1);
  EXPECT_EQ(Value("gone"), "<absent>");
}

TEST_P(SessionStoreContract, DataAndRevisionSurviveReopen) {
  auto r = store_->Commit(Txn().Put("session/1", "state"));
  ASSERT_TRUE(r.ok());
  Reopen();
  EXPECT_EQ(Value("session/1"), "state");
  EXPECT_EQ(store_->revision(), *r);
  EXPECT_GT(*store_->Commit(Txn().Put("x", "y")), *r);
}

// Commits that land together (a group commit) may share a revision; each
// key's mod_revision is the revision its own commit returned, and revisions
// never go backwards.
TEST_P(SessionStoreContract, ConcurrentCommitsAllLandAndRevisionsAreTheirs) {
  constexpr int kThreads = 8, kEach = 50;
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> revs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto r = store_->Commit(Txn().IfAbsent(absl::StrCat("c/", t, "/", i))
                                    .Put(absl::StrCat("c/", t, "/", i), "v"));
        if (r.ok()) revs[t].push_back(*r);
      }
    });
  }
  for (auto& th : threads) th.join();
  int64_t landed = 0;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(revs[t].size(), static_cast<size_t>(kEach)) << "thread " << t;
    for (int i = 0; i < kEach; ++i) {
      // One thread's commits are sequential: strictly increasing revisions.
      if (i > 0) {
        EXPECT_GT(revs[t][i], revs[t][i - 1]);
      }
      auto kv = store_->Get(absl::StrCat("c/", t, "/", i));
      ASSERT_TRUE(kv.ok() && kv->has_value());
      EXPECT_EQ((*kv)->mod_revision, revs[t][i]);
      ++landed;
    }
  }
  EXPECT_EQ(landed, kThreads * kEach);
  EXPECT_EQ(store_->Range("c/")->size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_GE(store_->revision(), *std::max_element(revs[0].begin(), revs[0].end()));
}

TEST(SessionStoreSpecTest, BadSpecsAreInvalidArguments) {
  EXPECT_TRUE(absl::IsInvalidArgument(OpenSessionStore("mysql:x").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OpenSessionStore("sqlite:").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OpenSessionStore("etcd:").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OpenSessionStore("etcd:localhost").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(OpenSessionStore("etcd:h:2379/a/b").status()));
}

TEST(SessionStoreSpecTest, UnreachableEtcdIsAnErrorNotAHang) {
  // Nothing listens on port 1: Open fails within its deadline with a reason.
  auto s = OpenSessionStore("etcd:127.0.0.1:1");
  EXPECT_TRUE(absl::IsUnavailable(s.status()) || absl::IsDeadlineExceeded(s.status())) << s.status();
}

INSTANTIATE_TEST_SUITE_P(
    Stores, SessionStoreContract,
    ::testing::Values(StoreFactory{"sqlite",
                                   [](const std::string& unique) {
                                     return absl::StrCat("sqlite:", ::testing::TempDir(),
                                                         "/store-", unique, "/c.db");
                                   }},
                      StoreFactory{"etcd",
                                   [](const std::string& unique) {
                                     return SharedEtcd()->StoreSpec(unique.substr(0, 40));
                                   },
                                   /*server_expires=*/true}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace bridge::controller
