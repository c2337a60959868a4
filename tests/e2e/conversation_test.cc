// The product end to end: the real controller, two workers and the gateway,
// with both simulators at the edges, on port 0. A WhatsApp user (whatsapp-sim)
// sends texts and voice notes; the agent (elevenlabs-sim) answers; the replies
// land in the simulator's outbox. Every wait is on an event (READY lines, the
// outbox long poll, the Sessions API), never a sleep.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "child_process.h"
#include "grpc_probe.h"
#include "gmock/gmock.h"
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

constexpr char kAppSecret[] = "e2e-app-secret-0123456789";
constexpr char kToken[] = "e2e-graph-token-0123456789";
constexpr char kElevenLabsKey[] = "sk_e2e_elevenlabs_0123456789";
constexpr char kUser[] = "15551230001";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string AudioFixture(const std::string& name) {
  return ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", name));
}

struct ClusterOptions {
  double reply_pace = 0;
  std::vector<std::string> sim_args;     // extra elevenlabs-sim flags
  std::vector<std::string> worker_args;  // extra bridge-worker flags
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions o = {}) : options_(std::move(o)) {
    const double reply_pace = options_.reply_pace;
    static std::atomic<int> clusters{0};
    const std::string id = absl::StrCat(getpid(), "-", clusters++);
    db_ = absl::StrCat(::testing::TempDir(), "/e2e-", id, ".db");
    std::vector<std::string> sim = {"--listen=127.0.0.1:0", "--agent_id=e2e-agent",
                                    absl::StrCat("--reply_pace=", reply_pace),
                                    "--ping_interval_ms=500"};
    sim.insert(sim.end(), options_.sim_args.begin(), options_.sim_args.end());
    // A private agent: signed URLs and speech-to-text need the key.
    Spawn(&el_, BRIDGE_ELEVENLABS_SIM_BIN, sim, {{"ELEVENLABS_API_KEY", kElevenLabsKey}});
    el_http_ = Ready(*el_, "http");
    StartController("127.0.0.1:0");
    Spawn(&gateway_, BRIDGE_GATEWAY_BIN,
          {"--listen=127.0.0.1:0", absl::StrCat("--controller=", controller_)},
          {{"WEBHOOK_SIGNATURE_SECRET", kAppSecret}});
    gateway_http_ = Ready(*gateway_, "http");
    Spawn(&wa_, BRIDGE_WHATSAPP_SIM_BIN,
          {"--listen=127.0.0.1:0",
           absl::StrCat("--webhook_url=http://", gateway_http_, "/webhook/whatsapp"),
           "--webhook_retry_base_ms=100"},
          {{"WEBHOOK_SIGNATURE_SECRET", kAppSecret}, {"WHATSAPP_ACCESS_TOKEN", kToken}});
    wa_http_ = Ready(*wa_, "http");
    for (int i = 0; i < 2; ++i) StartWorker(i);
  }

  void StartController(const std::string& listen) {
    Spawn(&controller_proc_, BRIDGE_CONTROLLER_BIN,
          {absl::StrCat("--listen=", listen), "--metrics_listen=127.0.0.1:0",
           absl::StrCat("--store=sqlite:", db_), "--heartbeat_timeout=5s"});
    controller_ = Ready(*controller_proc_, "grpc");
  }

  void StartWorker(int i) {
    std::vector<std::string> args = {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                     absl::StrCat("--worker_id=w", i),
                                     absl::StrCat("--controller=", controller_)};
    args.insert(args.end(), options_.worker_args.begin(), options_.worker_args.end());
    Spawn(&workers_[i], BRIDGE_WORKER_BIN, args,
          {{"WHATSAPP_ACCESS_TOKEN", kToken},
           {"WHATSAPP_GRAPH_BASE_URL", absl::StrCat("http://", wa_http_)},
           {"ELEVENLABS_BASE_URL", absl::StrCat("http://", el_http_)},
           {"ELEVENLABS_AGENT_ID", "e2e-agent"},
           {"ELEVENLABS_API_KEY", kElevenLabsKey}});
    worker_metrics_[i] = Ready(*workers_[i], "metrics");
  }

  ChildProcess& worker(int i) { return *workers_[i]; }
  ChildProcess& controller() { return *controller_proc_; }
  const std::string& controller_address() const { return controller_; }

  // POST as a user through whatsapp-sim; returns the wamid it made.
  std::string UserSays(const std::string& user, const std::string& kind, const std::string& body,
                       const std::string& query = "") {
    httplib::Client cli(absl::StrCat("http://", wa_http_));
    cli.set_read_timeout(60);
    auto r = cli.Post(absl::StrCat("/sim/users/", user, "/", kind, query).c_str(), body,
                      kind == "text" ? "text/plain" : "audio/ogg");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    return r ? json::parse(r->body, nullptr, false).value("message_id", "") : "";
  }

  json Outbox(const std::string& user, int min_count) {
    httplib::Client cli(absl::StrCat("http://", wa_http_));
    cli.set_read_timeout(120);
    auto r = cli.Get(absl::StrCat("/sim/users/", user, "/outbox?min_count=", min_count,
                                  "&wait_ms=90000").c_str());
    return r ? json::parse(r->body, nullptr, false) : json::array();
  }

  std::string Media(const std::string& id) {
    httplib::Client cli(absl::StrCat("http://", wa_http_));
    auto r = cli.Get(absl::StrCat("/sim/media/", id).c_str());
    return r ? r->body : "";
  }

  json Conversations(int min_count, bool ended_only = false) {
    httplib::Client cli(absl::StrCat("http://", el_http_));
    cli.set_read_timeout(120);
    auto r = cli.Get(absl::StrCat("/sim/conversations?min_count=", min_count,
                                  ended_only ? "&ended=true" : "", "&wait_ms=60000")
                         .c_str());
    return r ? json::parse(r->body, nullptr, false) : json();
  }
  json Transcriptions() {
    httplib::Client cli(absl::StrCat("http://", el_http_));
    auto r = cli.Get("/sim/transcriptions");
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  void PostFault(const std::string& body) {
    httplib::Client cli(absl::StrCat("http://", wa_http_));
    cli.Post("/sim/faults", body, "application/json");
  }
  void PostAgentFault(const std::string& body) {
    httplib::Client cli(absl::StrCat("http://", el_http_));
    auto r = cli.Post("/sim/faults", body, "application/json");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  }

  std::vector<v1::Session> Sessions() {
    auto sessions = ListSessions(controller_);
    EXPECT_TRUE(sessions.ok()) << sessions.status();
    return sessions.ok() ? *sessions : std::vector<v1::Session>();
  }

  // The sessions once the controller has recorded `turns` finished turns in
  // total: a reply reaches the user just before the worker reports it done.
  std::vector<v1::Session> SessionsAfterTurns(int64_t turns) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    for (;;) {
      auto sessions = Sessions();
      int64_t done = 0;
      for (const auto& s : sessions) done += s.turns_done();
      if (done >= turns || absl::Now() > deadline) return sessions;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  std::string Metrics(const std::string& address) {
    httplib::Client cli(absl::StrCat("http://", address));
    auto r = cli.Get("/metrics");
    return r ? r->body : "";
  }
  // True once either worker's /metrics shows `line` (a bounded poll: a
  // metric is the event here).
  bool AwaitWorkerMetric(const std::string& line) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      for (int i = 0; i < 2; ++i) {
        if (Metrics(worker_metrics_[i]).find(line) != std::string::npos) return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  // Everything the processes printed, for failure messages.
  std::string Logs() {
    std::string out;
    for (auto* p : {el_.get(), controller_proc_.get(), gateway_.get(), wa_.get(),
                    workers_[0].get(), workers_[1].get()}) {
      if (p) out += p->Output();
    }
    return out;
  }
  const std::string& gateway_http() const { return gateway_http_; }
  const std::string& worker_metrics(int i) const { return worker_metrics_[i]; }

 private:
  void Spawn(std::unique_ptr<ChildProcess>* p, const char* bin, std::vector<std::string> args,
             std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), "--env_file=/nonexistent");
    *p = std::make_unique<ChildProcess>(bin, args, env);
  }
  std::string Ready(ChildProcess& p, const std::string& key) {
    auto ready = p.WaitReady();
    EXPECT_TRUE(ready.count(key)) << p.Output();
    return ready[key];
  }

  const ClusterOptions options_;
  std::string db_, el_http_, controller_, gateway_http_, wa_http_;
  std::string worker_metrics_[2];
  std::unique_ptr<ChildProcess> el_, controller_proc_, gateway_, wa_, workers_[2];
};

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
  ASSERT_EQ(sessions.size(), 1u);
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

TEST(ConversationTest, ControllerRestartKeepsSessions) {
  Cluster c;
  c.UserSays(kUser, "text", "before");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u);
  const std::string id = c.Sessions()[0].session_id();
  c.controller().Signal(SIGTERM);
  ASSERT_EQ(c.controller().Wait().value_or(-1), 0);
  c.StartController(c.controller_address());
  c.UserSays(kUser, "text", "after");
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
