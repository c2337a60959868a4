// The worker's turn pipeline (SessionRunner) against a scripted agent and a
// fake Graph API: the delivery contract of docs/delivery-contract.md, turn by
// turn — the reply, or one apology, or a recorded reason; never silence,
// never two answers.
#include <fstream>
#include <sstream>

#include "fakes/fake_agent_session.h"
#include "fakes/fake_graph_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_runner.h"
#include "worker_metrics.h"

namespace bridge::media_worker {
namespace {

using testing::FakeAgent;
using testing::FakeAgentScript;
using testing::FakeGraphApi;
using ::testing::HasSubstr;
namespace v1 = ::bridge::v1;

constexpr char kApology[] =
    "Sorry, I'm having trouble answering right now. Please try again in a moment.";

class FixedTranscript final : public SpeechToText {
 public:
  absl::StatusOr<Transcript> Transcribe(const std::string&, const std::string&,
                                        const std::string&) override {
    return Transcript{"what time is it", "en"};
  }
};

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(BRIDGE_FIXTURES_DIR) + "/audio/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TurnPipelineTest : public ::testing::Test {
 protected:
  // Runs one turn of a fresh session against `script`.
  v1::TurnResult Run(FakeAgentScript script, const v1::Turn& turn) {
    agent_ = std::make_unique<FakeAgent>(std::move(script));
    TurnSettings settings;
    settings.read_receipts = false;
    settings.agent_linger = absl::ZeroDuration();
    settings.connect_attempts = 3;
    settings.greeting_wait = absl::Milliseconds(50);
    v1::SessionAssignment a;
    a.set_session_id("s_1");
    a.set_phone_number_id("106540352242922");
    a.set_wa_id("16505551234");
    runner_ = std::make_unique<SessionRunner>(
        a, settings, TurnServices{&graph_, &stt_, agent_->Starter(), &metrics_});
    return runner_->RunTurn(turn);
  }
  static v1::Turn Text(const std::string& text, v1::TurnAction action = v1::TURN_ACTION_REPLY) {
    v1::Turn t;
    t.set_session_id("s_1");
    t.set_turn_id("00000000000000000001");
    t.set_action(action);
    v1::InboundMessage* m = t.mutable_message();
    m->set_message_id("wamid.in1");
    m->set_phone_number_id("106540352242922");
    m->mutable_from()->set_wa_id("16505551234");
    m->set_type(v1::MESSAGE_TYPE_TEXT);
    m->set_text(text);
    return t;
  }
  v1::Turn Voice() {
    graph_.SetMedia(Fixture("voice_note_tone_440hz.ogg"));
    v1::Turn t = Text("");
    t.mutable_message()->set_type(v1::MESSAGE_TYPE_AUDIO);
    t.mutable_message()->mutable_media()->set_media_id("730111222333444");
    t.mutable_message()->mutable_media()->set_mime_type("audio/ogg; codecs=opus");
    t.mutable_message()->mutable_media()->set_voice(true);
    return t;
  }
  std::vector<std::string> Texts() {
    std::vector<std::string> out;
    for (const auto& s : graph_.sent()) {
      if (s.kind == "text") out.push_back(s.body);
    }
    return out;
  }

  FakeGraphApi graph_;
  FixedTranscript stt_;
  WorkerMetrics metrics_;
  std::unique_ptr<FakeAgent> agent_;
  std::unique_ptr<SessionRunner> runner_;  // after agent_: its sessions go first
};

TEST_F(TurnPipelineTest, ATextGetsTheAgentsWholeReply) {
  v1::TurnResult r = Run({}, Text("hello"));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(Texts(), ::testing::ElementsAre("You said: hello"));
  ASSERT_EQ(r.sent_size(), 1);
  EXPECT_EQ(r.sent(0).kind(), v1::SENT_KIND_TEXT);
}

TEST_F(TurnPipelineTest, AVoiceNoteGetsAVoiceNote) {
  v1::TurnResult r = Run({}, Voice());
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  ASSERT_EQ(graph_.sent().size(), 1u);
  EXPECT_EQ(graph_.sent()[0].kind, "voice");
  EXPECT_THAT(agent_->heard(), ::testing::Contains("what time is it"));
}

// Uploads keep failing while text sending works: the reply comes as text.
TEST_F(TurnPipelineTest, UploadsFailingGiveTheReplyAsText) {
  graph_.FailUploads(10);
  v1::TurnResult r = Run({}, Voice());
  EXPECT_THAT(Texts(), ::testing::ElementsAre("You said: what time is it"));
  EXPECT_EQ(graph_.sent().size(), 1u);  // no voice note, no apology besides
  ASSERT_EQ(r.sent_size(), 1);
  EXPECT_EQ(r.sent(0).kind(), v1::SENT_KIND_TEXT);
}

// The agent closes before a word (1011 server error, 1006 abnormal, 1008
// policy): one apology, and the turn says why.
TEST_F(TurnPipelineTest, AnAgentClosingBeforeAnsweringGetsOneApology) {
  for (int code : {1011, 1006, 1008}) {
    graph_.ForgetSent();
    FakeAgentScript s;
    s.close_before_reply = code;
    v1::TurnResult r = Run(s, Text("hello"));
    EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_FAILED) << code;
    EXPECT_THAT(Texts(), ::testing::ElementsAre(kApology)) << code;
    EXPECT_FALSE(r.reason().empty());
  }
}

// Cut mid-reply: what was said is the reply (ReplyEnd::kClosed), no apology.
TEST_F(TurnPipelineTest, AReplyCutByACloseIsDeliveredAsFarAsItWasSaid) {
  FakeAgentScript s;
  s.close_mid_reply = true;
  v1::TurnResult r = Run(s, Text("hello there"));
  ASSERT_EQ(Texts().size(), 1u);
  EXPECT_THAT(std::string("You said: hello there"), ::testing::StartsWith(Texts()[0]));
  EXPECT_NE(Texts()[0], kApology);
}

TEST_F(TurnPipelineTest, AConnectThatFailsOnceIsRetried) {
  FakeAgentScript s;
  s.connect_failures = 1;
  v1::TurnResult r = Run(s, Text("hello"));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_EQ(agent_->starts(), 2);
  EXPECT_THAT(Texts(), ::testing::ElementsAre("You said: hello"));
}

TEST_F(TurnPipelineTest, AnAgentThatNeverConnectsGetsOneApologyAfterTheBudget) {
  FakeAgentScript s;
  s.connect_failures = 100;
  v1::TurnResult r = Run(s, Text("hello"));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_FAILED);
  EXPECT_EQ(agent_->starts(), 3);  // connect_attempts
  EXPECT_THAT(Texts(), ::testing::ElementsAre(kApology));
}

TEST_F(TurnPipelineTest, ARefusingAgentIsNotRetriedAndTheUserIsTold) {
  FakeAgentScript s;
  s.refuse = true;
  v1::TurnResult r = Run(s, Text("hello"));
  EXPECT_EQ(agent_->starts(), 1);
  EXPECT_THAT(Texts(), ::testing::ElementsAre(kApology));
  EXPECT_THAT(r.reason(), HasSubstr("refused"));
}

// The Graph API is down for longer than one call's retries: the reply is
// sent again within the delivery budget, once.
TEST_F(TurnPipelineTest, ASendFailingTransientlyIsTriedAgainWithinTheBudget) {
  graph_.FailTexts(1);
  v1::TurnResult r = Run({}, Text("hello"));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(Texts(), ::testing::ElementsAre("You said: hello"));
}

// A send that may have gone out is neither repeated nor apologised for.
TEST_F(TurnPipelineTest, ASendWithAnUnknownOutcomeIsNotFollowedByAnything) {
  graph_.TimeOutNextText();
  v1::TurnResult r = Run({}, Text("hello"));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_FAILED);
  EXPECT_TRUE(Texts().empty());
  EXPECT_EQ(agent_->starts(), 1);
}

// The controller gave up on the turn (it kept losing its worker): only the
// apology, and no agent conversation for it.
TEST_F(TurnPipelineTest, AnApologizeTurnSendsOnlyTheApology) {
  v1::TurnResult r = Run({}, Text("hello", v1::TURN_ACTION_APOLOGIZE));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(Texts(), ::testing::ElementsAre(kApology));
  EXPECT_EQ(agent_->starts(), 0);
}

}  // namespace
}  // namespace bridge::media_worker
