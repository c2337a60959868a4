// The worker's turn pipeline (SessionRunner) beyond one message and one
// reply, against a scripted agent and a fake Graph API: messages coalesced
// into one agent turn, a conversation held by a person (RECORD,
// OPERATOR_SAY), the agent asking for one (the handoff client tool), and
// what every turn reports (its lines and latency).
#include <fstream>
#include <sstream>

#include "fakes/fake_agent_session.h"
#include "fakes/fake_graph_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_runner.h"
#include "turn_lines.h"
#include "worker_metrics.h"

namespace bridge::media_worker {
namespace {

using testing::FakeAgent;
using testing::FakeAgentScript;
using testing::FakeGraphApi;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace v1 = ::bridge::v1;

constexpr char kPhoneId[] = "106540352242922";
constexpr char kHandoffTool[] = "transfer_to_human";
constexpr char kHandoffMessage[] = "A person from our team will answer you here shortly.";

// Each note's words, in the order they are asked for.
class NumberedTranscripts final : public SpeechToText {
 public:
  absl::StatusOr<Transcript> Transcribe(const std::string&, const std::string&,
                                        const std::string&) override {
    absl::MutexLock l(&mu_);
    return Transcript{absl::StrCat("spoken words ", ++n_), "en"};
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(BRIDGE_FIXTURES_DIR) + "/audio/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A line as the tests compare it: who, what, which wamid, which type.
std::string Show(const v1::TranscriptLine& l) {
  return absl::StrCat(v1::Speaker_Name(l.speaker()), "|", l.text(), "|", l.message_id(), "|",
                      l.content_type());
}
std::vector<std::string> Lines(const v1::TurnResult& r) {
  std::vector<std::string> out;
  for (const auto& l : r.lines()) out.push_back(Show(l));
  return out;
}

class TurnFeaturesTest : public ::testing::Test {
 protected:
  TurnFeaturesTest() {
    settings_.read_receipts = true;
    settings_.agent_linger = absl::ZeroDuration();
    settings_.connect_attempts = 1;
    settings_.greeting_wait = absl::Milliseconds(50);
    settings_.input_pace = 0;  // stream mode: as fast as possible
    settings_.silence_tail_max = absl::Milliseconds(300);
    settings_.agent.reply_quiet_gap = absl::Milliseconds(200);
    assignment_.set_session_id("s_1");
    assignment_.set_phone_number_id(kPhoneId);
    assignment_.set_wa_id("16505551234");
    assignment_.set_handoff_tool(kHandoffTool);
    assignment_.set_handoff_message(kHandoffMessage);
  }

  // A session on `script` (one per test: the runner outlives its turns).
  void Start(FakeAgentScript script = {}) {
    agent_ = std::make_unique<FakeAgent>(std::move(script));
    runner_ = std::make_unique<SessionRunner>(
        assignment_, settings_, TurnServices{&graph_, &stt_, agent_->Starter(), &metrics_});
  }
  static v1::InboundMessage Message(const std::string& id, const std::string& text) {
    v1::InboundMessage m;
    m.set_message_id(id);
    m.set_phone_number_id(kPhoneId);
    m.mutable_from()->set_wa_id("16505551234");
    m.set_timestamp(1767225600);
    m.set_type(v1::MESSAGE_TYPE_TEXT);
    m.set_type_name("text");
    m.set_text(text);
    return m;
  }
  v1::InboundMessage VoiceMessage(const std::string& id) {
    graph_.SetMedia(Fixture("voice_note_tone_440hz.ogg"));
    v1::InboundMessage m = Message(id, "");
    m.set_type(v1::MESSAGE_TYPE_AUDIO);
    m.set_type_name("audio");
    m.mutable_media()->set_media_id("730111222333444");
    m.mutable_media()->set_mime_type("audio/ogg; codecs=opus");
    m.mutable_media()->set_voice(true);
    return m;
  }
  static v1::Turn TurnOf(const v1::InboundMessage& m,
                         v1::TurnAction action = v1::TURN_ACTION_REPLY) {
    static int n = 0;
    v1::Turn t;
    t.set_session_id("s_1");
    t.set_turn_id(absl::StrCat("turn_", ++n));
    t.set_action(action);
    *t.mutable_message() = m;
    return t;
  }
  std::vector<std::string> Texts() {
    std::vector<std::string> out;
    for (const auto& s : graph_.sent()) {
      if (s.kind == "text") out.push_back(s.body);
    }
    return out;
  }

  TurnSettings settings_;
  v1::SessionAssignment assignment_;
  FakeGraphApi graph_;
  NumberedTranscripts stt_;
  WorkerMetrics metrics_;
  std::unique_ptr<FakeAgent> agent_;
  std::unique_ptr<SessionRunner> runner_;  // after agent_: its sessions go first
};

// ---- coalescing ----

TEST_F(TurnFeaturesTest, CoalescedTextsAreOneUserMessageWithOneReply) {
  Start();
  v1::Turn turn = TurnOf(Message("wamid.in1", "hi"));
  *turn.add_coalesced() = Message("wamid.in2", "are you there?");
  *turn.add_coalesced() = Message("wamid.in3", "I have a question");
  turn.add_coalesced_turn_ids("t2");
  turn.add_coalesced_turn_ids("t3");
  v1::TurnResult r = runner_->RunTurn(turn);

  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(agent_->heard(), ElementsAre("hi\nare you there?\nI have a question"));
  const std::string reply = "You said: hi\nare you there?\nI have a question";
  EXPECT_THAT(Texts(), ElementsAre(reply));
  ASSERT_EQ(graph_.sent().size(), 1u);
  EXPECT_EQ(graph_.sent()[0].quote, "wamid.in3");  // the answer quotes the newest
  ASSERT_EQ(graph_.reads().size(), 1u);             // one receipt, for the newest
  EXPECT_EQ(graph_.reads()[0].message_id, "wamid.in3");
  EXPECT_TRUE(graph_.reads()[0].typing);
  EXPECT_THAT(Lines(r), ElementsAre("SPEAKER_USER|hi|wamid.in1|text",
                                    "SPEAKER_USER|are you there?|wamid.in2|text",
                                    "SPEAKER_USER|I have a question|wamid.in3|text",
                                    "SPEAKER_AGENT|" + reply + "|" + graph_.sent()[0].id + "|text"));
  EXPECT_EQ(r.lines(0).at().seconds(), 1767225600);  // the message's own time
  // The joined turns are settled with this result (the controller deletes
  // their queue records by these ids, also after a restart).
  EXPECT_THAT(r.coalesced_turn_ids(), ElementsAre("t2", "t3"));
}

// A text and a voice note that came together: the note transcribed, both in
// one user_message in arrival order, answered with a voice note.
TEST_F(TurnFeaturesTest, CoalescedVoiceNotesAreTranscribedAndJoinedInOrder) {
  Start();
  v1::Turn turn = TurnOf(VoiceMessage("wamid.in1"));
  *turn.add_coalesced() = Message("wamid.in2", "and also");
  *turn.add_coalesced() = VoiceMessage("wamid.in3");
  v1::TurnResult r = runner_->RunTurn(turn);

  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(agent_->heard(), ElementsAre("spoken words 1\nand also\nspoken words 2"));
  ASSERT_EQ(graph_.sent().size(), 1u);
  EXPECT_EQ(graph_.sent()[0].kind, "voice");
  ASSERT_EQ(r.lines_size(), 4);
  EXPECT_EQ(Show(r.lines(0)), "SPEAKER_USER|spoken words 1|wamid.in1|audio");
  EXPECT_EQ(Show(r.lines(1)), "SPEAKER_USER|and also|wamid.in2|text");
  EXPECT_EQ(Show(r.lines(2)), "SPEAKER_USER|spoken words 2|wamid.in3|audio");
  EXPECT_EQ(Show(r.lines(3)), "SPEAKER_AGENT|You said: spoken words 1\nand also\nspoken words 2|" +
                                  graph_.sent()[0].id + "|audio");
}

// Stream mode: the texts go first as one contextual update, then the note's
// audio; the agent's transcript of it is the note's line.
TEST_F(TurnFeaturesTest, StreamedBurstSendsTheTextsAsContextBeforeTheAudio) {
  settings_.voice_input = VoiceInput::kStream;
  FakeAgentScript s;
  s.audio_transcript = "what time is it";
  Start(s);
  v1::Turn turn = TurnOf(Message("wamid.in1", "hello"));
  *turn.add_coalesced() = Message("wamid.in2", "listen to this");
  *turn.add_coalesced() = VoiceMessage("wamid.in3");
  v1::TurnResult r = runner_->RunTurn(turn);

  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(agent_->context(), ElementsAre("The user also wrote: hello\nlisten to this"));
  EXPECT_THAT(agent_->heard(), ElementsAre("what time is it"));  // as audio, no user_message
  ASSERT_EQ(graph_.sent().size(), 1u);
  EXPECT_EQ(graph_.sent()[0].kind, "voice");
  ASSERT_EQ(r.lines_size(), 4);
  EXPECT_EQ(Show(r.lines(2)), "SPEAKER_USER|what time is it|wamid.in3|audio");
  EXPECT_EQ(r.lines(3).speaker(), v1::SPEAKER_AGENT);
  EXPECT_GT(r.latency().download_ms(), 0);
  EXPECT_GT(r.latency().decode_ms(), 0);
}

// ---- a person holds the conversation ----

TEST_F(TurnFeaturesTest, RecordMarksReadReportsAndNeverTellsTheAgent) {
  Start();
  v1::TurnResult r =
      runner_->RunTurn(TurnOf(Message("wamid.in1", "is anyone there?"), v1::TURN_ACTION_RECORD));

  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_EQ(agent_->starts(), 0);
  EXPECT_TRUE(graph_.sent().empty());
  EXPECT_EQ(r.sent_size(), 0);
  ASSERT_EQ(graph_.reads().size(), 1u);
  EXPECT_EQ(graph_.reads()[0].message_id, "wamid.in1");
  EXPECT_FALSE(graph_.reads()[0].typing);  // nobody is typing an answer
  EXPECT_THAT(Lines(r), ElementsAre("SPEAKER_USER|is anyone there?|wamid.in1|text"));
  EXPECT_TRUE(r.conversation_id().empty());

  // The next conversation hears it as context.
  r = runner_->RunTurn(TurnOf(Message("wamid.in2", "hello?")));
  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  ASSERT_FALSE(agent_->context().empty());
  EXPECT_THAT(agent_->context()[0], HasSubstr("user: is anyone there?"));
}

TEST_F(TurnFeaturesTest, RecordTranscribesAVoiceNoteAndClosesTheOpenConversation) {
  settings_.agent_linger = absl::Seconds(60);  // still open when the person takes over
  Start();
  ASSERT_EQ(runner_->RunTurn(TurnOf(Message("wamid.in1", "hi"))).outcome(),
            v1::TURN_OUTCOME_DONE);
  ASSERT_EQ(agent_->closes(), 0);
  graph_.ForgetSent();

  v1::TurnResult r = runner_->RunTurn(TurnOf(VoiceMessage("wamid.in2"), v1::TURN_ACTION_RECORD));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_EQ(agent_->closes(), 1);
  EXPECT_THAT(agent_->heard(), ElementsAre("hi"));  // the note never reached the agent
  EXPECT_TRUE(graph_.sent().empty());
  EXPECT_THAT(Lines(r), ElementsAre("SPEAKER_USER|spoken words 1|wamid.in2|audio"));
}

TEST_F(TurnFeaturesTest, OperatorSaySendsTheTextAndClosesTheAgent) {
  settings_.agent_linger = absl::Seconds(60);
  Start();
  ASSERT_EQ(runner_->RunTurn(TurnOf(Message("wamid.in1", "hi"))).outcome(),
            v1::TURN_OUTCOME_DONE);
  graph_.ForgetSent();

  v1::Turn say = TurnOf(Message("", ""), v1::TURN_ACTION_OPERATOR_SAY);
  say.set_text("Hi, this is Ana from support.");
  say.set_operator_("ana");
  v1::TurnResult r = runner_->RunTurn(say);

  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  ASSERT_EQ(graph_.sent().size(), 1u);
  EXPECT_EQ(graph_.sent()[0].body, "Hi, this is Ana from support.");
  EXPECT_EQ(graph_.sent()[0].quote, "");  // the business's own message, quoting nothing
  ASSERT_EQ(r.sent_size(), 1);
  EXPECT_EQ(r.sent(0).message_id(), graph_.sent()[0].id);
  EXPECT_THAT(Lines(r), ElementsAre("SPEAKER_OPERATOR|Hi, this is Ana from support.|" +
                                    graph_.sent()[0].id + "|text"));
  EXPECT_EQ(agent_->closes(), 1);
  EXPECT_THAT(agent_->heard(), ElementsAre("hi"));

  // Handed back: a new conversation, which knows what the operator said.
  r = runner_->RunTurn(TurnOf(Message("wamid.in2", "thanks")));
  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_EQ(agent_->starts(), 2);
  ASSERT_FALSE(agent_->context().empty());
  EXPECT_THAT(agent_->context().back(), HasSubstr("operator: Hi, this is Ana from support."));
  EXPECT_THAT(agent_->context().back(), HasSubstr("user: hi"));
}

TEST_F(TurnFeaturesTest, OperatorSayThatMayHaveBeenSentFailsWithoutAnythingMore) {
  Start();
  graph_.TimeOutNextText();
  v1::Turn say = TurnOf(Message("", ""), v1::TURN_ACTION_OPERATOR_SAY);
  say.set_text("Hello from a person.");
  v1::TurnResult r = runner_->RunTurn(say);
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_FAILED);
  EXPECT_FALSE(r.reason().empty());
  EXPECT_TRUE(graph_.sent().empty());  // no apology after an unknown outcome
  EXPECT_EQ(agent_->starts(), 0);
}

// ---- the agent asks for a person ----

TEST_F(TurnFeaturesTest, HandoffToolIsAnsweredAndTheUserToldOnce) {
  settings_.agent_linger = absl::Seconds(60);
  FakeAgentScript s;
  s.tool_call = kHandoffTool;
  s.tool_parameters = R"({"reason":"billing dispute"})";
  Start(s);
  v1::TurnResult r = runner_->RunTurn(TurnOf(Message("wamid.in1", "I want a human")));

  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  ASSERT_EQ(agent_->tool_results().size(), 1u);
  EXPECT_FALSE(agent_->tool_results()[0].is_error);
  EXPECT_FALSE(agent_->tool_results()[0].result.empty());
  EXPECT_THAT(Texts(), ElementsAre("You said: I want a human", kHandoffMessage));
  EXPECT_TRUE(r.handoff_requested());
  EXPECT_EQ(r.handoff_reason(), R"({"reason":"billing dispute"})");
  ASSERT_EQ(r.lines_size(), 3);
  EXPECT_EQ(r.lines(1).speaker(), v1::SPEAKER_AGENT);
  EXPECT_EQ(Show(r.lines(2)),
            absl::StrCat("SPEAKER_SYSTEM|", kHandoffMessage, "|", graph_.sent()[1].id, "|text"));
  EXPECT_EQ(agent_->closes(), 1);  // a person answers next: no lingering

  // The next turn does not inherit it.
  r = runner_->RunTurn(TurnOf(Message("wamid.in2", "hello?"), v1::TURN_ACTION_RECORD));
  EXPECT_FALSE(r.handoff_requested());
}

// The agent only calls the tool, without a word: the user gets the handoff
// message (not an apology), after a quiet gap rather than the reply timeout.
TEST_F(TurnFeaturesTest, HandoffWithoutAReplyStillTellsTheUser) {
  settings_.reply_timeout = absl::Seconds(30);
  FakeAgentScript s;
  s.tool_call = kHandoffTool;
  s.tool_call_only = true;
  Start(s);
  const absl::Time start = absl::Now();
  v1::TurnResult r = runner_->RunTurn(TurnOf(Message("wamid.in1", "human please")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  EXPECT_THAT(Texts(), ElementsAre(kHandoffMessage));
  EXPECT_TRUE(r.handoff_requested());
  EXPECT_EQ(r.handoff_reason(), "{}");
}

TEST_F(TurnFeaturesTest, AnUnknownClientToolStillGetsAnErrorResult) {
  FakeAgentScript s;
  s.tool_call = "open_door";
  Start(s);
  v1::TurnResult r = runner_->RunTurn(TurnOf(Message("wamid.in1", "open the door")));
  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  ASSERT_EQ(agent_->tool_results().size(), 1u);
  EXPECT_TRUE(agent_->tool_results()[0].is_error);
  EXPECT_FALSE(r.handoff_requested());
  EXPECT_THAT(Texts(), ElementsAre("You said: open the door"));
}

// Without --handoff_tool the same tool name is just another unknown tool.
TEST_F(TurnFeaturesTest, TheHandoffToolIsUnknownWhenNoneIsConfigured) {
  assignment_.clear_handoff_tool();
  FakeAgentScript s;
  s.tool_call = kHandoffTool;
  Start(s);
  v1::TurnResult r = runner_->RunTurn(TurnOf(Message("wamid.in1", "I want a human")));
  ASSERT_EQ(agent_->tool_results().size(), 1u);
  EXPECT_TRUE(agent_->tool_results()[0].is_error);
  EXPECT_FALSE(r.handoff_requested());
  EXPECT_THAT(Texts(), ElementsAre("You said: I want a human"));
}

// ---- latency ----

TEST_F(TurnFeaturesTest, ATextTurnReportsItsLatency) {
  Start();
  v1::TurnResult r = runner_->RunTurn(TurnOf(Message("wamid.in1", "hello")));
  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  const v1::TurnLatency& l = r.latency();
  EXPECT_GT(l.agent_first_audio_ms(), 0);
  EXPECT_GE(l.agent_done_ms(), l.agent_first_audio_ms());
  EXPECT_GT(l.agent_done_ms(), 0);
  EXPECT_GT(l.send_ms(), 0);
  EXPECT_GE(l.total_ms(), l.agent_done_ms() + l.send_ms());
  // Stages that did not happen stay 0; the queue is the controller's.
  EXPECT_EQ(l.download_ms(), 0);
  EXPECT_EQ(l.decode_ms(), 0);
  EXPECT_EQ(l.encode_ms(), 0);
  EXPECT_EQ(l.upload_ms(), 0);
  EXPECT_EQ(l.queue_ms(), 0);
}

TEST_F(TurnFeaturesTest, AVoiceTurnReportsEveryStage) {
  Start();
  v1::TurnResult r = runner_->RunTurn(TurnOf(VoiceMessage("wamid.in1")));
  ASSERT_EQ(r.outcome(), v1::TURN_OUTCOME_DONE) << r.reason();
  const v1::TurnLatency& l = r.latency();
  EXPECT_GT(l.download_ms(), 0);
  EXPECT_GT(l.decode_ms(), 0);
  EXPECT_GT(l.agent_done_ms(), 0);
  EXPECT_GT(l.encode_ms(), 0);
  EXPECT_GT(l.upload_ms(), 0);
  EXPECT_GT(l.send_ms(), 0);
  EXPECT_GE(l.total_ms(), l.download_ms() + l.decode_ms() + l.agent_done_ms());
}

// ---- lines ----

TEST(TurnLinesTest, ContentTypesAreWhatsAppsNames) {
  v1::InboundMessage m;
  m.set_type(v1::MESSAGE_TYPE_IMAGE);
  EXPECT_EQ(ContentTypeOf(m), "image");
  m.set_type(v1::MESSAGE_TYPE_REQUEST_WELCOME);
  EXPECT_EQ(ContentTypeOf(m), "request_welcome");
  m.set_type(v1::MESSAGE_TYPE_UNKNOWN);
  m.set_type_name("gif_reaction");  // a type this build does not know keeps its name
  EXPECT_EQ(ContentTypeOf(m), "gif_reaction");
}

TEST(TurnLinesTest, ContextLinesLeaveTheBridgesOwnOut) {
  EXPECT_EQ(ContextLine(SentLine(v1::SPEAKER_AGENT, "hello", "wamid.x", "text")), "agent: hello");
  EXPECT_EQ(ContextLine(SentLine(v1::SPEAKER_OPERATOR, "hi", "", "text")), "operator: hi");
  EXPECT_EQ(ContextLine(SentLine(v1::SPEAKER_SYSTEM, "sorry", "wamid.y", "text")), "");
  v1::InboundMessage m;
  m.set_text("hey");
  EXPECT_EQ(ContextLine(UserLine(m, "hey")), "user: hey");
}

}  // namespace
}  // namespace bridge::media_worker
