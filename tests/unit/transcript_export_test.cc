// The transcript export over a real SQLite store and a local webhook: the
// outbox entry goes in with the caller's transaction, is POSTed signed with
// its Idempotency-Key until a 2xx comes, then removed; a standby sends
// nothing; a second exporter on the same store sends what the first had not.
#include "transcript_export.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/hub_signature.h"
#include "controller/session_store.h"
#include "fresh_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace bridge::controller {
namespace {

constexpr char kSecret[] = "export-test-secret";
constexpr absl::Duration kWait = absl::Seconds(30);  // hang guard, not a timing assertion

struct Received {
  std::string body;
  std::string idempotency_key;
  std::string signature;
  std::string content_type;
  bool sent_while_standby = false;
};

// A business webhook on port 0 that answers 500 to the first `failures`
// requests and 200 after; it records what it got.
class Webhook {
 public:
  explicit Webhook(int failures) : failures_(failures) {
    server_.Post("/hooks/transcripts", [this](const httplib::Request& req, httplib::Response& res) {
      absl::MutexLock l(&mu_);
      got_.push_back({req.body, req.get_header_value("Idempotency-Key"),
                      req.get_header_value("X-Bridge-Signature-256"),
                      req.get_header_value("Content-Type"), standby_});
      res.status = static_cast<int>(got_.size()) <= failures_ ? 500 : 200;
      res.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // httplib 0.11 has no wait_until_ready(); stop() before the loop runs
    // would be lost. Requests meanwhile wait in the listen backlog.
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~Webhook() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hooks/transcripts"); }
  void set_standby(bool standby) {
    absl::MutexLock l(&mu_);
    standby_ = standby;
  }
  std::vector<Received> WaitFor(size_t n) {
    absl::MutexLock l(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return got_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
    return got_;
  }

 private:
  const int failures_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Received> got_ ABSL_GUARDED_BY(mu_);
  bool standby_ ABSL_GUARDED_BY(mu_) = false;
};

// Counts deliveries (the exporter's on_delivered) and waits for them.
class Deliveries {
 public:
  std::function<void(const std::string&)> Callback() {
    return [this](const std::string& key) {
      absl::MutexLock l(&mu_);
      keys_.push_back(key);
    };
  }
  std::vector<std::string> WaitFor(size_t n) {
    absl::MutexLock l(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return keys_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
    return keys_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> keys_ ABSL_GUARDED_BY(mu_);
};

class TranscriptExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = absl::StrCat("sqlite:", testing::FreshDir("transcript_export"), "/controller.db");
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto s = OpenSessionStore(spec_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  void Enqueue(const std::string& key, const std::string& body) {
    Txn txn;
    txn.Put("t/session/1", "the turn itself");  // the export rides along with it
    TranscriptExporter::Enqueue(&txn, key, body, absl::Now());
    ASSERT_TRUE(store_->Commit(std::move(txn)).ok());
  }
  size_t Outbox() {
    auto r = store_->Range(TranscriptExporter::kOutboxPrefix);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->size() : 0;
  }
  TranscriptExportOptions Options(const Webhook& hook, Deliveries* d) {
    TranscriptExportOptions o;
    o.url = hook.url();
    o.secret = kSecret;
    o.min_backoff = absl::Milliseconds(20);
    o.on_delivered = d->Callback();
    return o;
  }

  std::string spec_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(TranscriptExportTest, EnqueueAddsAnExpiringOutboxPut) {
  Txn txn;
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  TranscriptExporter::Enqueue(&txn, "turn-1", R"({"a":1})", now);
  ASSERT_EQ(txn.ops.size(), 1u);
  EXPECT_EQ(txn.ops[0].kind, Txn::Op::kPut);
  EXPECT_EQ(txn.ops[0].key, "o/turn-1");
  EXPECT_EQ(txn.ops[0].value, R"({"a":1})");
  EXPECT_EQ(txn.ops[0].expires_at, now + absl::Hours(24 * 7));
}

TEST_F(TranscriptExportTest, RetriesUntilA2xxThenRemovesTheEntry) {
  const std::string body = R"({"turn_id":"t1","user":"olá","agent":"Hi!"})";
  Enqueue("wamid.ABC:t1", body);
  Webhook hook(/*failures=*/1);
  Deliveries delivered;
  TranscriptExporter exporter(store_.get(), Options(hook, &delivered));
  ASSERT_TRUE(exporter.Start().ok());
  exporter.Kick();
  EXPECT_THAT(delivered.WaitFor(1), ::testing::ElementsAre("wamid.ABC:t1"));
  std::vector<Received> got = hook.WaitFor(2);
  ASSERT_EQ(got.size(), 2u);  // the 500, then the 200
  for (const Received& r : got) {
    EXPECT_EQ(r.body, body);
    EXPECT_EQ(r.idempotency_key, "wamid.ABC:t1");
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(VerifySignature(kSecret, r.body, r.signature), SignatureCheck::kValid);
  }
  EXPECT_EQ(Outbox(), 0u);
  EXPECT_TRUE((*store_->Get("t/session/1")).has_value());  // only the outbox entry went
}

TEST_F(TranscriptExportTest, StandbySendsNothingAndASecondExporterSendsWhatTheFirstHadNot) {
  Enqueue("k1", R"({"n":1})");
  Webhook hook(/*failures=*/1);
  Deliveries first_delivered;
  {
    TranscriptExportOptions o = Options(hook, &first_delivered);
    o.min_backoff = absl::Hours(1);  // it will not try again before it stops
    TranscriptExporter first(store_.get(), o);
    ASSERT_TRUE(first.Start().ok());
    first.Kick();
    ASSERT_EQ(hook.WaitFor(1).size(), 1u);  // refused with 500
  }
  EXPECT_EQ(Outbox(), 1u);
  Reopen();  // as a restarted or another controller sees it
  Enqueue("k2", R"({"n":2})");

  std::atomic<bool> leader{false};
  hook.set_standby(true);
  Deliveries delivered;
  TranscriptExportOptions o = Options(hook, &delivered);
  o.may_act = [&leader] { return leader.load(); };
  TranscriptExporter second(store_.get(), o);
  ASSERT_TRUE(second.Start().ok());
  second.Kick();
  hook.set_standby(false);
  leader = true;
  second.Kick();
  EXPECT_THAT(delivered.WaitFor(2), ::testing::UnorderedElementsAre("k1", "k2"));
  std::vector<Received> got = hook.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  for (const Received& r : got) EXPECT_FALSE(r.sent_while_standby) << r.idempotency_key;
  EXPECT_EQ(got[0].idempotency_key, "k1");
  EXPECT_EQ(Outbox(), 0u);
}

}  // namespace
}  // namespace bridge::controller
