// The controller's coordinator with the real SQLite store: dedup, ordering,
// assignment, failover, restart, idle timeout, drain, masking.
#include "coordinator.h"

#include "fresh_dir.h"

#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
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
  std::vector<v1::ControllerMessage> Messages() {
    absl::MutexLock l(&mu_);
    return sent_;
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

// A message from a user known by a BSUID, a phone, or both.
v1::WebhookEvent From(const std::string& wamid, const std::string& user_id,
                      const std::string& wa_id, v1::MessageType type = v1::MESSAGE_TYPE_TEXT,
                      const std::string& text = "hi") {
  v1::WebhookEvent ev = Text(wamid, wa_id, text);
  ev.mutable_message()->mutable_from()->set_user_id(user_id);
  ev.mutable_message()->set_type(type);
  return ev;
}

v1::WebhookEvent Targeting(const std::string& wamid, const std::string& wa_id,
                           v1::MessageType type, const std::string& target,
                           const std::string& text = "") {
  v1::WebhookEvent ev = Text(wamid, wa_id, text);
  ev.mutable_message()->set_type(type);
  ev.mutable_message()->set_target_message_id(target);
  return ev;
}

v1::WebhookEvent Failed(const std::string& wamid, int code, const std::string& title) {
  v1::WebhookEvent ev;
  v1::StatusUpdate* st = ev.mutable_status();
  st->set_message_id(wamid);
  st->set_status(v1::DELIVERY_STATUS_FAILED);
  st->set_status_name("failed");
  st->add_errors()->set_code(code);
  st->mutable_errors(0)->set_title(title);
  return ev;
}

v1::SentMessage Sent(const std::string& wamid, v1::SentKind kind, const std::string& text) {
  v1::SentMessage m;
  m.set_message_id(wamid);
  m.set_kind(kind);
  m.set_text(text);
  return m;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = absl::StrCat("sqlite:", bridge::testing::FreshDir("coord"), "/c.db");
    Open();
  }
  void Open() {
    coordinator_.reset();
    store_.reset();
    store_ = *OpenSessionStore(spec_);
    coordinator_ = std::make_unique<Coordinator>(store_.get(), options_);
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
  // A hello as a worker that re-attaches says it: `running` turns still
  // running there, `finished` results the controller never acknowledged.
  void Reattach(RecordingChannel* ch, const std::string& id, std::vector<v1::Turn> running,
                std::vector<v1::TurnResult> finished = {}) {
    v1::WorkerHello hello;
    hello.set_worker_id(id);
    hello.set_capacity(10);
    for (const auto& t : running) {
      hello.add_held_session_ids(t.session_id());
      v1::TurnRef* ref = hello.add_running_turns();
      ref->set_session_id(t.session_id());
      ref->set_turn_id(t.turn_id());
    }
    for (auto& r : finished) {
      hello.add_held_session_ids(r.session_id());
      *hello.add_finished_turns() = std::move(r);
    }
    ASSERT_TRUE(coordinator_->Attach(ch, hello).ok());
  }
  // Waits for the commits a change queued outside an ingest batch (results,
  // edits, revokes, session changes): one more commit lands after them.
  void Flush() { ASSERT_TRUE(store_->Commit(Txn().Put("x/flush", "")).ok()); }
  static v1::TurnResult Result(const v1::Turn& t, std::vector<v1::SentMessage> sent = {}) {
    v1::TurnResult r;
    r.set_session_id(t.session_id());
    r.set_turn_id(t.turn_id());
    r.set_outcome(v1::TURN_OUTCOME_DONE);
    for (auto& m : sent) *r.add_sent() = std::move(m);
    return r;
  }
  void Done(RecordingChannel* ch, const v1::Turn& t, v1::TurnOutcome o = v1::TURN_OUTCOME_DONE,
            std::vector<v1::SentMessage> sent = {}, std::vector<std::string> transcript = {}) {
    v1::TurnResult r;
    r.set_session_id(t.session_id());
    r.set_turn_id(t.turn_id());
    r.set_outcome(o);
    for (auto& m : sent) *r.add_sent() = std::move(m);
    for (const std::string& line : transcript) {  // "user: …" / "agent: …"
      v1::TranscriptLine* l = r.add_lines();
      const bool user = absl::StartsWith(line, "user: ");
      l->set_speaker(user ? v1::SPEAKER_USER : v1::SPEAKER_AGENT);
      l->set_text(line.substr(line.find(": ") + 2));
    }
    r.set_conversation_id("conv_1");
    coordinator_->OnTurnResult(ch, r);
    Flush();  // its acknowledgement is sent before `ch` goes out of scope
  }

  v1::Session Only() {
    v1::ListSessionsRequest reveal;
    reveal.set_reveal_ids(true);
    auto s = coordinator_->ListSessions(reveal);
    EXPECT_EQ(s.size(), 1u);
    return s.empty() ? v1::Session() : s[0];
  }

  std::string spec_;
  CoordinatorOptions options_;  // Open() uses it
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
  // It may be alive: its turn waits out the grace, then moves.
  EXPECT_TRUE(w2.Turns().empty());
  coordinator_->Heartbeat(&w2, {});
  coordinator_->Tick(absl::Now() + CoordinatorOptions().reattach_grace + absl::Seconds(1));
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

// The exchange so far follows the session to its next worker, which opens
// its first conversation with it as context.
TEST_F(CoordinatorTest, TheRecentExchangeFollowsTheSessionToAnotherWorker) {
  RecordingChannel w1, w2;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.h1", "111111111", "my name is Ana")});
  ASSERT_EQ(w1.Turns().size(), 1u);
  Done(&w1, w1.Turns()[0], v1::TURN_OUTCOME_DONE, {},
       {"user: my name is Ana", "agent: Nice to meet you, Ana"});
  AttachWorker(&w2, "w2");
  coordinator_->Detach(&w1, "test kill");
  coordinator_->Heartbeat(&w2, {});
  coordinator_->Tick(absl::Now() + CoordinatorOptions().reattach_grace + absl::Seconds(1));
  Deliver({Text("wamid.h2", "111111111", "what is my name?")});
  ASSERT_EQ(w2.Turns().size(), 1u);
  ASSERT_EQ(w2.Count(v1::ControllerMessage::kAssign), 1);
  std::vector<std::string> context;
  for (const auto& m : w2.Messages()) {
    if (m.has_assign()) context.assign(m.assign().recent_transcript().begin(),
                                       m.assign().recent_transcript().end());
  }
  EXPECT_THAT(context, ::testing::ElementsAre("user: my name is Ana", "agent: Nice to meet you, Ana"));
}

TEST_F(CoordinatorTest, RestartKeepsSessionsAndPendingTurns) {
  Deliver({Text("wamid.r1", "111111111", "one"), Text("wamid.r2", "111111111", "two")});
  Open();  // a controller restart
  auto sessions = coordinator_->ListSessions({});
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].turns_pending(), 2);
  RecordingChannel w;
  AttachWorker(&w, "w1");
  // Both waited: they are answered together (coalescing).
  ASSERT_EQ(w.Turns().size(), 1u);
  EXPECT_EQ(w.Turns()[0].message().text(), "one");
  ASSERT_EQ(w.Turns()[0].coalesced_size(), 1);
  EXPECT_EQ(w.Turns()[0].coalesced(0).text(), "two");
  v1::TurnResult r = Result(w.Turns()[0]);
  *r.mutable_coalesced_turn_ids() = w.Turns()[0].coalesced_turn_ids();
  coordinator_->OnTurnResult(&w, r);
  Flush();
  EXPECT_EQ(Only().turns_pending(), 0);
  Open();  // both settled durably
  EXPECT_EQ(Only().turns_pending(), 0);
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
  // The moved session's agent socket closes on the drained worker.
  EXPECT_EQ(w1.Count(v1::ControllerMessage::kEndSession), 1);
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
  other.mutable_other()->set_field("account_update");
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

v1::WebhookEvent Call(v1::CallEventType type, const std::string& call_id, const std::string& status = "") {
  v1::WebhookEvent ev;
  v1::CallEvent* c = ev.mutable_call();
  c->set_type(type);
  c->set_call_id(call_id);
  c->set_phone_number_id("106540352242922");
  c->mutable_from()->set_wa_id("111111111");
  c->set_sdp("v=0");
  c->set_status(status);
  return ev;
}

// Meta's terminate webhook for our own reject can come before the worker's
// report: the call's session ends with the worker's reason, not Meta's
// status. A late ANSWERED does not bring a call the caller left back.
TEST_F(CoordinatorTest, ACallEndsWithTheWorkersReasonWhicheverArrivesFirst) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  auto session = [this](const std::string& id) {
    v1::ListSessionsRequest all;
    all.set_include_ended(true);
    for (const v1::Session& s : coordinator_->ListSessions(all)) {
      if (s.session_id() == id) return s;
    }
    return v1::Session();
  };
  Deliver({Call(v1::CALL_EVENT_TYPE_CONNECT, "wacid.1")});
  ASSERT_EQ(w.Messages().size(), 1u);
  EXPECT_EQ(w.Messages()[0].call_offer().call_id(), "wacid.1");
  Deliver({Call(v1::CALL_EVENT_TYPE_TERMINATE, "wacid.1", "REJECTED")});
  EXPECT_EQ(session("wacid.1").end_reason(), "the call ended (REJECTED)");
  v1::CallReport r;
  r.set_call_id("wacid.1");
  r.set_outcome(v1::CALL_OUTCOME_REJECTED);
  r.set_reason("calls are off on this worker (--calls=off)");
  coordinator_->OnCallReport(&w, r);
  EXPECT_EQ(session("wacid.1").state(), v1::SESSION_STATE_ENDED);
  EXPECT_EQ(session("wacid.1").end_reason(), r.reason());
  EXPECT_EQ(session("wacid.1").last_error(), r.reason());

  Deliver({Call(v1::CALL_EVENT_TYPE_CONNECT, "wacid.2")});
  Deliver({Call(v1::CALL_EVENT_TYPE_TERMINATE, "wacid.2", "COMPLETED")});
  r.set_call_id("wacid.2");
  r.set_outcome(v1::CALL_OUTCOME_ANSWERED);
  r.set_reason("");
  coordinator_->OnCallReport(&w, r);
  EXPECT_EQ(session("wacid.2").state(), v1::SESSION_STATE_ENDED);
  EXPECT_EQ(session("wacid.2").end_reason(), "the call ended (COMPLETED)");
}

TEST_F(CoordinatorTest, ABsuidSessionNeverSplitsWhenThePhoneComesAndGoes) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({From("wamid.b1", "US.1349", "")});
  ASSERT_EQ(w.Turns().size(), 1u);
  EXPECT_EQ(w.Turns()[0].reply_to().user_id(), "US.1349");
  EXPECT_EQ(w.Turns()[0].reply_to().wa_id(), "");  // the worker sends with "recipient"
  EXPECT_EQ(w.Turns()[0].action(), v1::TURN_ACTION_REPLY);
  Done(&w, w.Turns()[0]);
  Deliver({From("wamid.b2", "US.1349", "16505551234")});  // the phone appears
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].reply_to().wa_id(), "16505551234");  // now "to"
  EXPECT_EQ(w.Turns()[1].reply_to().user_id(), "US.1349");
  Done(&w, w.Turns()[1]);
  Deliver({From("wamid.b3", "", "16505551234")});  // found by the phone alone
  Done(&w, w.Turns()[2]);
  Deliver({From("wamid.b4", "US.1349", "")});  // the phone disappears again
  ASSERT_EQ(w.Turns().size(), 4u);
  EXPECT_EQ(w.Turns()[3].reply_to().wa_id(), "16505551234");
  v1::Session s = Only();
  EXPECT_EQ(s.user_id(), "US.1349");
  EXPECT_EQ(s.wa_id(), "16505551234");
  EXPECT_EQ(s.turns_done(), 3);
}

TEST_F(CoordinatorTest, PhoneKeyedSessionsFromBeforeAreFoundAndLinkedAcrossRestarts) {
  Deliver({From("wamid.p1", "", "16505551234")});  // a session from before BSUIDs
  Open();
  Deliver({From("wamid.p2", "US.77", "16505551234")});
  EXPECT_EQ(Only().user_id(), "US.77");
  Open();  // Load() indexes both keys
  Deliver({From("wamid.p3", "US.77", "")});
  v1::Session s = Only();
  EXPECT_EQ(s.turns_pending(), 3);
  EXPECT_EQ(s.wa_id(), "16505551234");
}

TEST_F(CoordinatorTest, UsernamesAreMaskedLikePhones) {
  v1::WebhookEvent ev = From("wamid.u", "US.1349", "");
  ev.mutable_message()->mutable_from()->set_username("ana.banana");
  Deliver({ev});
  EXPECT_EQ(Only().username(), "ana.banana");
  auto masked = coordinator_->ListSessions({});
  ASSERT_EQ(masked.size(), 1u);
  EXPECT_EQ(masked[0].username(), "ana.***ana");
}

TEST_F(CoordinatorTest, OldMessagesAreAcknowledgedCountedAndNotAnswered) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  v1::WebhookEvent old = Text("wamid.old", "111111111", "three days late");
  old.mutable_message()->set_timestamp(absl::ToUnixSeconds(absl::Now() - absl::Hours(72)));
  v1::WebhookEvent fresh = Text("wamid.new", "111111111", "now");
  fresh.mutable_message()->set_timestamp(absl::ToUnixSeconds(absl::Now() - absl::Minutes(1)));
  auto r = Deliver({old, fresh});
  EXPECT_EQ(r.too_old(), 1);
  EXPECT_EQ(r.accepted(), 1);
  ASSERT_EQ(w.Turns().size(), 1u);
  EXPECT_EQ(w.Turns()[0].message().text(), "now");
  Flush();
  EXPECT_EQ(Only().messages_too_old(), 1);
  EXPECT_EQ(Deliver({old}).duplicates(), 1);  // its id was recorded
  Open();
  EXPECT_EQ(Only().messages_too_old(), 1);
}

TEST_F(CoordinatorTest, AReactionIsContextForTheAgentNotATurnToAnswer) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.m", "111111111", "hi")});
  Done(&w, w.Turns()[0]);
  auto r = Deliver({Targeting("wamid.r", "111111111", v1::MESSAGE_TYPE_REACTION, "wamid.reply",
                              "\xF0\x9F\x91\x8D")});
  EXPECT_EQ(r.applied(), 1);
  EXPECT_EQ(r.accepted(), 0);
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_INFORM);
}

TEST_F(CoordinatorTest, AnEditOfAWaitingMessageReplacesItsTextDurably) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.e1", "111111111", "first"), Text("wamid.e2", "111111111", "tpyo")});
  auto r = Deliver({Targeting("wamid.e3", "111111111", v1::MESSAGE_TYPE_EDIT, "wamid.e2",
                              "typo")});
  EXPECT_EQ(r.applied(), 1);
  Flush();
  Open();  // the edit survives a restart, and its own turn is gone
  EXPECT_EQ(Only().turns_pending(), 2);
  RecordingChannel w2;
  AttachWorker(&w2, "w1");  // its worker, back after the restart
  ASSERT_EQ(w2.Turns().size(), 1u);  // both waited: answered together
  ASSERT_EQ(w2.Turns()[0].coalesced_size(), 1);
  EXPECT_EQ(w2.Turns()[0].coalesced(0).text(), "typo");
  EXPECT_EQ(w2.Turns()[0].action(), v1::TURN_ACTION_REPLY);
}

TEST_F(CoordinatorTest, AnEditOfARunningOrAnsweredMessageTellsTheAgent) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.f1", "111111111", "tpyo")});  // in flight
  Deliver({Targeting("wamid.f2", "111111111", v1::MESSAGE_TYPE_EDIT, "wamid.f1", "typo")});
  Done(&w, w.Turns()[0]);
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[0].message().text(), "tpyo");
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_INFORM);
  EXPECT_EQ(w.Turns()[1].message().text(), "typo");
}

TEST_F(CoordinatorTest, ARevokeDropsAWaitingTurnAndOtherwiseTellsTheAgent) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.v1", "111111111", "one"), Text("wamid.v2", "111111111", "oops")});
  EXPECT_EQ(Deliver({Targeting("wamid.v3", "111111111", v1::MESSAGE_TYPE_REVOKE, "wamid.v2")})
                .applied(), 1);
  Flush();
  EXPECT_EQ(Only().turns_pending(), 1);  // only "one", in flight
  Open();  // and gone from the store
  EXPECT_EQ(Only().turns_pending(), 1);
  RecordingChannel w2;
  AttachWorker(&w2, "w1");  // its worker, back after the restart
  ASSERT_EQ(w2.Turns().size(), 1u);
  EXPECT_EQ(w2.Turns()[0].message().text(), "one");
  Done(&w2, w2.Turns()[0]);
  EXPECT_EQ(w2.Turns().size(), 1u);
  Deliver({Targeting("wamid.v4", "111111111", v1::MESSAGE_TYPE_REVOKE, "wamid.v1")});
  ASSERT_EQ(w2.Turns().size(), 2u);
  EXPECT_EQ(w2.Turns()[1].action(), v1::TURN_ACTION_INFORM);
}

TEST_F(CoordinatorTest, ANumberChangeRekeysTheSessionWithoutATurn) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.n1", "111111111", "hi")});
  Done(&w, w.Turns()[0]);
  v1::WebhookEvent sys = Text("wamid.n2", "111111111", "User A changed their number");
  sys.mutable_message()->set_type(v1::MESSAGE_TYPE_SYSTEM);
  sys.mutable_message()->set_system_type("user_changed_number");
  sys.mutable_message()->set_new_wa_id("222222222");
  EXPECT_EQ(Deliver({sys}).applied(), 1);
  EXPECT_EQ(w.Turns().size(), 1u);
  Deliver({Text("wamid.n3", "222222222", "from my new number")});
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].reply_to().wa_id(), "222222222");
  EXPECT_EQ(Only().wa_id(), "222222222");
}

TEST_F(CoordinatorTest, RequestWelcomeIsATurnToAnswer) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  v1::WebhookEvent ev = From("wamid.w", "US.1", "", v1::MESSAGE_TYPE_REQUEST_WELCOME, "");
  EXPECT_EQ(Deliver({ev}).accepted(), 1);
  ASSERT_EQ(w.Turns().size(), 1u);
  EXPECT_EQ(w.Turns()[0].action(), v1::TURN_ACTION_REPLY);
}

TEST_F(CoordinatorTest, AFailedVoiceNoteIsFollowedOnceByItsTextEvenAfterARestart) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.a", "111111111", "hi")});
  Done(&w, w.Turns()[0], v1::TURN_OUTCOME_DONE,
       {Sent("wamid.voice", v1::SENT_KIND_VOICE, "Hello there")});
  Open();  // what was sent is found again after a restart
  RecordingChannel w2;
  AttachWorker(&w2, "w1");  // its worker, back on a new stream
  auto r = Deliver({Failed("wamid.voice", 131053, "Media upload error")});
  EXPECT_EQ(r.statuses(), 1);
  ASSERT_EQ(w2.Turns().size(), 1u);
  EXPECT_EQ(w2.Turns()[0].action(), v1::TURN_ACTION_RESEND_AS_TEXT);
  EXPECT_EQ(w2.Turns()[0].fallback_text(), "Hello there");
  EXPECT_EQ(w2.Turns()[0].reply_to().wa_id(), "111111111");
  Done(&w2, w2.Turns()[0]);
  EXPECT_EQ(Deliver({Failed("wamid.voice", 131053, "Media upload error")}).statuses(), 1);
  Flush();
  EXPECT_EQ(w2.Turns().size(), 1u);  // never twice
  v1::Session s = Only();
  EXPECT_EQ(s.delivery_failures(), 1);
  EXPECT_EQ(s.last_delivery_error(), "131053 Media upload error");
  EXPECT_FALSE(s.window_closed());
}

TEST_F(CoordinatorTest, AFailureThatOvertakesTheTurnResultIsStillMatched) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.o", "111111111", "hi")});
  Deliver({Failed("wamid.fast", 131026, "Message undeliverable")});
  Done(&w, w.Turns()[0], v1::TURN_OUTCOME_DONE,
       {Sent("wamid.fast", v1::SENT_KIND_VOICE, "Hi!")});
  Flush();
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_RESEND_AS_TEXT);
  EXPECT_EQ(Only().delivery_failures(), 1);
}

TEST_F(CoordinatorTest, AClosedWindowStopsSendingUntilTheUserWritesAgain) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.c0", "111111111", "zero")});
  Done(&w, w.Turns()[0], v1::TURN_OUTCOME_DONE, {Sent("wamid.t0", v1::SENT_KIND_VOICE, "0")});
  Deliver({Text("wamid.c1", "111111111", "one"), Text("wamid.c2", "111111111", "two")});
  // The reply to "zero" failed: the window is closed. No text resend either.
  Deliver({Failed("wamid.t0", 131047, "Re-engagement message")});
  Flush();
  EXPECT_TRUE(Only().window_closed());
  Done(&w, w.Turns()[1]);  // "one" was already running
  EXPECT_EQ(w.Turns().size(), 2u);  // "two" is completed without sending
  v1::Session s = Only();
  EXPECT_EQ(s.turns_pending(), 0);
  EXPECT_EQ(s.turns_failed(), 1);
  EXPECT_EQ(s.last_delivery_error(), "131047 Re-engagement message");
  Deliver({Text("wamid.c3", "111111111", "three")});
  ASSERT_EQ(w.Turns().size(), 3u);
  EXPECT_EQ(w.Turns()[2].message().text(), "three");
  EXPECT_FALSE(Only().window_closed());
}

// A link blip: the worker comes back within the grace with its turn still
// running. Nothing runs twice, and its result counts once.
TEST_F(CoordinatorTest, AWorkerBackWithinTheGraceKeepsItsRunningTurn) {
  RecordingChannel w1, w2, w1b;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.g", "111111111", "hello")});
  ASSERT_EQ(w1.Turns().size(), 1u);
  const v1::Turn t = w1.Turns()[0];
  AttachWorker(&w2, "w2");
  coordinator_->Detach(&w1, "stream broke");
  EXPECT_EQ(coordinator_->ListWorkers(true)[0].state(), v1::WORKER_STATE_LOST);
  Reattach(&w1b, "w1", {t});
  coordinator_->Heartbeat(&w1b, {});
  coordinator_->Heartbeat(&w2, {});
  coordinator_->Tick(absl::Now() + CoordinatorOptions().reattach_grace + absl::Seconds(1));
  EXPECT_TRUE(w2.Turns().empty());
  EXPECT_TRUE(w1b.Turns().empty());  // not sent again: it is running there
  Done(&w1b, t);
  Flush();
  EXPECT_EQ(Only().turns_done(), 1);
  EXPECT_EQ(w1b.Count(v1::ControllerMessage::kResultAck), 1);
}

// A worker restarted under the same id (systemd, --worker_id) within the
// grace: it runs nothing and holds nothing, so its turn runs again.
TEST_F(CoordinatorTest, AWorkerBackUnderTheSameIdButEmptyGetsItsTurnAgain) {
  RecordingChannel w1, w1b;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.r", "111111111", "hello")});
  ASSERT_EQ(w1.Turns().size(), 1u);
  coordinator_->Detach(&w1, "crashed");
  Reattach(&w1b, "w1", {});
  ASSERT_EQ(w1b.Turns().size(), 1u);
  EXPECT_EQ(w1b.Turns()[0].message().text(), "hello");
  EXPECT_EQ(w1b.Count(v1::ControllerMessage::kAssign), 1);  // it forgot the session too
}

// kill -9 of the controller mid-turn: after the restart, the worker that ran
// the turn says so (its result was lost with the old stream). The other
// worker, attaching first, must not run it again; the answer counts once.
TEST_F(CoordinatorTest, AfterARestartFinishedAndRunningTurnsAreNotRunAgain) {
  RecordingChannel w1, w2;
  AttachWorker(&w1, "w1");
  AttachWorker(&w2, "w2");
  Deliver({Text("wamid.k1", "111111111", "one"), Text("wamid.k2", "222222222", "two"),
           Text("wamid.k3", "111111111", "three")});
  std::vector<v1::Turn> all = w1.Turns();
  for (const auto& t : w2.Turns()) all.push_back(t);
  ASSERT_EQ(all.size(), 2u);
  Flush();
  Open();  // the controller restarts; its streams are gone
  RecordingChannel n1, n2;
  AttachWorker(&n2, "fresh");  // a worker that held nothing attaches first
  EXPECT_TRUE(n2.Turns().empty()) << "turns of workers that may come back were re-run";
  // Each old worker comes back: one finished its turn, one still runs it.
  const std::string w1_turn_session = w1.Turns()[0].session_id();
  Reattach(&n1, "w1", {}, {Result(w1.Turns()[0], {Sent("wamid.out1", v1::SENT_KIND_TEXT, "hi")})});
  RecordingChannel n3;
  Reattach(&n3, "w2", {w2.Turns()[0]});
  Flush();
  EXPECT_EQ(n1.Count(v1::ControllerMessage::kResultAck), 1);  // once durable
  // The finished session's next message goes on; the running one waits.
  ASSERT_EQ(n1.Turns().size(), 1u);
  EXPECT_EQ(n1.Turns()[0].message().text(), "three");
  EXPECT_TRUE(n3.Turns().empty());
  EXPECT_TRUE(n2.Turns().empty());
  Done(&n3, w2.Turns()[0]);
  v1::ListSessionsRequest all_req;
  for (const auto& s : coordinator_->ListSessions(all_req)) {
    EXPECT_EQ(s.turns_done(), 1) << s.session_id();
  }
}

TEST_F(CoordinatorTest, SessionsOfAWorkerThatNeverComesBackMoveAfterTheGrace) {
  RecordingChannel w1;
  AttachWorker(&w1, "w1");
  Deliver({Text("wamid.n1", "111111111", "one")});
  Flush();
  Open();
  RecordingChannel w2;
  AttachWorker(&w2, "w2");
  EXPECT_TRUE(w2.Turns().empty());
  coordinator_->Heartbeat(&w2, {});
  coordinator_->Tick(absl::Now() + CoordinatorOptions().reattach_grace + absl::Seconds(1));
  ASSERT_EQ(w2.Turns().size(), 1u);
  EXPECT_EQ(w2.Turns()[0].message().text(), "one");
}

// A turn that keeps losing its worker becomes the short apology; an apology
// that keeps failing is recorded as unanswered. Never silent, never a loop.
TEST_F(CoordinatorTest, ATurnOutOfAttemptsBecomesOneApology) {
  Deliver({Text("wamid.p", "111111111", "poison")});
  std::vector<v1::TurnAction> actions;
  for (int i = 0; i < 2 * CoordinatorOptions().max_turn_attempts + 2; ++i) {
    RecordingChannel w;
    AttachWorker(&w, absl::StrCat("w", i));
    for (const auto& t : w.Turns()) actions.push_back(t.action());
    v1::WorkerMessage bye;
    coordinator_->OnLeaving(&w, v1::WorkerLeaving());
    coordinator_->Detach(&w, "crashed");
  }
  const int max = CoordinatorOptions().max_turn_attempts;
  ASSERT_EQ(actions.size(), static_cast<size_t>(2 * max));
  for (int i = 0; i < max; ++i) EXPECT_EQ(actions[i], v1::TURN_ACTION_REPLY);
  for (int i = max; i < 2 * max; ++i) EXPECT_EQ(actions[i], v1::TURN_ACTION_APOLOGIZE);
  v1::Session s = Only();
  EXPECT_EQ(s.turns_pending(), 0);
  EXPECT_EQ(s.turns_failed(), 1);
  EXPECT_THAT(s.last_error(), ::testing::HasSubstr("the user was not told"));
}

// A drained worker that re-attaches (a link blip, a new leader) says it is
// draining, and stays so: nothing new is assigned to it.
TEST_F(CoordinatorTest, ADrainedWorkerStaysDrainedWhenItReattaches) {
  RecordingChannel drained, other;
  v1::WorkerHello hello;
  hello.set_worker_id("w-drained");
  hello.set_capacity(10);
  hello.set_draining(true);
  ASSERT_TRUE(coordinator_->Attach(&drained, hello).ok());
  AttachWorker(&other, "w-other");
  Deliver({Text("wamid.d1", "111111111", "hi")});
  EXPECT_TRUE(drained.Turns().empty());
  ASSERT_EQ(other.Turns().size(), 1u);
  for (const v1::Worker& w : coordinator_->ListWorkers(false)) {
    EXPECT_EQ(w.state(), w.worker_id() == "w-drained" ? v1::WORKER_STATE_DRAINING
                                                       : v1::WORKER_STATE_SERVING)
        << w.worker_id();
  }
}

TEST_F(CoordinatorTest, AWorkerLeavingHandsItsTurnBackAtOnce) {
  RecordingChannel w1, w2;
  AttachWorker(&w1, "w1");
  AttachWorker(&w2, "w2");
  Deliver({Text("wamid.l", "111111111", "hi")});
  RecordingChannel* first = w1.Turns().empty() ? &w2 : &w1;
  RecordingChannel* other = first == &w1 ? &w2 : &w1;
  ASSERT_EQ(first->Turns().size(), 1u);
  coordinator_->OnLeaving(first, v1::WorkerLeaving());
  Done(first, first->Turns()[0], v1::TURN_OUTCOME_HANDED_BACK);
  ASSERT_EQ(other->Turns().size(), 1u);  // no heartbeat timeout, no grace
  EXPECT_EQ(other->Turns()[0].message().text(), "hi");
}

TEST_F(CoordinatorTest, OverTheBoundDeliveriesAreRefusedAndNothingIsRecorded) {
  CoordinatorOptions o;
  o.max_pending_turns = 2;
  coordinator_ = std::make_unique<Coordinator>(store_.get(), o);
  ASSERT_TRUE(coordinator_->Load().ok());
  Deliver({Text("wamid.b1", "111111111", "one"), Text("wamid.b2", "222222222", "two")});
  v1::DeliverRequest req;
  *req.add_events() = Text("wamid.b3", "333333333", "three");
  absl::Notification done;
  absl::Status status;
  coordinator_->Ingest(req, [&](absl::StatusOr<v1::DeliverResponse> r) {
    status = r.status();
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_EQ(coordinator_->ListSessions({}).size(), 2u);
  // Once a worker catches up, the same delivery is accepted.
  RecordingChannel w;
  AttachWorker(&w, "w1");
  for (const auto& t : w.Turns()) Done(&w, t);
  EXPECT_EQ(Deliver({Text("wamid.b3", "333333333", "three")}).accepted(), 1);
}

TEST_F(CoordinatorTest, EndedSessionsLeaveMemoryAfterTheRetention) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  constexpr int kSessions = 1000;
  for (int i = 0; i < kSessions; ++i) {
    Deliver({Text(absl::StrCat("wamid.e", i), absl::StrCat("1000000", i), "hi")});
  }
  for (const auto& t : w.Turns()) Done(&w, t);
  for (const auto& s : coordinator_->ListSessions({})) {
    ASSERT_TRUE(coordinator_->EndSession(s.session_id(), "test").ok());
  }
  v1::ListSessionsRequest all;
  all.set_include_ended(true);
  EXPECT_EQ(coordinator_->ListSessions(all).size(), static_cast<size_t>(kSessions));
  coordinator_->Heartbeat(&w, {});
  coordinator_->Tick(absl::Now() + CoordinatorOptions().ended_retention + absl::Seconds(1));
  EXPECT_TRUE(coordinator_->ListSessions(all).empty());
  // A retried delivery of an evicted session's message is still a duplicate.
  EXPECT_EQ(Deliver({Text("wamid.e7", "10000007", "hi")}).duplicates(), 1);
}

// Watchers hear events outside the coordinator's lock: one that calls back
// in (as a slow or naive client would) neither deadlocks nor misses events.
TEST_F(CoordinatorTest, WatchersMayCallBackIn) {
  std::vector<v1::SessionEventType> seen;
  int id = coordinator_->Watch([&](const v1::SessionEvent& ev) {
    seen.push_back(ev.type());
    (void)coordinator_->ListSessions({});
  }, false);
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.w", "111111111", "hi")});
  ASSERT_EQ(w.Turns().size(), 1u);
  ASSERT_TRUE(coordinator_->EndSession(w.Turns()[0].session_id(), "test").ok());
  coordinator_->Unwatch(id);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), v1::SESSION_EVENT_TYPE_ENDED);
}

TEST(ResendPolicy, OnlyFailuresThatATextWouldSurviveAreResent) {
  EXPECT_TRUE(ResendsVoiceAsText(131053));
  EXPECT_TRUE(ResendsVoiceAsText(131026));
  EXPECT_TRUE(ResendsVoiceAsText(131062));
  EXPECT_FALSE(ResendsVoiceAsText(131047));
  EXPECT_FALSE(ResendsVoiceAsText(190));
}


// --- Issue #13: coalescing, transcript, memory, takeover, erasure ---------

v1::TurnResult Said(const v1::Turn& t, const std::string& user, const std::string& agent) {
  v1::TurnResult r;
  r.set_session_id(t.session_id());
  r.set_turn_id(t.turn_id());
  r.set_outcome(v1::TURN_OUTCOME_DONE);
  r.set_conversation_id("conv_" + t.turn_id());
  *r.mutable_coalesced_turn_ids() = t.coalesced_turn_ids();
  v1::TranscriptLine* u = r.add_lines();
  u->set_speaker(v1::SPEAKER_USER);
  u->set_text(user);
  u->set_message_id(t.message().message_id());
  v1::TranscriptLine* a = r.add_lines();
  a->set_speaker(v1::SPEAKER_AGENT);
  a->set_text(agent);
  r.mutable_latency()->set_agent_done_ms(120);
  return r;
}

std::vector<std::string> ContextOf(RecordingChannel* ch) {
  std::vector<std::string> context;
  for (const auto& m : ch->Messages()) {
    if (m.has_assign()) context.assign(m.assign().recent_transcript().begin(),
                                       m.assign().recent_transcript().end());
  }
  return context;
}

TEST_F(CoordinatorTest, MessagesThatArriveDuringATurnAreAnsweredTogether) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.c1", "111111111", "one")});
  Deliver({Text("wamid.c2", "111111111", "two")});
  Deliver({Text("wamid.c3", "111111111", "three")});
  ASSERT_EQ(w.Turns().size(), 1u);  // one runs; two wait
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "one", "1"));
  ASSERT_EQ(w.Turns().size(), 2u);
  const v1::Turn both = w.Turns()[1];
  EXPECT_EQ(both.message().text(), "two");
  ASSERT_EQ(both.coalesced_size(), 1);
  EXPECT_EQ(both.coalesced(0).text(), "three");
  // Handed back: the two go back as they came, and join again.
  v1::TurnResult back = Result(both);
  back.set_outcome(v1::TURN_OUTCOME_HANDED_BACK);
  coordinator_->OnTurnResult(&w, back);
  ASSERT_EQ(w.Turns().size(), 3u);
  EXPECT_EQ(w.Turns()[2].coalesced_turn_ids(0), both.coalesced_turn_ids(0));
  coordinator_->OnTurnResult(&w, Said(w.Turns()[2], "two\nthree", "2+3"));
  Flush();
  EXPECT_EQ(Only().turns_pending(), 0);
  EXPECT_EQ(Only().turns_done(), 2);
}

TEST_F(CoordinatorTest, WithoutCoalescingEachMessageIsATurn) {
  options_.coalesce = false;
  Open();
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.n1", "111111111", "one"), Text("wamid.n2", "111111111", "two")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "one", "1"));
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].coalesced_size(), 0);
  Flush();  // the result's acknowledgement goes to `w` before it goes
}

// Exchanges are recorded durably per user, with their latency, and the
// user's next conversation (a new session, after a restart) gets them.
TEST_F(CoordinatorTest, TheTranscriptAndTheMemoryOutliveTheSessionAndARestart) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.m1", "111111111", "my name is Ana")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "my name is Ana", "Hello Ana"));
  Flush();
  const std::string sid = Only().session_id();
  ASSERT_TRUE(coordinator_->EndSession(sid, "test").ok());
  Flush();
  Open();  // a restart: memory comes back from the store
  RecordingChannel w2;
  AttachWorker(&w2, "w2");
  Deliver({Text("wamid.m2", "111111111", "what is my name?")});
  EXPECT_THAT(ContextOf(&w2), ::testing::ElementsAre("user: my name is Ana", "agent: Hello Ana"));
  v1::ListSessionsRequest live;
  auto sessions = coordinator_->ListSessions(live);
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].memory_turns_used(), 1);

  v1::GetTranscriptRequest by_session;
  by_session.set_session_id(sid);
  auto t = coordinator_->GetTranscript(by_session);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->entries_size(), 1);
  const v1::TranscriptEntry& e = t->entries(0);
  EXPECT_EQ(e.lines(0).text(), "my name is Ana");
  EXPECT_EQ(e.lines(0).message_id(), "wamid.m1");
  EXPECT_EQ(e.lines(1).speaker(), v1::SPEAKER_AGENT);
  EXPECT_EQ(e.outcome(), v1::TURN_OUTCOME_DONE);
  EXPECT_EQ(e.latency().agent_done_ms(), 120);
  EXPECT_GE(e.latency().queue_ms(), 0);
  EXPECT_EQ(e.wa_id(), "1111**111");  // masked unless revealed
  v1::GetTranscriptRequest by_user;
  by_user.set_phone_number_id("106540352242922");
  by_user.set_user("111111111");
  auto u = coordinator_->GetTranscript(by_user);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->entries_size(), 1);
}

TEST_F(CoordinatorTest, MemoryKeepsTheLastTurnsOnly) {
  options_.memory_turns = 2;
  Open();
  RecordingChannel w;
  AttachWorker(&w, "w1");
  for (int i = 0; i < 3; ++i) {
    Deliver({Text(absl::StrCat("wamid.k", i), "111111111", absl::StrCat("q", i))});
    coordinator_->OnTurnResult(&w, Said(w.Turns().back(), absl::StrCat("q", i), "a"));
  }
  Flush();
  ASSERT_TRUE(coordinator_->EndSession(Only().session_id(), "test").ok());
  Deliver({Text("wamid.k9", "111111111", "again")});  // a new session
  EXPECT_EQ(w.Count(v1::ControllerMessage::kAssign), 2);
  EXPECT_THAT(ContextOf(&w), ::testing::ElementsAre("user: q1", "agent: a", "user: q2", "agent: a"));
}

TEST_F(CoordinatorTest, ExchangesExpireAfterTheRetention) {
  options_.transcript_retention = absl::Microseconds(1);
  Open();
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.x1", "111111111", "hi")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "hi", "hello"));
  Flush();
  ASSERT_TRUE(store_->ExpireNow().ok());
  v1::GetTranscriptRequest req;
  req.set_session_id(Only().session_id());
  auto t = coordinator_->GetTranscript(req);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->entries_size(), 0);
}

TEST_F(CoordinatorTest, ATakenOverSessionRecordsUserMessagesAndSendsTheOperatorsText) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  std::vector<v1::SessionEvent> events;
  absl::Mutex mu;
  int watch = coordinator_->Watch([&](const v1::SessionEvent& ev) {
    absl::MutexLock l(&mu);
    events.push_back(ev);
  }, false);
  Deliver({Text("wamid.t1", "111111111", "hi")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "hi", "hello"));
  const std::string sid = Only().session_id();
  EXPECT_FALSE(coordinator_->Say(sid, "not yet").ok());  // not taken over
  auto taken = coordinator_->TakeOver(sid, "maria");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->state(), v1::SESSION_STATE_HUMAN);
  EXPECT_EQ(taken->operator_(), "maria");
  EXPECT_FALSE(coordinator_->TakeOver(sid, "john").ok());  // held by maria
  Deliver({Text("wamid.t2", "111111111", "are you a person?")});
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_RECORD);
  coordinator_->OnTurnResult(&w, Said(w.Turns()[1], "are you a person?", ""));
  auto said = coordinator_->Say(sid, "Yes, I am Maria.");
  ASSERT_TRUE(said.ok()) << said.status();
  ASSERT_EQ(w.Turns().size(), 3u);
  EXPECT_EQ(w.Turns()[2].action(), v1::TURN_ACTION_OPERATOR_SAY);
  EXPECT_EQ(w.Turns()[2].text(), "Yes, I am Maria.");
  EXPECT_EQ(w.Turns()[2].operator_(), "maria");
  EXPECT_EQ(w.Turns()[2].turn_id(), said->turn_id());
  coordinator_->OnTurnResult(&w, Result(w.Turns()[2]));
  auto back = coordinator_->HandBack(sid);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->operator_(), "");
  Deliver({Text("wamid.t3", "111111111", "thanks")});
  EXPECT_EQ(w.Turns()[3].action(), v1::TURN_ACTION_REPLY);
  coordinator_->Unwatch(watch);
  absl::MutexLock l(&mu);
  int transcripts = 0;
  for (const auto& ev : events) {
    if (ev.type() != v1::SESSION_EVENT_TYPE_TRANSCRIPT) continue;
    ++transcripts;
    EXPECT_EQ(ev.transcript().wa_id(), "1111**111");
  }
  EXPECT_EQ(transcripts, 2);  // the operator's send has no lines here (Result)
}

TEST_F(CoordinatorTest, TakingOverStopsTheAgentsReplyInProgress) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.p1", "111111111", "tell me a long story")});  // in flight
  const std::string sid = Only().session_id();
  ASSERT_TRUE(coordinator_->TakeOver(sid, "maria").ok());
  ASSERT_EQ(w.Count(v1::ControllerMessage::kEndSession), 1);  // the worker stops it there
  EXPECT_EQ(Only().worker_id(), "");
  v1::TurnResult stopped = Said(w.Turns()[0], "tell me a long story", "");
  stopped.set_outcome(v1::TURN_OUTCOME_FAILED);
  stopped.set_reason("session ended");
  coordinator_->OnTurnResult(&w, stopped);
  Deliver({Text("wamid.p2", "111111111", "hello?")});
  ASSERT_EQ(w.Turns().size(), 2u);
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_RECORD);
  EXPECT_EQ(w.Count(v1::ControllerMessage::kAssign), 2);  // a fresh assignment for the person
  coordinator_->OnTurnResult(&w, Said(w.Turns()[1], "hello?", ""));
  Flush();
}

TEST_F(CoordinatorTest, AReplyThatLandsAfterItsSessionEndedIsStillInTheTranscript) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.l1", "111111111", "hi")});  // in flight
  const std::string sid = Only().session_id();
  ASSERT_TRUE(coordinator_->EndSession(sid, "test").ok());
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "hi", "hello"));  // the reply went out
  Flush();
  v1::GetTranscriptRequest req;
  req.set_session_id(sid);
  auto t = coordinator_->GetTranscript(req);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->entries_size(), 1);
  EXPECT_EQ(t->entries(0).conversation_id(), "conv_" + w.Turns()[0].turn_id());
}

TEST_F(CoordinatorTest, AHeldMessageHandedBackAfterTheHandBackIsAnswered) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.r0", "111111111", "hi")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "hi", "hello"));
  const std::string sid = Only().session_id();
  ASSERT_TRUE(coordinator_->TakeOver(sid, "maria").ok());
  Deliver({Text("wamid.r1", "111111111", "anyone?")});
  ASSERT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_RECORD);
  ASSERT_TRUE(coordinator_->HandBack(sid).ok());
  v1::TurnResult back = Result(w.Turns()[1]);  // the worker could not run it (draining)
  back.set_outcome(v1::TURN_OUTCOME_HANDED_BACK);
  coordinator_->OnTurnResult(&w, back);
  ASSERT_EQ(w.Turns().size(), 3u);
  EXPECT_EQ(w.Turns()[2].action(), v1::TURN_ACTION_REPLY);  // the agent's again
  coordinator_->OnTurnResult(&w, Said(w.Turns()[2], "anyone?", "yes"));
  Flush();
}

TEST_F(CoordinatorTest, TheAgentsHandoffHoldsTheSessionForAPerson) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({Text("wamid.h1", "111111111", "I want a human")});
  ASSERT_EQ(w.Count(v1::ControllerMessage::kAssign), 1);
  EXPECT_EQ(w.Messages()[0].assign().handoff_tool(), "transfer_to_human");
  v1::TurnResult r = Said(w.Turns()[0], "I want a human", "Connecting you");
  r.set_handoff_requested(true);
  r.set_handoff_reason(R"({"reason":"asked"})");
  coordinator_->OnTurnResult(&w, r);
  EXPECT_EQ(Only().state(), v1::SESSION_STATE_NEEDS_HUMAN);
  EXPECT_EQ(Only().handoff_reason(), R"({"reason":"asked"})");
  Deliver({Text("wamid.h2", "111111111", "hello?")});
  EXPECT_EQ(w.Turns()[1].action(), v1::TURN_ACTION_RECORD);
  Flush();
  Open();  // it survives a restart
  EXPECT_EQ(Only().state(), v1::SESSION_STATE_NEEDS_HUMAN);
  ASSERT_TRUE(coordinator_->TakeOver(Only().session_id(), "maria").ok());
  EXPECT_EQ(Only().state(), v1::SESSION_STATE_HUMAN);
  EXPECT_EQ(Only().handoff_reason(), "");
}

TEST_F(CoordinatorTest, ForgetUserErasesEverythingButTheDedupKeys) {
  RecordingChannel w;
  AttachWorker(&w, "w1");
  Deliver({From("wamid.g1", "US.123", "111111111", v1::MESSAGE_TYPE_TEXT, "my name is Ana")});
  coordinator_->OnTurnResult(&w, Said(w.Turns()[0], "my name is Ana", "Hello Ana"));
  Deliver({From("wamid.g2", "US.123", "111111111")});  // queued behind nothing: in flight
  Flush();
  std::vector<std::string> conversations;
  auto f = coordinator_->ForgetUser("106540352242922", "111111111", &conversations);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->sessions_ended_size(), 1);
  EXPECT_EQ(f->transcript_entries_deleted(), 1);
  EXPECT_TRUE(f->memory_deleted());
  EXPECT_EQ(f->turns_deleted(), 1);
  EXPECT_EQ(f->links_deleted(), 1);
  EXPECT_THAT(conversations, ::testing::Contains("conv_" + w.Turns()[0].turn_id()));
  v1::ListSessionsRequest all;
  all.set_include_ended(true);
  EXPECT_TRUE(coordinator_->ListSessions(all).empty());
  v1::GetTranscriptRequest req;
  req.set_phone_number_id("106540352242922");
  req.set_user("US.123");
  EXPECT_EQ(coordinator_->GetTranscript(req)->entries_size(), 0);
  EXPECT_TRUE(store_->Range("h/")->empty());
  EXPECT_TRUE(store_->Range("r/")->empty());
  EXPECT_TRUE(store_->Range("s/")->empty());
  EXPECT_TRUE(store_->Range("t/")->empty());
  EXPECT_TRUE(store_->Range("l/")->empty());  // the BSUID <-> phone link
  EXPECT_TRUE(store_->Range("e/")->empty());  // recorded once ElevenLabs was asked:
  ASSERT_TRUE(coordinator_->RecordErasure("106540352242922", *f).ok());
  EXPECT_EQ(store_->Range("e/")->size(), 1u);
  EXPECT_FALSE(store_->Range("d/")->empty());  // a retried webhook stays a duplicate
  EXPECT_EQ(Deliver({From("wamid.g1", "US.123", "111111111")}).duplicates(), 1);
  // A new conversation starts without memory.
  Open();
  RecordingChannel w2;
  AttachWorker(&w2, "w2");
  Deliver({From("wamid.g3", "US.123", "111111111")});
  EXPECT_TRUE(ContextOf(&w2).empty());
}

}  // namespace
}  // namespace bridge::controller
