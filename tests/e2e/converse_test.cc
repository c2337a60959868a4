// bridge.v1.Media/Converse end to end: the real controller and worker with
// elevenlabs-sim, on port 0, and bridgectl talk. Clients stream audio in
// the formats real clients use (raw Opus packets, PCM, Ogg/Opus) and check
// what the agent heard, what came back, interruptions, and that a stream
// that goes away frees its session. Every wait is on an event (READY and log
// lines, responses, the simulator's long poll, bounded polls of the
// Sessions API and /metrics), never a sleep.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <functional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/opus_packet.h"
#include "bridge/v1/media.grpc.pb.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "child_process.h"
#include "fresh_dir.h"
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
namespace v1 = ::bridge::v1;
using Responses = std::vector<v1::ConverseResponse>;

constexpr absl::Duration kHangGuard = absl::Seconds(60);  // never a timing assertion
constexpr char kUser[] = "15551230077";
constexpr char kPhoneNumberId[] = "106540352242922";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string FixturePath(const std::string& name) {
  return absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", name);
}

std::vector<int16_t> DecodeFixture(const std::string& name, int rate) {
  const std::string ogg = ReadFile(FixturePath(name));
  auto pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()}, rate);
  EXPECT_TRUE(pcm.ok()) << pcm.status();
  return pcm.ok() ? *pcm : std::vector<int16_t>();
}

// The agent's voice at 16 kHz, as the simulator sends it.
size_t ReplySamples16k() { return ReadFile(FixturePath("agent_reply_16k.s16le")).size() / 2; }

// A note as a real-time client sends it: 20 ms Opus packets on a 48 kHz clock.
std::vector<std::string> OpusPackets(std::vector<int16_t> pcm48k) {
  auto enc = audio::OpusPacketEncoder::Create(48000, 32000, 5);
  EXPECT_TRUE(enc.ok());
  const size_t frame = (*enc)->frame_samples();
  pcm48k.resize((pcm48k.size() + frame - 1) / frame * frame, 0);
  std::vector<std::string> packets;
  std::vector<uint8_t> packet;
  for (size_t off = 0; off < pcm48k.size(); off += frame) {
    EXPECT_TRUE((*enc)->Encode(absl::MakeConstSpan(pcm48k).subspan(off, frame), &packet).ok());
    packets.emplace_back(packet.begin(), packet.end());
  }
  return packets;
}

std::string PcmBytes(const std::vector<int16_t>& pcm) {
  return std::string(reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2);
}

// ---- the processes ----

class Cluster {
 public:
  // `reply_pace`: the simulated agent's speed (0 unpaced, 1 real time).
  explicit Cluster(double reply_pace, std::vector<std::string> worker_args = {}) {
    db_ = absl::StrCat(FreshDir("converse"), "/controller.db");
    sim_ = std::make_unique<ChildProcess>(
        BRIDGE_ELEVENLABS_SIM_BIN,
        std::vector<std::string>{"--env_file=/nonexistent", "--listen=127.0.0.1:0",
                                 "--agent_id=e2e-agent", "--emit_final_markers",
                                 absl::StrCat("--reply_pace=", reply_pace),
                                 "--ping_interval_ms=500"});
    sim_http_ = Ready(*sim_, "http");
    controller_proc_ = std::make_unique<ChildProcess>(
        BRIDGE_CONTROLLER_BIN,
        std::vector<std::string>{"--env_file=/nonexistent", "--listen=127.0.0.1:0",
                                 "--metrics_listen=127.0.0.1:0",
                                 absl::StrCat("--store=sqlite:", db_)});
    controller_ = Ready(*controller_proc_, "grpc");
    std::vector<std::string> args = {"--env_file=/nonexistent", "--listen=127.0.0.1:0",
                                     "--metrics_listen=127.0.0.1:0", "--worker_id=cw0",
                                     // Converse streams audio; no speech-to-text, no API key.
                                     "--voice_input=stream",
                                     absl::StrCat("--controller=", controller_)};
    args.insert(args.end(), worker_args.begin(), worker_args.end());
    worker_ = std::make_unique<ChildProcess>(
        BRIDGE_WORKER_BIN, args,
        std::map<std::string, std::string>{
            {"ELEVENLABS_BASE_URL", absl::StrCat("http://", sim_http_)},
            {"ELEVENLABS_AGENT_ID", "e2e-agent"},
            {"WHATSAPP_ACCESS_TOKEN", "e2e-unused-token"}});
    auto ready = worker_->WaitReady();
    EXPECT_TRUE(ready.count("grpc")) << worker_->Output();
    worker_grpc_ = Dialable(ready["grpc"]);
    worker_metrics_ = Dialable(ready["metrics"]);
  }

  ~Cluster() {
    if (::testing::Test::HasFailure() || getenv("CONVERSE_TEST_DUMP")) {
      std::cerr << "---- worker ----\n" << worker_->Output() << "---- elevenlabs-sim ----\n"
                << sim_->Output();
    }
  }

  // The controller only lists streams of a worker it knows.
  void AwaitAttached() {
    ASSERT_TRUE(worker_->WaitForOutput("attached to controller", kHangGuard)) << worker_->Output();
  }

  std::unique_ptr<v1::Media::Stub> Media() {
    return v1::Media::NewStub(grpc::CreateChannel(worker_grpc_, grpc::InsecureChannelCredentials()));
  }

  std::vector<v1::Session> Sessions() {
    auto sessions = ListSessions(controller_, /*reveal_ids=*/true);
    EXPECT_TRUE(sessions.ok()) << sessions.status();
    return sessions.ok() ? *sessions : std::vector<v1::Session>();
  }

  grpc::Status EndSession(const std::string& session_id) {
    auto stub = v1::Sessions::NewStub(
        grpc::CreateChannel(controller_, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::EndSessionRequest req;
    req.set_session_id(session_id);
    req.set_reason("e2e operator");
    v1::EndSessionResponse resp;
    return stub->EndSession(&ctx, req, &resp);
  }

  // A bounded poll: the controller learns of streams over the worker link.
  bool AwaitListed(const std::string& session_id, bool listed) {
    return Poll([&] {
      bool found = false;
      for (const auto& s : Sessions()) found |= s.session_id() == session_id;
      return found == listed;
    });
  }

  bool AwaitMetric(const std::string& line) {
    return Poll([&] { return Metrics().find(line) != std::string::npos; });
  }

  std::string Metrics() {
    httplib::Client cli(absl::StrCat("http://", worker_metrics_));
    auto r = cli.Get("/metrics");
    return r ? r->body : "";
  }

  // The simulator's record of its conversations, once at least `min_count`
  // exist (ended ones only with `ended`: the close handshake takes a moment).
  json Conversations(int min_count, bool ended = false) {
    httplib::Client cli(absl::StrCat("http://", sim_http_));
    cli.set_read_timeout(120);
    auto r = cli.Get(absl::StrCat("/sim/conversations?min_count=", min_count,
                                  ended ? "&ended=true" : "", "&wait_ms=60000")
                         .c_str());
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  ChildProcess& worker() { return *worker_; }
  const std::string& worker_grpc() const { return worker_grpc_; }
  const std::string& controller() const { return controller_; }

 private:
  static bool Poll(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + kHangGuard;
    while (absl::Now() < deadline) {
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }
  std::string Ready(ChildProcess& p, const std::string& key) {
    auto ready = p.WaitReady();
    EXPECT_TRUE(ready.count(key)) << p.Output();
    return Dialable(ready[key]);
  }

  std::string db_, sim_http_, controller_, worker_grpc_, worker_metrics_;
  std::unique_ptr<ChildProcess> sim_, controller_proc_, worker_;
};

// ---- one Converse call, with the responses read on a thread ----

class Call {
 public:
  explicit Call(v1::Media::Stub* stub) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(2)));
    stream_ = stub->Converse(&ctx_);
    reader_ = std::thread([this] { Read(); });
  }
  ~Call() {
    if (reader_.joinable()) {
      ctx_.TryCancel();
      reader_.join();
    }
  }

  bool Start(v1::AudioFormat in, v1::AudioFormat out) {
    v1::ConverseRequest req;
    req.mutable_start()->set_phone_number_id(kPhoneNumberId);
    req.mutable_start()->set_wa_id(kUser);
    req.mutable_start()->set_input_format(in);
    req.mutable_start()->set_output_format(out);
    return Write(req);
  }
  bool Audio(std::string bytes) {
    v1::ConverseRequest req;
    req.set_audio(std::move(bytes));
    return Write(req);
  }
  // PCM in 100 ms messages, then `silence_s` of zeros (the agent's VAD ends
  // a user turn on silence).
  void Pcm16k(const std::vector<int16_t>& pcm, double silence_s) {
    std::vector<int16_t> all = pcm;
    all.resize(all.size() + static_cast<size_t>(silence_s * 16000), 0);
    for (size_t off = 0; off < all.size(); off += 1600) {
      const size_t n = std::min<size_t>(1600, all.size() - off);
      ASSERT_TRUE(Audio(PcmBytes(std::vector<int16_t>(all.begin() + off, all.begin() + off + n))));
    }
  }
  bool EndOfInput() {
    v1::ConverseRequest req;
    req.set_end_of_input(true);
    return Write(req);
  }
  bool Write(const v1::ConverseRequest& req) { return stream_->Write(req); }
  void Cancel() { ctx_.TryCancel(); }

  // Waits until `pred` holds for the responses so far (or the stream ended).
  bool Await(std::function<bool(const Responses&)> pred) {
    absl::MutexLock lock(&mu_);
    pred_ = std::move(pred);
    mu_.AwaitWithTimeout(absl::Condition(this, &Call::Ready), kHangGuard);
    return pred_(responses_);
  }
  // Waits until the server ended the call; false at the hang guard.
  bool AwaitEnd() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&ended_), kHangGuard);
  }
  grpc::Status Finish() {
    stream_->WritesDone();
    reader_.join();
    return stream_->Finish();
  }
  Responses responses() {
    absl::MutexLock lock(&mu_);
    return responses_;
  }

 private:
  void Read() {
    v1::ConverseResponse r;
    while (stream_->Read(&r)) {
      absl::MutexLock lock(&mu_);
      responses_.push_back(r);
    }
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_ || pred_(responses_); }

  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>> stream_;
  std::thread reader_;
  absl::Mutex mu_;
  Responses responses_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::function<bool(const Responses&)> pred_ ABSL_GUARDED_BY(mu_);
};

bool Has(const Responses& rs, v1::ConverseResponse::MsgCase c) {
  for (const auto& r : rs) {
    if (r.msg_case() == c) return true;
  }
  return false;
}

size_t AudioBytes(const Responses& rs, size_t from = 0) {
  size_t n = 0;
  for (size_t i = from; i < rs.size(); ++i) n += rs[i].audio().size();
  return n;
}

std::string Transcripts(const Responses& rs) {
  std::string all;
  for (const auto& r : rs) {
    if (r.has_user_transcript()) absl::StrAppend(&all, r.user_transcript(), "\n");
  }
  return all;
}

// ---- the tests ----

// Streams hold capacity: past --max_streams they are refused at once (the
// rest of the capacity stays for WhatsApp users), and one that never sends
// start gives its slot back after --converse_start_timeout.
TEST(ConverseTest, StreamsAreBoundedAndOneWithoutStartTimesOut) {
  Cluster c(/*reply_pace=*/0, {"--capacity=4", "--max_streams=2", "--converse_start_timeout=1s"});
  c.AwaitAttached();
  auto stub = c.Media();
  Call a(stub.get()), b(stub.get());
  ASSERT_TRUE(a.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_PCM_16000));
  ASSERT_TRUE(b.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_PCM_16000));
  ASSERT_TRUE(a.Await([](const Responses& rs) { return !rs.empty(); }));
  ASSERT_TRUE(b.Await([](const Responses& rs) { return !rs.empty(); }));
  Call full(stub.get());
  (void)full.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_PCM_16000);
  grpc::Status refused = full.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("at most 2 streams"));
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams_total{outcome=\"refused_full\"} 1"));
  a.Cancel();
  ASSERT_TRUE(c.AwaitMetric("bridge_converse_streams 1"));
  Call silent(stub.get());  // connects and never says start
  ASSERT_TRUE(silent.AwaitEnd());
  grpc::Status timed_out = silent.Finish();
  EXPECT_EQ(timed_out.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << timed_out.error_message();
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams 1"));
}

TEST(ConverseTest, OpusPacketsAreHeardAndTheReplyComesAsPcm24k) {
  Cluster c(/*reply_pace=*/0);
  c.AwaitAttached();
  auto stub = c.Media();
  Call call(stub.get());
  ASSERT_TRUE(call.Start(v1::AUDIO_FORMAT_OPUS, v1::AUDIO_FORMAT_PCM_24000));
  ASSERT_TRUE(call.Await([](const Responses& rs) { return !rs.empty(); }));
  const v1::ConverseStarted started = call.responses()[0].started();
  ASSERT_FALSE(started.session_id().empty()) << call.responses()[0].DebugString();
  EXPECT_FALSE(started.conversation_id().empty());
  EXPECT_EQ(started.agent_input_format(), "pcm_16000");
  EXPECT_EQ(started.agent_output_format(), "pcm_16000");
  // Listed by the controller as a live session of this worker.
  EXPECT_TRUE(c.AwaitListed(started.session_id(), true));

  for (std::string& p : OpusPackets(DecodeFixture("voice_note_tone_440hz.ogg", 48000))) {
    ASSERT_TRUE(call.Audio(std::move(p)));
  }
  ASSERT_TRUE(call.EndOfInput());
  grpc::Status status = call.Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();

  const Responses rs = call.responses();
  EXPECT_THAT(Transcripts(rs), HasSubstr("peak 440 Hz"));
  EXPECT_TRUE(Has(rs, v1::ConverseResponse::kAgentText));
  ASSERT_TRUE(rs.back().has_turn_end()) << rs.back().DebugString();
  EXPECT_EQ(rs.back().turn_end(), 1);
  // The whole reply, resampled 16 -> 24 kHz: within one 20 ms frame.
  EXPECT_NEAR(static_cast<double>(AudioBytes(rs) / 2), ReplySamples16k() * 1.5, 480);

  json conv = c.Conversations(1)["conversations"][0];
  ASSERT_FALSE(conv["transcripts"].empty()) << conv.dump();
  EXPECT_THAT(conv["transcripts"][0].get<std::string>(), HasSubstr("peak 440 Hz"));
  EXPECT_NE(conv["user_id"], kUser);  // derived, never the phone number
  EXPECT_TRUE(c.AwaitListed(started.session_id(), false));
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams 0\n"));
}

TEST(ConverseTest, InterruptionStopsTheReplyAndIsReported) {
  Cluster c(/*reply_pace=*/1);  // replies in real time, so there is time to cut in
  auto stub = c.Media();
  Call call(stub.get());
  ASSERT_TRUE(call.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_PCM_16000));
  const std::vector<int16_t> tone = DecodeFixture("voice_note_tone_440hz.ogg", 16000);
  call.Pcm16k(tone, 1.5);
  ASSERT_TRUE(call.Await([](const Responses& rs) { return Has(rs, v1::ConverseResponse::kAudio); }))
      << "no reply audio";
  call.Pcm16k(tone, 1.5);  // the user talks over the agent
  ASSERT_TRUE(call.Await([](const Responses& rs) {
    return Has(rs, v1::ConverseResponse::kInterruption);
  }));
  ASSERT_TRUE(call.EndOfInput());
  grpc::Status status = call.Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();

  const Responses rs = call.responses();
  size_t cut = 0;
  while (!rs[cut].has_interruption()) ++cut;
  // After the interruption: no stale audio, then the answer to the new turn
  // in full, and the only turn_end (the cut reply has none).
  size_t next_turn = cut + 1;
  while (next_turn < rs.size() && !rs[next_turn].has_user_transcript()) {
    EXPECT_FALSE(rs[next_turn].has_audio()) << "stale audio after the interruption";
    ++next_turn;
  }
  ASSERT_LT(next_turn, rs.size()) << "no second user turn";
  EXPECT_EQ(AudioBytes(rs, next_turn) / 2, ReplySamples16k());
  EXPECT_LT(AudioBytes(rs, 0) - AudioBytes(rs, cut), ReplySamples16k() * 2);
  int turn_ends = 0;
  for (const auto& r : rs) turn_ends += r.has_turn_end();
  EXPECT_EQ(turn_ends, 1);
  EXPECT_EQ(c.Conversations(1)["conversations"][0]["interruptions"], 1);
}

TEST(ConverseTest, CancelledStreamFreesItsSession) {
  Cluster c(/*reply_pace=*/0);
  c.AwaitAttached();
  auto stub = c.Media();
  std::string session_id;
  {
    Call call(stub.get());
    ASSERT_TRUE(call.Start(v1::AUDIO_FORMAT_OPUS, v1::AUDIO_FORMAT_OPUS));
    ASSERT_TRUE(call.Await([](const Responses& rs) { return !rs.empty(); }));
    session_id = call.responses()[0].started().session_id();
    ASSERT_FALSE(session_id.empty());
    ASSERT_TRUE(c.AwaitListed(session_id, true));
    EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams 1\n"));
    std::vector<std::string> packets = OpusPackets(DecodeFixture("voice_note_hello.ogg", 48000));
    for (size_t i = 0; i < packets.size() / 2; ++i) ASSERT_TRUE(call.Audio(packets[i]));
    call.Cancel();  // mid-note
    EXPECT_EQ(call.Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(c.AwaitListed(session_id, false));
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams 0\n"));
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams_total{outcome=\"cancelled\"} 1\n"));
  json conv = c.Conversations(1, /*ended=*/true)["conversations"][0];
  EXPECT_EQ(conv["ended"], true) << conv.dump();  // the agent socket was closed
}

TEST(ConverseTest, OperatorEndSessionEndsTheStream) {
  Cluster c(/*reply_pace=*/0);
  c.AwaitAttached();
  auto stub = c.Media();
  Call call(stub.get());
  ASSERT_TRUE(call.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_OGG_OPUS));
  ASSERT_TRUE(call.Await([](const Responses& rs) { return !rs.empty(); }));
  const std::string session_id = call.responses()[0].started().session_id();
  ASSERT_TRUE(c.AwaitListed(session_id, true));
  ASSERT_TRUE(c.EndSession(session_id).ok());
  grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("e2e operator"));
  EXPECT_TRUE(c.AwaitListed(session_id, false));
  EXPECT_TRUE(c.AwaitMetric("bridge_converse_streams 0\n"));
}

TEST(ConverseTest, WorkerStopEndsOpenStreamsAndExitsCleanly) {
  Cluster c(/*reply_pace=*/1);
  auto stub = c.Media();
  Call call(stub.get());
  ASSERT_TRUE(call.Start(v1::AUDIO_FORMAT_PCM_16000, v1::AUDIO_FORMAT_OPUS));
  call.Pcm16k(DecodeFixture("voice_note_tone_440hz.ogg", 16000), 1.5);
  ASSERT_TRUE(call.Await([](const Responses& rs) { return Has(rs, v1::ConverseResponse::kAudio); }));
  c.worker().Signal(SIGTERM);  // mid-reply
  EXPECT_EQ(call.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(c.worker().Wait(kHangGuard), 0) << c.worker().Output();
  json conv = c.Conversations(1, /*ended=*/true)["conversations"][0];
  EXPECT_EQ(conv["ended"], true) << conv.dump();
}

TEST(ConverseTest, FirstMessageMustBeStart) {
  Cluster c(/*reply_pace=*/0);
  auto stub = c.Media();
  Call call(stub.get());
  ASSERT_TRUE(call.Audio("not a start"));
  grpc::Status status = call.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("start"));
}

// ---- bridgectl talk ----

std::string TempPath(const std::string& name) {
  static std::atomic<int> n{0};
  return absl::StrCat(::testing::TempDir(), "/talk-", getpid(), "-", n++, "-", name);
}

std::string FindOnPath(const std::string& tool) {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    const std::string path = absl::StrCat(dir, "/", tool);
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

TEST(BridgectlTalkTest, HelloNoteGetsAPlayableReply) {
  Cluster c(/*reply_pace=*/0);
  c.AwaitAttached();  // --controller picks the worker from ListWorkers
  const std::string reply = TempPath("reply.ogg");
  ChildProcess talk(BRIDGECTL_BIN, {absl::StrCat("--controller=", c.controller()), "talk",
                                    FixturePath("voice_note_hello.ogg"), "--out", reply});
  ASSERT_EQ(talk.Wait(kHangGuard), 0) << talk.Output();
  EXPECT_THAT(talk.Output(), HasSubstr("user:  [audio"));
  EXPECT_THAT(talk.Output(), HasSubstr("agent: Thanks!"));
  const std::string ogg = ReadFile(reply);
  auto pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()}, 16000);
  ASSERT_TRUE(pcm.ok()) << pcm.status();
  EXPECT_NEAR(static_cast<double>(pcm->size()), ReplySamples16k(), 320);
  const std::string opusinfo = FindOnPath("opusinfo");
  if (opusinfo.empty()) GTEST_SKIP() << "opusinfo not installed";
  ChildProcess info(opusinfo, {reply});
  EXPECT_EQ(info.Wait(kHangGuard), 0) << info.Output();
}

TEST(BridgectlTalkTest, FailsWithOneLineReason) {
  const std::string reply = TempPath("none.ogg");
  ChildProcess bad(BRIDGECTL_BIN, {"--worker=127.0.0.1:1", "talk",
                                   FixturePath("broken_random.ogg"), "--out", reply});
  EXPECT_EQ(bad.Wait(kHangGuard), 1);
  EXPECT_THAT(bad.Output(), HasSubstr("not a playable Ogg/Opus voice note"));
  ChildProcess unreachable(BRIDGECTL_BIN, {"--worker=127.0.0.1:1", "talk",
                                           FixturePath("voice_note_hello.ogg"), "--out", reply});
  EXPECT_EQ(unreachable.Wait(kHangGuard), 1);
  EXPECT_THAT(unreachable.Output(), HasSubstr("worker 127.0.0.1:1"));
}

}  // namespace
}  // namespace bridge::testing
