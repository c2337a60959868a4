// The controller's coordinator with the real SQLite store: dedup, ordering,
// assignment, failover, restart, idle timeout, drain, masking.
#include "coordinator.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bridge::controller {
namespace {

// Records what the coordinator sends a worker.
class RecordingChannel : public WorkerChannel {
 public:
  void Send(v1::ControllerMessage m) override {
    absl::MutexLock l(&mu_);
    sent_.push_back(std::move(m));
  }
  void Close(const std::string&) override {
    absl::MutexLock l(&mu_);
    closed_ = true;
  }
  std::vector<v1::Turn> Turns() {
    absl::MutexLock l(&mu_);
    std::vector<v1::Turn> out;
    for (const auto& m : sent_) {
      if (m.has_turn()) out.push_back(m.turn());
    }
    return out;
  }
  int Count(v1::ControllerMessage::MsgCase c) {
    absl::MutexLock l(&mu_);
    int n = 0;
    for (const auto& m : sent_) n += m.msg_case() == c;
    return n;
  }
  bool closed() {
    absl::MutexLock l(&mu_);
    return closed_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::ControllerMessage> sent_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

v1::WebhookEvent Text(const std::string& wamid, const std::string& wa_id, const std::string& text) {
  v1::WebhookEvent ev;
  v1::InboundMessage* m = ev.mutable_message();
  m->set_message_id(wamid);
  m->set_phone_number_id("106540352242922");
  m->mutable_from()->set_wa_id(wa_id);
  m->mutable_from()->set_profile_name("Ana");
  m->set_type(v1::MESSAGE_TYPE_TEXT);
  m->set_text(text);
  return ev;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = absl::StrCat("sqlite:", ::testing::TempDir(), "/coord-", getpid(), "-",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), "/c.db");
    Open();
  }
  void Open() {
    coordinator_.reset();
    store_.reset();
    store_ = *OpenSessionStore(spec_);
    coordinator_ = std::make_unique<Coordinator>(store_.get(), CoordinatorOptions());
    ASSERT_TRUE(coordinator_->Load().ok());
  }
  v1::DeliverResponse Deliver(std::vector<v1::WebhookEvent> events) {
    v1::DeliverRequest req;
    for (auto& e : events) *req.add_events() = std::move(e);
    absl::Mutex mu;
    std::optional<absl::StatusOr<v1::DeliverResponse>> result;
    coordinator_->Ingest(req, [&](absl::StatusOr<v1::DeliverResponse> r) {
      absl::MutexLock l(&mu);
      result = std::move(r);
    });
    absl::MutexLock l(&mu);
    mu.Await(absl::Condition(+[](std::optional<absl::StatusOr<v1::DeliverResponse>>* r) {
      return r->has_value();
    }, &result));
    EXPECT_TRUE(result->ok()) << result->status();
    return result->ok() ? **result : v1::DeliverResponse();
  }
  void AttachWorker(RecordingChannel* ch, const std::string& id, int capacity = 10) {
    v1::WorkerHello hello;
    hello.set_worker_id(id);
    hello.set_advertise_address("127.0.0.1:1");
    hello.set_capacity(capacity);
    ASSERT_TRUE(coordinator_->Attach(ch, hello).ok());
  }
  void Done(RecordingChannel* ch, const v1::Turn& t, v1::TurnOutcome o = v1::TURN_OUTCOME_DONE) {
    v1::TurnResult r;
    r.set_session_id(t.session_id());
    r.set_turn_id(t.turn_id());
    r.set_outcome(o);
    r.set_conversation_id("conv_1");
    coordinator_->OnTurnResult(ch, r);
  }

  std::string spec_;
  std::unique_ptr<SessionStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, RetriedDeliveryIsAcknowledgedButQueuedOnce) {
  auto r1 = Deliver({Text("wamid.1", "16505551234", "hi")});
  EXPECT_EQ(r1.accepted(), 1);
  auto r2 = Deliver({Text("wamid.1", "16505551234", "hi")});
  EXPECT_EQ(r2.accepted(), 0);
  EXPECT_EQ(r2.duplicates(), 1);
  RecordingChannel w;
  AttachWorker(&w, "w1");
  EXPECT_EQ(w.Turns().size(), 1u);
}

TEST_F(CoordinatorTest, TurnsRunOneAtATimeInArrivalOrderPerSession) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.a1", "111111111", "first"), Text("wamid.b1", "222222222", "other user"),
           Text("wamid.a2", "111111111", "second")});
  auto turns = w.Turns();
  ASSERT_EQ(turns.size(), 2u);  // one per session
  EXPECT_EQ(turns[0].message().text(), "first");
  EXPECT_EQ(turns[1].message().text(), "other user");
  EXPECT_EQ(w.Count(v1::ControllerMessage::kAssign), 2);
  Done(&w, turns[0]);
  turns = w.Turns();
  ASSERT_EQ(turns.size(), 3u);
  EXPECT_EQ(turns[2].message().text(), "second");
  EXPECT_EQ(coordinator_->ListSessions({}).size(), 2u);
}

TEST_F(CoordinatorTest, DeadWorkersTurnRunsAgainOnAnother) {
  RecordingChannel w1, w2;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.x", "111111111", "hello")});
  ASSERT_EQ(w1.Turns().size(), 1u);
  AttachWorker(&w2, "w2");
  coordinator_->Detach(&w1, "test kill");
  auto turns = w2.Turns();
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_EQ(turns[0].attempt(), 2);
  // The dead worker's late answer is ignored; the live one's counts once.
  Done(&w1, w1.Turns()[0]);
  Done(&w2, turns[0]);
  auto s = coordinator_->ListSessions({});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].turns_done(), 1);
  EXPECT_EQ(s[0].worker_id(), "w2");
  EXPECT_EQ(s[0].conversation_id(), "conv_1");
}

TEST_F(CoordinatorTest, RestartKeepsSessionsAndPendingTurns) {
  Deliver({Text("wamid.r1", "111111111", "one"), Text("wamid.r2", "111111111", "two")});
  Open();  // a controller restart
  auto sessions = coordinator_->ListSessions({});
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].turns_pending(), 2);
  RecordingChannel w;
  AttachWorker(&w, "w1");
  ASSERT_EQ(w.Turns().size(), 1u);
  EXPECT_EQ(w.Turns()[0].message().text(), "one");
  Done(&w, w.Turns()[0]);
  EXPECT_EQ(w.Turns()[1].message().text(), "two");
  // And dedup survives the restart too.
  EXPECT_EQ(Deliver({Text("wamid.r1", "111111111", "one")}).duplicates(), 1);
}

TEST_F(CoordinatorTest, IdleSessionsEndAndTheWorkerIsTold) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.i", "111111111", "hi")});
  Done(&w, w.Turns()[0]);
  coordinator_->Heartbeat(&w, {});
  coordinator_->Tick(absl::Now() + absl::Minutes(31));
  EXPECT_EQ(w.Count(v1::ControllerMessage::kEndSession), 1);
  v1::ListSessionsRequest all;
  all.set_include_ended(true);
  auto s = coordinator_->ListSessions(all);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].state(), v1::SESSION_STATE_ENDED);
  EXPECT_EQ(s[0].end_reason(), "idle timeout");
  // The next message starts a new session.
  Deliver({Text("wamid.i2", "111111111", "again")});
  EXPECT_EQ(coordinator_->ListSessions(all).size(), 2u);
}

TEST_F(CoordinatorTest, MissedHeartbeatsKillAWorker) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  coordinator_->Tick(absl::Now() + absl::Seconds(16));
  EXPECT_TRUE(w.closed());
  EXPECT_TRUE(coordinator_->ListWorkers(false).empty());
  EXPECT_EQ(coordinator_->ListWorkers(true)[0].state(), v1::WORKER_STATE_DEAD);
}

TEST_F(CoordinatorTest, DrainMovesSessionsAndIdsAreMasked) {
  RecordingChannel w1, w2;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.d", "16505551234", "hi")});
  Done(&w1, w1.Turns()[0]);
  AttachWorker(&w2, "w2");
  ASSERT_TRUE(coordinator_->DrainWorker("w1").ok());
  EXPECT_EQ(w1.Count(v1::ControllerMessage::kDrain), 1);
  Deliver({Text("wamid.d2", "16505551234", "again")});
  ASSERT_EQ(w2.Turns().size(), 1u);
  auto s = coordinator_->ListSessions({});
  EXPECT_EQ(s[0].wa_id(), "1650****234");
  v1::ListSessionsRequest reveal;
  reveal.set_reveal_ids(true);
  EXPECT_EQ(coordinator_->ListSessions(reveal)[0].wa_id(), "16505551234");
  EXPECT_TRUE(absl::IsNotFound(coordinator_->GetSession("nope", false).status()));
}

TEST_F(CoordinatorTest, StatusesAndOtherEventsAreCountedNotQueued) {
  v1::WebhookEvent status, other;
  status.mutable_status()->set_message_id("wamid.s");
  other.mutable_other()->set_field("calls");
  auto r = Deliver({status, other});
  EXPECT_EQ(r.statuses(), 1);
  EXPECT_EQ(r.ignored(), 1);
  EXPECT_TRUE(coordinator_->ListSessions({}).empty());
}

TEST_F(CoordinatorTest, ConverseStreamsAreListedCountedAndGoneWhenTheyEnd) {
  RecordingChannel w;
  AttachWorker(&w, "w1", /*capacity=*/1);
  v1::SessionReport r;
  r.set_session_id("cv_1");
  r.set_converse(true);
  r.set_conversation_id("conv_9");
  coordinator_->OnSessionReport(&w, r);
  auto s = coordinator_->ListSessions({});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].kind(), v1::SESSION_KIND_CONVERSE);
  EXPECT_EQ(s[0].worker_id(), "w1");
  EXPECT_EQ(coordinator_->ListWorkers(false)[0].active_sessions(), 1);
  // The worker is full: a WhatsApp session waits for capacity.
  Deliver({Text("wamid.c", "111111111", "hi")});
  EXPECT_TRUE(w.Turns().empty());
  r.set_ended(true);
  r.set_end_reason("client cancelled");
  coordinator_->OnSessionReport(&w, r);
  EXPECT_EQ(w.Turns().size(), 1u);  // the freed capacity goes to the waiting session
  v1::ListSessionsRequest all;
  all.set_include_ended(true);
  for (const auto& x : coordinator_->ListSessions(all)) EXPECT_NE(x.session_id(), "cv_1");
  EXPECT_EQ(coordinator_->ListWorkers(false)[0].active_sessions(), 1);
}

}  // namespace
}  // namespace bridge::controller
