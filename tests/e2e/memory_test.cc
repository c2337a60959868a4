// Issue #13 end to end, with the real controller, workers and gateway and
// both simulators: memory across conversations (after EndSession and after
// kill -9 of the worker), the transcript with its latency stages, human
// takeover and the agent's handoff, erasure, the transcript webhook, and
// coalescing of a burst. Waits are on events (the outbox long poll, the
// simulators' records, the Sessions API), never a sleep.
#include <signal.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "bridge_cluster.h"
#include "common/call_auth.h"
#include "common/hub_signature.h"
#include "gmock/gmock.h"
#include "grpc_probe.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::bridge::v1;

constexpr char kUser[] = "15551230013";
constexpr char kBusiness[] = "106540352242922";  // whatsapp-sim's phone_number_id
constexpr absl::Duration kAwait = absl::Seconds(60);

// One Sessions RPC as an operator.
template <typename Req, typename Resp>
Resp Operator(BridgeCluster& c,
              grpc::Status (v1::Sessions::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
              const Req& req, grpc::Status* status = nullptr) {
  auto stub = v1::Sessions::NewStub(
      grpc::CreateChannel(c.controller_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  AttachToken(&ctx, c.admin_token());
  Resp resp;
  grpc::Status s = ((*stub).*method)(&ctx, req, &resp);
  if (status != nullptr) *status = s;
  else EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

v1::GetTranscriptResponse Transcript(BridgeCluster& c, const std::string& session_id) {
  v1::GetTranscriptRequest req;
  req.set_session_id(session_id);
  return Operator(c, &v1::Sessions::Stub::GetTranscript, req);
}

// Polls an event source until `done` holds (or the hang guard passes).
bool Await(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + kAwait;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(50));  // a bounded poll of the event source
  }
  return false;
}

// The conversation in which the agent was sent `text`.
json ConversationThatHeard(BridgeCluster& c, int min_count, const std::string& text) {
  const json all = c.Conversations(min_count);  // kept: the loop reads into it
  for (const json& conv : all["conversations"]) {
    for (const json& m : conv.value("user_messages", json::array())) {
      if (m.get<std::string>().find(text) != std::string::npos) return conv;
    }
  }
  return json();
}

std::string ContextOf(const json& conv) {
  std::string all;
  for (const json& u : conv.value("contextual_updates", json::array())) {
    all += u.get<std::string>() + "\n";
  }
  return all;
}

void TwoExchanges(BridgeCluster& c) {
  c.UserSays(kUser, "text", "my name is Ana");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u) << c.Logs();
  c.UserSays(kUser, "text", "I like green tea");
  ASSERT_EQ(c.Outbox(kUser, 2).size(), 2u) << c.Logs();
  c.SessionsAfterTurns(2);
}

TEST(MemoryTest, ANewConversationAfterEndSessionHearsTheEarlierExchanges) {
  BridgeCluster c;
  TwoExchanges(c);
  const std::string first = c.Sessions()[0].session_id();
  ASSERT_TRUE(EndSession(c.controller_address(), first, c.admin_token()).ok());
  c.UserSays(kUser, "text", "what do you know about me?");
  ASSERT_EQ(c.Outbox(kUser, 3).size(), 3u) << c.Logs();
  const json conv = ConversationThatHeard(c, 2, "what do you know about me?");
  ASSERT_FALSE(conv.is_null()) << c.Conversations(1).dump();
  const std::string context = ContextOf(conv);
  EXPECT_THAT(context, HasSubstr("user: my name is Ana"));
  EXPECT_THAT(context, HasSubstr("agent: You said: my name is Ana"));
  EXPECT_THAT(context, HasSubstr("user: I like green tea"));
  const v1::Session now = c.AwaitSession([&](const v1::Session& s) {
    return s.session_id() != first && s.turns_done() == 1;
  });
  EXPECT_EQ(now.memory_turns_used(), 2);
}

TEST(MemoryTest, TheMemoryFollowsTheUserToAnotherWorkerAfterKillMinus9) {
  BridgeCluster c({.workers = 2});
  TwoExchanges(c);
  const std::string holder = c.Sessions()[0].worker_id();
  c.worker(holder == "w0" ? 0 : 1).Signal(SIGKILL);
  c.UserSays(kUser, "text", "do you remember me?");
  ASSERT_EQ(c.Outbox(kUser, 3).size(), 3u) << c.Logs();
  EXPECT_NE(c.Sessions()[0].worker_id(), holder);
  const json conv = ConversationThatHeard(c, 2, "do you remember me?");
  ASSERT_FALSE(conv.is_null());
  EXPECT_THAT(ContextOf(conv), HasSubstr("user: my name is Ana"));
  EXPECT_THAT(ContextOf(conv), HasSubstr("user: I like green tea"));
}

TEST(MemoryTest, TheTranscriptHoldsEachExchangeWithItsLatencyStages) {
  BridgeCluster c({.workers = 1});
  c.UserSays(kUser, "text", "hello there");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  ASSERT_EQ(c.Outbox(kUser, 2).size(), 2u);
  const v1::Session s = c.SessionsAfterTurns(2)[0];
  v1::GetTranscriptResponse t;
  ASSERT_TRUE(Await([&] { return (t = Transcript(c, s.session_id())).entries_size() == 2; }));
  const v1::TranscriptEntry& text = t.entries(0);
  ASSERT_GE(text.lines_size(), 2) << text.DebugString();
  EXPECT_EQ(text.lines(0).speaker(), v1::SPEAKER_USER);
  EXPECT_EQ(text.lines(0).text(), "hello there");
  EXPECT_FALSE(text.lines(0).message_id().empty());
  EXPECT_EQ(text.lines(1).speaker(), v1::SPEAKER_AGENT);
  EXPECT_EQ(text.lines(1).text(), "You said: hello there");
  EXPECT_EQ(text.outcome(), v1::TURN_OUTCOME_DONE);
  EXPECT_FALSE(text.conversation_id().empty());
  EXPECT_GT(text.latency().agent_first_audio_ms(), 0);
  EXPECT_GE(text.latency().agent_done_ms(), text.latency().agent_first_audio_ms());
  EXPECT_GT(text.latency().send_ms(), 0);
  EXPECT_GE(text.latency().total_ms(), text.latency().agent_done_ms());
  const v1::TranscriptEntry& voice = t.entries(1);
  EXPECT_THAT(voice.lines(0).text(), HasSubstr("peak 440 Hz"));  // its transcript
  EXPECT_EQ(voice.lines(0).content_type(), "audio");
  EXPECT_GT(voice.latency().download_ms(), 0);
  EXPECT_GT(voice.latency().decode_ms(), 0);
  EXPECT_GT(voice.latency().encode_ms(), 0);
  EXPECT_GT(voice.latency().upload_ms(), 0);
  // By user, too, and masked unless revealed.
  v1::GetTranscriptRequest by_user;
  by_user.set_phone_number_id(kBusiness);
  by_user.set_user(kUser);
  auto u = Operator(c, &v1::Sessions::Stub::GetTranscript, by_user);
  EXPECT_EQ(u.entries_size(), 2);
  EXPECT_NE(u.entries(0).wa_id(), kUser);
}

TEST(MemoryTest, ATakenOverSessionIsAPersonsUntilHandedBack) {
  BridgeCluster c({.workers = 1});
  c.UserSays(kUser, "text", "hi agent");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  const std::string id = c.SessionsAfterTurns(1)[0].session_id();
  v1::TakeOverRequest take;
  take.set_session_id(id);
  take.set_operator_("maria");
  EXPECT_EQ(Operator(c, &v1::Sessions::Stub::TakeOver, take).session().state(),
            v1::SESSION_STATE_HUMAN);
  c.UserSays(kUser, "text", "is a person there?");
  // Recorded for the operator, acknowledged, never given to the agent.
  ASSERT_TRUE(Await([&] { return Transcript(c, id).entries_size() == 2; })) << c.Logs();
  EXPECT_EQ(Transcript(c, id).entries(1).lines(0).text(), "is a person there?");
  v1::SayRequest say;
  say.set_session_id(id);
  say.set_text("Hi, this is Maria from the team.");
  Operator(c, &v1::Sessions::Stub::Say, say);
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump() << c.Logs();
  EXPECT_EQ(out[1]["text"], "Hi, this is Maria from the team.");
  v1::HandBackRequest back;
  back.set_session_id(id);
  Operator(c, &v1::Sessions::Stub::HandBack, back);
  c.UserSays(kUser, "text", "thanks, back to the bot");
  out = c.Outbox(kUser, 3);
  ASSERT_EQ(out.size(), 3u) << out.dump();
  EXPECT_EQ(out[2]["text"], "You said: thanks, back to the bot");
  const json conv = ConversationThatHeard(c, 2, "thanks, back to the bot");
  ASSERT_FALSE(conv.is_null());
  EXPECT_THAT(ContextOf(conv), HasSubstr("operator: Hi, this is Maria from the team."));
  EXPECT_TRUE(ConversationThatHeard(c, 1, "is a person there?").is_null());
}

TEST(MemoryTest, TheAgentsHandoffToolMakesTheSessionWaitForAPerson) {
  BridgeCluster c({.workers = 1, .controller_args = {"--handoff_message=A person will reply soon."}});
  c.UserSays(kUser, "text", "I want to talk to a human");
  const v1::Session s = c.AwaitSession(
      [](const v1::Session& s) { return s.state() == v1::SESSION_STATE_NEEDS_HUMAN; });
  EXPECT_EQ(s.state(), v1::SESSION_STATE_NEEDS_HUMAN) << c.Logs();
  EXPECT_THAT(s.handoff_reason(), HasSubstr("reason"));
  json out = c.Outbox(kUser, 1);
  int told = 0;
  for (const json& m : out) told += m.value("text", "") == "A person will reply soon.";
  EXPECT_EQ(told, 1) << out.dump();
  // The user writes again: recorded, not answered by the agent, not told again.
  c.UserSays(kUser, "text", "hello? anyone?");
  ASSERT_TRUE(Await([&] {
    const v1::GetTranscriptResponse t = Transcript(c, s.session_id());
    for (const auto& e : t.entries()) {
      if (e.lines_size() > 0 && e.lines(0).text() == "hello? anyone?") return true;
    }
    return false;
  }));
  EXPECT_TRUE(ConversationThatHeard(c, 1, "hello? anyone?").is_null());
  EXPECT_EQ(c.Outbox(kUser, 1).size(), out.size());
  EXPECT_TRUE(c.AwaitControllerMetric("bridge_controller_sessions_waiting_for_person 1"));
}

TEST(MemoryTest, ForgetUserErasesTheUserHereAndAtElevenLabs) {
  BridgeCluster c({.workers = 1});
  TwoExchanges(c);
  ASSERT_TRUE(EndSession(c.controller_address(), c.Sessions()[0].session_id(), c.admin_token()).ok());
  c.UserSays(kUser, "text", "one more");
  ASSERT_EQ(c.Outbox(kUser, 3).size(), 3u);
  c.SessionsAfterTurns(1);
  std::set<std::string> conversations;
  const json before = c.Conversations(2);
  for (const json& conv : before["conversations"]) {
    conversations.insert(conv["conversation_id"].get<std::string>());
  }
  v1::ForgetUserRequest forget;
  forget.set_phone_number_id(kBusiness);
  forget.set_user(kUser);
  const auto f = Operator(c, &v1::Sessions::Stub::ForgetUser, forget);
  EXPECT_EQ(f.sessions_ended_size(), 1);
  EXPECT_EQ(f.transcript_entries_deleted(), 3);
  EXPECT_TRUE(f.memory_deleted());
  EXPECT_EQ(f.conversations_failed_size(), 0);
  EXPECT_EQ(std::set<std::string>(f.conversations_deleted().begin(), f.conversations_deleted().end()),
            conversations);
  const json after = c.Conversations(2);
  for (const json& conv : after["conversations"]) {
    EXPECT_EQ(conv.value("deleted", false), true) << conv.dump();
  }
  v1::GetTranscriptRequest by_user;
  by_user.set_phone_number_id(kBusiness);
  by_user.set_user(kUser);
  EXPECT_EQ(Operator(c, &v1::Sessions::Stub::GetTranscript, by_user).entries_size(), 0);
  // The next conversation starts without memory.
  c.UserSays(kUser, "text", "hello again");
  ASSERT_EQ(c.Outbox(kUser, 4).size(), 4u);
  const json conv = ConversationThatHeard(c, 3, "hello again");
  ASSERT_FALSE(conv.is_null());
  EXPECT_EQ(ContextOf(conv), "");
}

// The business's receiver: fails the first request, then takes them all.
class Receiver {
 public:
  Receiver() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      absl::MutexLock lock(&mu_);
      requests_.push_back({req.get_header_value("Idempotency-Key"), req.body,
                           req.get_header_value("X-Bridge-Signature-256")});
      res.status = requests_.size() == 1 ? 500 : 200;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  struct Request {
    std::string key, body, signature;
  };
  std::vector<Request> AwaitRequests(size_t n) {
    absl::MutexLock lock(&mu_);
    std::pair<std::vector<Request>*, size_t> want(&requests_, n);
    mu_.AwaitWithTimeout(absl::Condition(
        +[](std::pair<std::vector<Request>*, size_t>* a) { return a->first->size() >= a->second; },
        &want), kAwait);
    return requests_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
};

TEST(MemoryTest, EachFinishedTurnIsPostedSignedAndRetriedAfterAFailure) {
  Receiver hook;
  BridgeCluster c({.workers = 1,
                   .controller_args = {absl::StrCat("--transcript_webhook_url=", hook.url()),
                                       "--transcript_webhook_secret=business-secret"}});
  TwoExchanges(c);
  // Three requests: the first turn's failed one, its retry, the second turn.
  auto got = hook.AwaitRequests(3);
  ASSERT_GE(got.size(), 3u);
  std::map<std::string, int> per_key;
  for (const auto& r : got) {
    ++per_key[r.key];
    EXPECT_EQ(VerifySignature("business-secret", r.body, r.signature), SignatureCheck::kValid);
    EXPECT_NE(VerifySignature("another-secret", r.body, r.signature), SignatureCheck::kValid);
    const json entry = json::parse(r.body);
    EXPECT_EQ(entry["lines"][0]["speaker"], "SPEAKER_USER");
    EXPECT_EQ(entry["wa_id"], kUser);  // the business's own data, unmasked
  }
  ASSERT_EQ(per_key.size(), 2u);  // one key per turn
  EXPECT_EQ(per_key[got[0].key], 2);  // failed, then delivered again with the same key
  EXPECT_TRUE(c.AwaitControllerMetric("bridge_controller_transcript_entries_total 2"));
}

TEST(MemoryTest, ABurstSentWhileTheAgentAnswersGetsOneMoreReplyNotThree) {
  BridgeCluster c({.workers = 1});
  c.PostAgentFault(R"({"stall_ms":2000})");  // the first answer takes a while
  c.UserSays(kUser, "text", "first");
  // Its turn is running: the agent has its conversation (and stalls).
  ASSERT_FALSE(c.Conversations(1)["conversations"].empty());
  c.UserSays(kUser, "text", "second");
  c.UserSays(kUser, "text", "third");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "You said: first");
  EXPECT_EQ(out[1]["text"], "You said: second\nthird");
  const auto sessions = c.SessionsAfterTurns(2);
  EXPECT_EQ(sessions[0].turns_done(), 2);
  EXPECT_TRUE(c.AwaitControllerMetric("bridge_controller_messages_coalesced_total 1"));
  EXPECT_EQ(c.Outbox(kUser, 2).size(), 2u);
}

TEST(MemoryTest, ExchangesArePurgedAfterTheRetention) {
  BridgeCluster c({.workers = 1, .controller_args = {"--transcript_retention=2s"}});
  c.UserSays(kUser, "text", "forget this soon");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  const std::string id = c.SessionsAfterTurns(1)[0].session_id();
  EXPECT_TRUE(Await([&] { return Transcript(c, id).entries_size() == 1; }));
  EXPECT_TRUE(Await([&] { return Transcript(c, id).entries_size() == 0; })) << c.Logs();
}


// What an operator types: bridgectl over the same API.
std::string Bridgectl(BridgeCluster& c, std::vector<std::string> args) {
  args.insert(args.begin(), absl::StrCat("--controller=", c.controller_address()));
  ChildProcess ctl(BRIDGECTL_BIN, args, {{"BRIDGE_ADMIN_TOKEN", c.admin_token()}});
  EXPECT_EQ(ctl.Wait().value_or(-1), 0) << ctl.Output();
  return ctl.Output();
}

TEST(MemoryTest, BridgectlShowsTheTranscriptTakesOverAndForgets) {
  BridgeCluster c({.workers = 1});
  c.UserSays(kUser, "text", "hello bridgectl");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  const std::string id = c.SessionsAfterTurns(1)[0].session_id();
  ASSERT_TRUE(Await([&] { return Transcript(c, id).entries_size() == 1; }));
  const std::string transcript = Bridgectl(c, {"transcript", id});
  EXPECT_THAT(transcript, HasSubstr("user:     hello bridgectl"));
  EXPECT_THAT(transcript, HasSubstr("agent:    You said: hello bridgectl"));
  EXPECT_THAT(transcript, HasSubstr("latency ms: queue"));
  EXPECT_THAT(Bridgectl(c, {"transcript", kUser, absl::StrCat("--phone_number_id=", kBusiness)}),
              HasSubstr("hello bridgectl"));
  EXPECT_THAT(Bridgectl(c, {"takeover", id, "--operator_name=ana"}), HasSubstr("SESSION_STATE_HUMAN"));
  Bridgectl(c, {"say", id, "Ana here."});
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[1]["text"], "Ana here.");
  EXPECT_THAT(Bridgectl(c, {"handback", id}), Not(HasSubstr("SESSION_STATE_HUMAN")));
  const std::string forgotten =
      Bridgectl(c, {"forget", kUser, absl::StrCat("--phone_number_id=", kBusiness)});
  EXPECT_THAT(forgotten, HasSubstr("sessions ended: 1"));
  EXPECT_THAT(forgotten, HasSubstr("ElevenLabs conversations deleted: 1"));
}

}  // namespace
}  // namespace bridge::testing
