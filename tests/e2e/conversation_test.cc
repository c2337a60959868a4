// The product end to end: the real controller, two workers and the gateway,
// with both simulators at the edges, on port 0. A WhatsApp user (whatsapp-sim)
// sends texts and voice notes; the agent (elevenlabs-sim) answers; the replies
// land in the simulator's outbox. Every wait is on an event (READY lines, the
// outbox long poll, the Sessions API), never a sleep.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "audio/ogg_opus_decoder.h"
#include "bridge_cluster.h"
#include "grpc_probe.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::bridge::v1;

constexpr char kUser[] = "15551230001";

using Cluster = BridgeCluster;

size_t DecodedSamples(const std::string& ogg, int rate) {
  auto pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()}, rate);
  EXPECT_TRUE(pcm.ok()) << pcm.status();
  return pcm.ok() ? pcm->size() : 0;
}

TEST(ConversationTest, TextGetsTextInReplyToTheMessage) {
  Cluster c;
  const std::string wamid = c.UserSays(kUser, "text", "Hola, ¿qué tal?");
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["type"], "text");
  EXPECT_EQ(out[0]["text"], "You said: Hola, ¿qué tal?");
  EXPECT_EQ(out[0]["context_message_id"], wamid);
  auto sessions = c.SessionsAfterTurns(1);
  std::string listed;
  for (const auto& s : sessions) listed += s.DebugString() + "\n";
  ASSERT_EQ(sessions.size(), 1u) << listed << c.Logs();
  EXPECT_FALSE(sessions[0].worker_id().empty());
  EXPECT_FALSE(sessions[0].conversation_id().empty());
  EXPECT_EQ(sessions[0].turns_done(), 1);
}

// Both voice inputs; the simulated agent behaves like the live one by default
// (no end marker, alignment, a pause in the middle of its reply), and the
// reply still comes back whole, as one voice note.
class VoiceInputTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VoiceInputTest, VoiceNoteGetsOneVoiceNoteOfTheWholeReplyDespiteItsPause) {
  const bool stream = GetParam() == "stream";
  Cluster c({.worker_args = {absl::StrCat("--voice_input=", GetParam()),
                             "--agent_input_pace=0"}});
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["type"], "audio");
  EXPECT_EQ(out[0]["voice"], true);
  const std::string reply = c.Media(out[0]["media_id"]);
  const size_t reply_samples = AudioFixture("agent_reply_16k.s16le").size() / 2;
  EXPECT_NEAR(static_cast<double>(DecodedSamples(reply, 16000)), reply_samples, 320);  // one frame
  json conv = c.Conversations(1)["conversations"][0];
  if (stream) {
    ASSERT_FALSE(conv["transcripts"].empty());
    EXPECT_THAT(conv["transcripts"][0].get<std::string>(), HasSubstr("peak 440 Hz"));
    EXPECT_TRUE(c.Transcriptions()["transcriptions"].empty());
  } else {
    // The note went to speech-to-text as is; its transcript to the agent as text.
    json stt = c.Transcriptions()["transcriptions"];
    ASSERT_EQ(stt.size(), 1u);
    EXPECT_EQ(stt[0]["model_id"], "scribe_v2");
    EXPECT_EQ(stt[0]["file_bytes"], AudioFixture("voice_note_tone_440hz.ogg").size());
    ASSERT_EQ(conv["user_messages"].size(), 1u) << conv.dump();
    EXPECT_THAT(conv["user_messages"][0].get<std::string>(), HasSubstr("peak 440 Hz"));
    EXPECT_EQ(conv["audio_seconds_received"], 0);
  }
  EXPECT_NE(conv["user_id"], kUser);  // derived, never the phone number
  // The worker that ran it counts it (the count lands just after the reply).
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_turns_total{outcome=\"done\",type=\"voice\"} 1"));
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_reply_ends_total{reason=\"aligned\"} 1"));
}

INSTANTIATE_TEST_SUITE_P(Modes, VoiceInputTest, ::testing::Values("transcribe", "stream"));

// agent_response after the audio (seen live): the text reply is still the
// whole agent_response, sent once.
TEST(ConversationTest, TextReplyIsTheWholeAgentResponseEvenWhenItComesLast) {
  Cluster c({.sim_args = {"--agent_response_timing=end"}});
  c.UserSays(kUser, "text", "a question that takes a while");
  c.UserSays(kUser, "text", "next");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[0]["text"], "You said: a question that takes a while");
  EXPECT_EQ(out[1]["text"], "You said: next");
}

// The agent says goodbye, calls end_call and closes 1000: the goodbye is
// delivered, and the next message opens a new conversation.
TEST(ConversationTest, GoodbyeBeforeEndCallIsDelivered) {
  Cluster c;
  c.UserSays(kUser, "text", "thanks, goodbye");
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "Goodbye! It was nice talking to you.");
  ASSERT_EQ(c.Conversations(1, /*ended_only=*/true)["conversations"][0]["ended_by_agent"], true);
  c.UserSays(kUser, "text", "one more thing");
  out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[1]["text"], "You said: one more thing");
}

// The conversation is held only around turns: the agent re-engages the idle
// user (never forwarded), the bridge closes it after the linger, and the next
// message gets one reply from a new conversation that heard the exchange.
TEST(ConversationTest, IdleConversationClosesAndTheNextOneHearsTheHistory) {
  // The agent's turn timeout (2 s) is longer than the reply settle (1 s), as
  // the README asks; the linger (4 s) lets the re-engagement happen first.
  Cluster c({.sim_args = {"--turn_timeout_s=2"}, .worker_args = {"--agent_linger=4s"}});
  c.UserSays(kUser, "text", "my name is Ana");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  json first = c.Conversations(1, /*ended_only=*/true)["conversations"][0];
  EXPECT_GE(first["reengagements"].get<int>(), 1) << first.dump();  // it spoke up, unasked
  EXPECT_EQ(first["closed_by"], "client");
  c.UserSays(kUser, "text", "what is my name?");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[1]["text"], "You said: what is my name?");
  json convs = c.Conversations(2)["conversations"];
  ASSERT_EQ(convs.size(), 2u);
  ASSERT_FALSE(convs[1]["contextual_updates"].empty()) << convs[1].dump();
  const std::string context = convs[1]["contextual_updates"][0];
  EXPECT_THAT(context, HasSubstr("my name is Ana"));
  EXPECT_THAT(context, HasSubstr("You said: my name is Ana"));
  EXPECT_THAT(context, Not(HasSubstr("Are you still there?")));
  // Nothing the agent said outside a turn reached the user.
  for (const json& m : c.Outbox(kUser, 2)) {
    EXPECT_THAT(m.value("text", ""), Not(HasSubstr("still there")));
  }
}

// A slow agent (a long LLM turn): the turn keeps its conversation alive with
// user_activity while it waits, and the reply still arrives.
TEST(ConversationTest, SlowAgentGetsUserActivityWhileTheTurnWaits) {
  Cluster c;
  c.PostAgentFault(R"({"stall_ms":6500})");
  c.UserSays(kUser, "text", "take your time");
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "You said: take your time");
  json conv = c.Conversations(1)["conversations"][0];
  EXPECT_GE(conv["user_activity"].get<int>(), 1) << conv.dump();
}

// A telephony agent speaking μ-law at 8 kHz, both ways.
TEST(ConversationTest, MuLawAgentAnswersVoiceNotes) {
  Cluster c({.sim_args = {"--input_format=ulaw_8000", "--output_format=ulaw_8000"},
             .worker_args = {"--voice_input=stream", "--agent_input_pace=0"}});
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  ASSERT_EQ(out[0]["type"], "audio");
  const size_t reply_samples = AudioFixture("agent_reply_16k.s16le").size() / 2;
  EXPECT_NEAR(static_cast<double>(DecodedSamples(c.Media(out[0]["media_id"]), 16000)),
              reply_samples, 640);
  json conv = c.Conversations(1)["conversations"][0];
  ASSERT_FALSE(conv["transcripts"].empty());
  EXPECT_THAT(conv["transcripts"][0].get<std::string>(), HasSubstr("peak 440 Hz"));
}

TEST(ConversationTest, TwoUsersGetTwoSessionsAndRepliesInOrder) {
  Cluster c;
  c.UserSays("15551230002", "text", "one");
  c.UserSays("15551230003", "text", "alpha");
  c.UserSays("15551230002", "text", "two");
  json a = c.Outbox("15551230002", 2);
  json b = c.Outbox("15551230003", 1);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0]["text"], "You said: one");
  EXPECT_EQ(a[1]["text"], "You said: two");
  ASSERT_EQ(b.size(), 1u);
  auto sessions = c.Sessions();
  std::string dump;
  for (const auto& s : sessions) dump += s.DebugString();
  EXPECT_EQ(sessions.size(), 2u) << dump;
}

TEST(ConversationTest, DuplicateDeliveryGivesOneReply) {
  Cluster c;
  c.PostFault(R"({"webhook_duplicate":true})");
  c.UserSays(kUser, "text", "only once");
  c.UserSays(kUser, "text", "marker");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[0]["text"], "You said: only once");
  EXPECT_EQ(out[1]["text"], "You said: marker");
}

TEST(ConversationTest, CorruptNoteGetsAPoliteTextAndTheSessionCarriesOn) {
  Cluster c;
  c.UserSays(kUser, "voice", AudioFixture("broken_random.ogg"));
  c.UserSays(kUser, "text", "still there?");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_THAT(out[0]["text"].get<std::string>(), HasSubstr("couldn't play"));
  EXPECT_EQ(out[1]["text"], "You said: still there?");
}

// A forwarded audio file (not Ogg/Opus) is transcribed like a note.
TEST(ConversationTest, ForwardedAudioFileIsTranscribedAndAnswered) {
  Cluster c;
  c.UserSays(kUser, "voice", AudioFixture("voice_note_hello.ogg"), "?voice=false&mime=audio/mpeg");
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["type"], "audio");
  json stt = c.Transcriptions()["transcriptions"];
  ASSERT_EQ(stt.size(), 1u);
  EXPECT_EQ(stt[0]["file_type"], "audio/mpeg");
}

TEST(ConversationTest, GreetingIsDeliveredFirstWhenAsked) {
  Cluster c({.sim_args = {"--first_message=Hi, I'm the bridge's agent."},
             .worker_args = {"--agent_greeting=deliver"}});
  c.UserSays(kUser, "text", "hello");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "Hi, I'm the bridge's agent.");
  EXPECT_EQ(out[1]["text"], "You said: hello");
}

TEST(ConversationTest, GreetingIsSkippedByDefault) {
  Cluster c({.sim_args = {"--first_message=Hi, I'm the bridge's agent."}});
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  c.UserSays(kUser, "text", "and now text");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[0]["type"], "audio");
  EXPECT_EQ(out[1]["text"], "You said: and now text");
}

// An agent with disable_first_message_interruptions ignores what is said
// over its greeting: the bridge hears the greeting out, so the user's note is
// still heard and answered.
TEST(ConversationTest, UninterruptibleGreetingIsHeardOutBeforeTheNote) {
  Cluster c({.reply_pace = 1.0,
             .sim_args = {"--first_message=Hi, I'm the bridge's agent.",
                          "--first_message_uninterruptible"},
             .worker_args = {"--voice_input=stream", "--agent_input_pace=0"}});
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["type"], "audio");
  json conv = c.Conversations(1)["conversations"][0];
  EXPECT_EQ(conv["ignored_during_greeting"], 0) << conv.dump();
  ASSERT_FALSE(conv["transcripts"].empty()) << conv.dump();
  EXPECT_THAT(conv["transcripts"][0].get<std::string>(), HasSubstr("peak 440 Hz"));
}

// An operator ends a session while its voice note is being streamed to the
// agent (issue #10 saw the worker crash here): the worker stays up, the ended
// turn stops at once and sends nothing more (no apology either), and the
// user's next message is answered.
TEST(ConversationTest, EndingASessionMidTurnLeavesTheWorkerServing) {
  Cluster c({.workers = 1, .worker_args = {"--voice_input=stream", "--agent_input_pace=1"}});
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  // The note is streaming to the agent in real time: the turn is in flight.
  ASSERT_TRUE(c.AwaitWorkerMetric("bridge_turn_stage_seconds_count{stage=\"first_audio_to_agent\"} 1"))
      << c.Logs();
  auto sessions = c.Sessions();
  ASSERT_EQ(sessions.size(), 1u);
  ASSERT_TRUE(EndSession(c.controller_address(), sessions[0].session_id(), c.admin_token()).ok());
  // The turn ends now, not after the reply timeout, and the worker closed the
  // agent conversation itself.
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_turns_total{outcome=\"failed\",type=\"voice\"} 1"))
      << c.Logs();
  json ended = c.Conversations(1, /*ended_only=*/true)["conversations"][0];
  EXPECT_EQ(ended["closed_by"], "client") << ended.dump();
  c.UserSays(kUser, "text", "are you still there?");
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "You said: are you still there?");
  EXPECT_FALSE(c.worker(0).Wait(absl::ZeroDuration()).has_value()) << c.Logs();  // still running
}

TEST(ConversationTest, ControllerRestartKeepsSessions) {
  Cluster c;
  c.UserSays(kUser, "text", "before");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  const std::string id = c.Sessions()[0].session_id();
  c.controller().Signal(SIGTERM);
  ASSERT_EQ(c.controller().Wait().value_or(-1), 0);
  c.StartController(c.controller_address());
  // The gateway may still be reconnecting (503, Meta retries for days).
  c.UserSays(kUser, "text", "after", "?retries=30");
  json out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1]["text"], "You said: after");
  auto sessions = c.SessionsAfterTurns(2);
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].session_id(), id);
  EXPECT_EQ(sessions[0].turns_done(), 2);
}

TEST(ConversationTest, KilledWorkersTurnFinishesOnTheOtherExactlyOnce) {
  Cluster c({.reply_pace = 1.0});  // the reply streams for ~6 s: time to kill mid-turn
  c.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  // The agent has heard the note: the turn is in flight on its worker.
  ASSERT_GE(c.Conversations(1)["conversations"].size(), 1u);
  auto sessions = c.Sessions();
  ASSERT_EQ(sessions.size(), 1u);
  const int victim = sessions[0].worker_id() == "w0" ? 0 : 1;
  c.worker(victim).Signal(SIGKILL);
  json out = c.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["type"], "audio");
  // A second message proves the first left nothing behind.
  c.UserSays(kUser, "text", "after the crash");
  out = c.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << out.dump();
  EXPECT_EQ(out[1]["text"], "You said: after the crash");
  EXPECT_EQ(c.Sessions()[0].worker_id(), victim == 0 ? "w1" : "w0");
}

}  // namespace
}  // namespace bridge::testing
