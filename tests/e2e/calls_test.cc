// Issue #15: a user's WhatsApp call through the real gateway, controller and
// worker, the caller being the product's media library playing Meta's side
// (tests/support/sim_caller.h) over real UDP: answered with pre_accept and
// accept, the agent hears the caller's 440 Hz tone and the caller hears the
// agent; a hang-up ends the call and closes the agent socket; the agent's
// end_call hangs up; a killed worker's call is terminated through another
// worker; malformed offers, --calls=off and retried webhooks are handled.
// Waits are on events (the simulators' long polls, metrics), never a sleep.
#include <cmath>
#include <csignal>

#include "absl/strings/str_cat.h"
#include "bridge_cluster.h"
#include "grpc_probe.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "sim_caller.h"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(60);

// One second of 440 Hz, then a second of silence: the agent's VAD ends the
// turn on the silence (a tone without end would never be answered).
std::vector<int16_t> ToneThenSilence() {
  std::vector<int16_t> pcm(32000, 0);
  for (size_t i = 0; i < 16000; ++i) {
    pcm[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * 440 * static_cast<double>(i) / 16000));
  }
  return pcm;
}

ClusterOptions Calls(std::vector<std::string> sim_args = {}, int workers = 1) {
  ClusterOptions o;
  o.reply_pace = 1;  // the agent speaks in real time, as on a call
  o.workers = workers;
  o.sim_args = std::move(sim_args);
  o.worker_args = {"--media_ips=127.0.0.1"};
  return o;
}

// The cluster once its workers are attached: a call offered before that
// waits for one (`held`), which would put the attach in what a test measures.
void AwaitWorkers(BridgeCluster& c, int n) {
  ASSERT_TRUE(c.AwaitControllerMetric(absl::StrCat("bridge_controller_workers ", n))) << c.Logs();
}

// What the business did with calls, once there are `n` actions.
json CallActions(BridgeCluster& c, int n) {
  httplib::Client cli(absl::StrCat("http://", c.whatsapp_sim_http()));
  cli.set_read_timeout(90);
  auto r = cli.Get(absl::StrCat("/sim/calls?min_count=", n, "&wait_ms=60000").c_str());
  return r ? json::parse(r->body, nullptr, false) : json::array();
}

std::vector<std::string> Actions(const json& all) {
  std::vector<std::string> out;
  for (const json& a : all) out.push_back(a.value("action", ""));
  return out;
}

// Places a call once the workers are attached and waits until its media is up.
void Connect(SimCaller& caller, BridgeCluster& c, int workers = 1) {
  AwaitWorkers(c, workers);
  ASSERT_TRUE(caller.Call().ok()) << c.Logs();
  absl::Status s = caller.AwaitAnswer(kWait);
  ASSERT_TRUE(s.ok()) << s << c.Logs();
  s = caller.AwaitConnected(kWait);
  ASSERT_TRUE(s.ok()) << s << c.Logs();
}

v1::Session CallSession(BridgeCluster& c, v1::SessionState state) {
  return c.AwaitSession(
      [state](const v1::Session& s) { return s.kind() == v1::SESSION_KIND_CALL && s.state() == state; },
      /*include_ended=*/true);
}

TEST(CallsTest, ACallIsAnsweredTheAgentHearsTheCallerAndAHangUpEndsIt) {
  BridgeCluster c(Calls());
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230021"});
  Connect(caller, c);
  EXPECT_EQ(Actions(CallActions(c, 2)), (std::vector<std::string>{"pre_accept", "accept"}));
  const v1::Session live = CallSession(c, v1::SESSION_STATE_ACTIVE);
  EXPECT_EQ(live.session_id(), caller.call_id());

  caller.Say(ToneThenSilence());
  // The agent's reply (its voice fixture) reaches the caller: half a second
  // of loud audio is more than any silence or comfort noise.
  ASSERT_TRUE(caller.AwaitHeard(8000, kWait)) << c.Logs();
  const json convs = c.Conversations(1);
  ASSERT_EQ(convs["conversations"].size(), 1u);
  EXPECT_THAT(convs["conversations"][0]["transcripts"].dump(), HasSubstr("peak 440 Hz"));
  const media_worker::CallMediaStats stats = caller.Stats();
  EXPECT_GT(stats.in.received, 100u);
  EXPECT_EQ(stats.undecryptable, 0u);

  ASSERT_TRUE(caller.Hangup().ok());
  EXPECT_TRUE(c.AwaitWorkerMetric(R"(bridge_worker_calls_total{outcome="ended"} 1)")) << c.Logs();
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_calls_active 0"));
  EXPECT_EQ(c.Conversations(1, /*ended_only=*/true)["conversations"].size(), 1u)
      << "the agent socket closes with the call";
  EXPECT_THAT(CallSession(c, v1::SESSION_STATE_ENDED).end_reason(), HasSubstr("COMPLETED"));
  EXPECT_EQ(Actions(CallActions(c, 0)).size(), 2u) << "Meta knew: no terminate is sent";
  // What was said is the call's transcript (committed after the session ended:
  // the store is polled).
  std::string said;
  for (absl::Time until = absl::Now() + kWait; said.empty() && absl::Now() < until;) {
    auto t = GetTranscript(c.controller_address(), caller.call_id(), c.admin_token());
    ASSERT_TRUE(t.ok()) << t.status();
    for (const v1::TranscriptEntry& e : t->entries()) {
      for (const v1::TranscriptLine& l : e.lines()) absl::StrAppend(&said, l.speaker(), ":", l.text(), "\n");
    }
    if (said.empty()) absl::SleepFor(absl::Milliseconds(50));  // a bounded poll of the store
  }
  EXPECT_THAT(said, HasSubstr(absl::StrCat(v1::SPEAKER_USER, ":[audio")));  // the agent's transcript
  EXPECT_THAT(said, HasSubstr("peak 440 Hz"));
  EXPECT_THAT(said, HasSubstr(absl::StrCat(v1::SPEAKER_AGENT, ":")));
}

// An agent that takes μ-law at 8 kHz and speaks PCM at 24 kHz: the call's
// 16 kHz audio is resampled both ways.
// A user who wrote before calling: the agent on the call is given the earlier
// exchanges, as a new conversation in writing would be (memory, issue #13).
TEST(CallsTest, TheAgentOnACallIsToldWhatTheCallerWroteBefore) {
  BridgeCluster c(Calls());
  AwaitWorkers(c, 1);
  const std::string user = "15551230035";
  c.UserSays(user, "text", "my name is Ana");
  ASSERT_EQ(c.Outbox(user, 1).size(), 1u) << c.Logs();
  c.SessionsAfterTurns(1);  // the exchange is recorded: it is the user's memory
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), user});
  Connect(caller, c);
  caller.Say(ToneThenSilence());
  // Answered: the context went before the caller's audio on the same socket.
  ASSERT_TRUE(caller.AwaitHeard(8000, kWait)) << c.Logs();
  // The written exchange's own conversation had nothing earlier to be told.
  const json convs = c.Conversations(2)["conversations"];
  ASSERT_EQ(convs.size(), 2u);
  EXPECT_EQ(convs[0].value("contextual_updates", json::array()).size(), 0u) << convs.dump();
  EXPECT_THAT(convs[1].value("contextual_updates", json::array()).dump(),
              HasSubstr("user: my name is Ana"))
      << convs.dump();
}

TEST(CallsTest, AnAgentAtOtherRatesIsResampledBothWays) {
  BridgeCluster c(Calls({"--input_format=ulaw_8000", "--output_format=pcm_24000"}));
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230029"});
  Connect(caller, c);
  caller.Say(ToneThenSilence());
  ASSERT_TRUE(caller.AwaitHeard(8000, kWait)) << c.Logs();
  EXPECT_THAT(c.Conversations(1)["conversations"][0]["transcripts"].dump(), HasSubstr("peak 440 Hz"));
}

TEST(CallsTest, TheAgentsEndCallHangsUpAfterItsGoodbyePlayed) {
  BridgeCluster c(Calls({"--end_call_phrase=heard"}));
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230022"});
  Connect(caller, c);
  caller.Say(ToneThenSilence());
  EXPECT_EQ(Actions(CallActions(c, 3)), (std::vector<std::string>{"pre_accept", "accept", "terminate"}))
      << c.Logs();
  EXPECT_TRUE(caller.AwaitHeard(8000, absl::Seconds(1))) << "the goodbye played before the terminate";
  EXPECT_THAT(CallSession(c, v1::SESSION_STATE_ENDED).end_reason(), HasSubstr("end_call"));
}

TEST(CallsTest, AnOperatorEndsACallThroughTheSessionsApi) {
  BridgeCluster c(Calls());
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230030"});
  Connect(caller, c);
  const v1::Session live = CallSession(c, v1::SESSION_STATE_ACTIVE);
  ASSERT_TRUE(EndSession(c.controller_address(), live.session_id(), c.admin_token()).ok());
  EXPECT_EQ(Actions(CallActions(c, 3)), (std::vector<std::string>{"pre_accept", "accept", "terminate"}))
      << c.Logs();
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_calls_active 0"));
}

TEST(CallsTest, AKilledWorkersCallIsTerminatedThroughAnotherWorker) {
  BridgeCluster c(Calls({}, /*workers=*/2));
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230023"});
  Connect(caller, c, /*workers=*/2);
  const v1::Session live = CallSession(c, v1::SESSION_STATE_ACTIVE);
  c.worker(live.worker_id() == "w0" ? 0 : 1).Signal(SIGKILL);
  EXPECT_THAT(Actions(CallActions(c, 3)), Contains("terminate")) << c.Logs();
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="worker_lost"} 1)"));
  EXPECT_THAT(CallSession(c, v1::SESSION_STATE_ENDED).end_reason(), HasSubstr("worker"));
}

TEST(CallsTest, CallerSpeechCutsOffTheAgentsQueuedAudio) {
  ClusterOptions o = Calls();
  o.reply_pace = 0;  // the whole reply arrives at once: seconds of it queued to play
  BridgeCluster c(o);
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230027"});
  Connect(caller, c);
  caller.Say(ToneThenSilence());
  ASSERT_TRUE(caller.AwaitHeard(1600, kWait)) << "the reply started playing" << c.Logs();
  caller.Say(ToneThenSilence());  // the caller talks over the agent
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_call_barge_ins_total 1")) << c.Logs();
  EXPECT_GE(c.Conversations(1)["conversations"][0].value("interruptions", 0), 1)
      << "the agent heard it too";
}

TEST(CallsTest, AStoppingWorkerTerminatesItsCalls) {
  BridgeCluster c(Calls());
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230028"});
  Connect(caller, c);
  // Accepted first: a stop before that sends terminate while accept is in flight.
  CallSession(c, v1::SESSION_STATE_ACTIVE);
  c.worker(0).Signal(SIGTERM);
  EXPECT_EQ(Actions(CallActions(c, 3)), (std::vector<std::string>{"pre_accept", "accept", "terminate"}))
      << c.Logs();
  EXPECT_EQ(c.worker(0).Wait(), 0) << "a clean exit";
}

// Meta fails a call that is not accepted within about 30-60 s. This caller
// never gets to read the answer, so media never comes up and the worker
// never accepts (it would give up after 20 s, CallSettings::connect_timeout); the
// simulator's clock is moved past the window: Meta's FAILED terminate webhook
// ends the session, and the worker lets the call go, sending nothing more.
TEST(CallsTest, ACallNotAcceptedInTimeFailsAndTheWorkerLetsItGo) {
  BridgeCluster c(Calls());
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230031"});
  AwaitWorkers(c, 1);
  ASSERT_TRUE(caller.Call().ok()) << c.Logs();
  EXPECT_EQ(Actions(CallActions(c, 1)), std::vector<std::string>{"pre_accept"});
  httplib::Client sim(absl::StrCat("http://", c.whatsapp_sim_http()));
  auto r = sim.Post("/sim/clock", R"({"advance_s":61})", "application/json");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_THAT(CallSession(c, v1::SESSION_STATE_ENDED).end_reason(), HasSubstr("FAILED")) << c.Logs();
  EXPECT_TRUE(c.AwaitWorkerMetric("bridge_worker_calls_active 0")) << c.Logs();
  EXPECT_EQ(Actions(CallActions(c, 0)), std::vector<std::string>{"pre_accept"})
      << "no accept, reject or terminate after Meta ended the call";
}

// A call offered while no worker is attached (a rollout, a restart) waits for
// one, within Meta's accept window: the worker that attaches answers it.
TEST(CallsTest, ACallOfferedWhileNoWorkerIsAttachedIsAnsweredByTheNextOne) {
  BridgeCluster c(Calls());
  AwaitWorkers(c, 1);
  c.worker(0).Signal(SIGKILL);
  c.worker(0).Wait();
  AwaitWorkers(c, 0);
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230032"});
  ASSERT_TRUE(caller.Call().ok()) << c.Logs();
  ASSERT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="held"} 1)")) << c.Logs();
  c.StartWorker(0);
  absl::Status s = caller.AwaitAnswer(kWait);
  ASSERT_TRUE(s.ok()) << s << c.Logs();
  s = caller.AwaitConnected(kWait);
  ASSERT_TRUE(s.ok()) << s << c.Logs();
  EXPECT_EQ(Actions(CallActions(c, 2)), (std::vector<std::string>{"pre_accept", "accept"}));
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="no_worker"} 0)"));
}

// Every worker is full (here the only one holds its one session): one of
// them rejects the call, saying why, instead of letting it ring out.
TEST(CallsTest, WithEveryWorkerFullACallIsRejectedSayingSo) {
  ClusterOptions o = Calls();
  o.worker_args.insert(o.worker_args.end(), {"--capacity=1", "--max_calls=1"});
  BridgeCluster c(o);
  AwaitWorkers(c, 1);
  c.UserSays("15551230033", "text", "hello");
  ASSERT_EQ(c.Outbox("15551230033", 1).size(), 1u) << "answered: its session holds the one place";
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230034"});
  ASSERT_TRUE(caller.Call().ok()) << c.Logs();
  EXPECT_EQ(Actions(CallActions(c, 1)), std::vector<std::string>{"reject"}) << c.Logs();
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="no_capacity"} 1)"));
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="rejected"} 1)"));
  std::string reason;
  for (const v1::Session& s : c.Sessions(/*include_ended=*/true)) {
    if (s.kind() == v1::SESSION_KIND_CALL) reason = s.end_reason();
  }
  EXPECT_THAT(reason, HasSubstr("no worker has room"));
}

TEST(CallsTest, AMalformedOfferIsRejectedWithWhatIsWrongWithIt) {
  BridgeCluster c(Calls());
  AwaitWorkers(c, 1);
  httplib::Client cli(absl::StrCat("http://", c.whatsapp_sim_http()));
  ASSERT_TRUE(cli.Post("/sim/users/15551230024/call", "v=0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                       "application/sdp"));
  EXPECT_EQ(Actions(CallActions(c, 1)), std::vector<std::string>{"reject"});
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="rejected"} 1)"));
  EXPECT_THAT(c.Logs(), HasSubstr("transport is RTP/AVP, not UDP/TLS/RTP/SAVPF"));
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="ended"} 1)"))
      << "Meta's terminate webhook follows the reject";
}

TEST(CallsTest, WithCallsOffACallIsRejectedSayingSo) {
  ClusterOptions o = Calls();
  o.worker_args.push_back("--calls=off");
  BridgeCluster c(o);
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230025"});
  AwaitWorkers(c, 1);
  ASSERT_TRUE(caller.Call().ok());
  EXPECT_EQ(Actions(CallActions(c, 1)), std::vector<std::string>{"reject"});
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="rejected"} 1)"));
  EXPECT_THAT(c.Logs(), HasSubstr("calls are off on this worker"));
}

TEST(CallsTest, ACallWebhookDeliveredTwiceIsOfferedOnce) {
  BridgeCluster c(Calls());
  c.PostFault(R"({"webhook_duplicate":true})");
  media_worker::MediaLoop loop("caller");
  SimCaller caller(&loop, {c.whatsapp_sim_http(), "15551230026"});
  Connect(caller, c);
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="duplicate"} 1)"))
      << c.Logs();
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="offered"} 1)"));
  EXPECT_EQ(Actions(CallActions(c, 2)), (std::vector<std::string>{"pre_accept", "accept"}));
}

}  // namespace
}  // namespace bridge::testing
