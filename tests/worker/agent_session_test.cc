// AgentSession over real sockets: against elevenlabs-sim (in process, port 0)
// for whole conversations, and against a small scripted agent (a ws::Server
// that sends what a test tells it) for what the simulator never says: stale
// audio after an interruption, unknown and ignored message types, tool calls,
// a format we refuse, a 1008 close. Waits are on events; timeouts only guard
// against hangs.
#include "media_worker/agent_session.h"

#include <fstream>
#include <algorithm>
#include <atomic>
#include <functional>
#include <optional>
#include <sstream>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "agent_protocol.h"
#include "reply_evidence.h"
#include "audio/ogg_opus_decoder.h"
#include "common/log.h"
#include "elevenlabs_sim/elevenlabs_sim.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "ws/websocket.h"

namespace bridge::media_worker {
namespace {

using elevenlabs_sim::ElevenLabsSim;
using elevenlabs_sim::SimOptions;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(30);  // hang guard, not a timing assertion
constexpr char kAgent[] = "agent_t";
constexpr char kKey[] = "sk_sim_agent_session_key";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int16_t> DecodeFixture(const std::string& name, int rate) {
  std::string bytes = ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", name));
  auto pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                                  rate);
  EXPECT_TRUE(pcm.ok()) << pcm.status();
  return pcm.ok() ? *pcm : std::vector<int16_t>();
}

// A recorded note as the worker streams it: the note, then 1.5 s of zeros
// so the agent's VAD ends the turn (PROTOCOLS.md B4).
std::vector<int16_t> ToneNote(int rate) {
  std::vector<int16_t> pcm = DecodeFixture("voice_note_tone_440hz.ogg", rate);
  pcm.resize(pcm.size() + rate * 3 / 2, 0);
  return pcm;
}

size_t ReplySamples(const std::string& fixture) {
  return ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", fixture)).size() / 2;
}

// ---- what the session told us ----

struct Seen {
  bool started = false;
  std::string conversation_id;
  int input_rate = 0, output_rate = 0;
  std::vector<std::string> transcripts, responses;
  std::vector<int64_t> audio_ids;
  size_t audio_samples = 0;
  std::vector<int64_t> interruptions;
  size_t samples_at_interruption = 0;
  int reply_ends = 0;
  std::vector<ReplyEnd> end_reasons;
  std::vector<std::pair<std::string, std::string>> corrections;
  std::vector<std::string> order;  // "started", "audio:<id>", "interruption:<id>", ...
  bool closed = false;
  int close_code = -1;
  std::string close_reason;
  bool retryable = false;
  bool test_closed = false;  // the test called Close(): nothing may follow
  int late_callbacks = 0;
};

// Callbacks capture the recorder by shared_ptr, so one arriving after the
// session is gone is counted rather than crashing the test.
class Recorder : public std::enable_shared_from_this<Recorder> {
 public:
  AgentEvents Events() {
    std::shared_ptr<Recorder> self = shared_from_this();
    AgentEvents ev;
    ev.on_started = [self](const std::string& id, int in, int out) {
      self->Note("started", [&](Seen& s) {
        s.started = true;
        s.conversation_id = id;
        s.input_rate = in;
        s.output_rate = out;
      });
    };
    ev.on_user_transcript = [self](const std::string& t) {
      self->Note("transcript", [&](Seen& s) { s.transcripts.push_back(t); });
    };
    ev.on_agent_response = [self](const std::string& t) {
      self->Note("response", [&](Seen& s) { s.responses.push_back(t); });
    };
    ev.on_audio = [self](std::vector<int16_t> pcm, int64_t id) {
      if (self->on_audio_hook) self->on_audio_hook();
      self->Note(absl::StrCat("audio:", id), [&](Seen& s) {
        s.audio_ids.push_back(id);
        s.audio_samples += pcm.size();
      });
    };
    ev.on_interruption = [self](int64_t id) {
      self->Note(absl::StrCat("interruption:", id), [&](Seen& s) {
        s.interruptions.push_back(id);
        s.samples_at_interruption = s.audio_samples;
      });
    };
    ev.on_reply_end = [self](ReplyEnd why) {
      self->Note("reply_end", [&](Seen& s) {
        ++s.reply_ends;
        s.end_reasons.push_back(why);
      });
    };
    ev.on_agent_correction = [self](const std::string& original, const std::string& corrected) {
      self->Note("correction", [&](Seen& s) { s.corrections.emplace_back(original, corrected); });
    };
    ev.on_closed = [self](int code, const std::string& reason, bool retryable) {
      self->Note("closed", [&](Seen& s) {
        s.closed = true;
        s.close_code = code;
        s.close_reason = reason;
        s.retryable = retryable;
      });
    };
    return ev;
  }

  bool Wait(const std::function<bool(const Seen&)>& done, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done(seen_); };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  }
  Seen Get() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  void MarkTestClosed() {
    absl::MutexLock lock(&mu_);
    seen_.test_closed = true;
  }

  // Runs first in on_audio, on the io thread (set before Start).
  std::function<void()> on_audio_hook;

 private:
  template <typename Fn>
  void Note(std::string what, Fn fn) {
    absl::MutexLock lock(&mu_);
    if (seen_.test_closed) ++seen_.late_callbacks;
    seen_.order.push_back(std::move(what));
    fn(seen_);
  }

  absl::Mutex mu_;
  Seen seen_ ABSL_GUARDED_BY(mu_);
};

// ---- a scripted agent, for what the simulator never sends ----

class ScriptedAgent {
 public:
  struct Plan {
    std::vector<json> on_open;  // sent as soon as the socket opens
    std::optional<std::pair<int, std::string>> close_on_init;  // close when initiation arrives
  };

  explicit ScriptedAgent(Plan plan) : plan_(std::move(plan)) {
    ws::ServerCallbacks cb;
    cb.on_upgrade = [this](const ws::HttpRequest& req, std::shared_ptr<ws::Connection> conn)
        -> std::variant<std::shared_ptr<ws::ConnectionHandler>, ws::HttpResponse> {
      {
        absl::MutexLock lock(&mu_);
        resource_ = req.resource;
      }
      return std::make_shared<Peer>(this, std::move(conn));
    };
    auto server = ws::Server::Start({}, std::move(cb));
    EXPECT_TRUE(server.ok()) << server.status();
    if (server.ok()) server_ = *std::move(server);
  }
  ~ScriptedAgent() {
    if (server_) server_->Stop();
  }

  std::string base_url() const { return absl::StrCat("http://", server_->address()); }

  std::optional<json> WaitReceived(const std::string& type) {
    absl::MutexLock lock(&mu_);
    auto find = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> const json* {
      for (const json& m : received_) {
        if (m.value("type", "") == type) return &m;
      }
      return nullptr;
    };
    auto have = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return find() != nullptr; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&have), kWait)) return std::nullopt;
    return *find();
  }
  // Waits until `done` says yes about everything received so far.
  bool Wait(const std::function<bool(const std::vector<json>&)>& done) {
    absl::MutexLock lock(&mu_);
    auto have = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done(received_); };
    return mu_.AwaitWithTimeout(absl::Condition(&have), kWait);
  }
  std::string resource() {
    absl::MutexLock lock(&mu_);
    return resource_;
  }

 private:
  class Peer : public ws::ConnectionHandler {
   public:
    Peer(ScriptedAgent* owner, std::shared_ptr<ws::Connection> conn)
        : owner_(owner), conn_(std::move(conn)) {}
    void OnOpen() override {
      for (const json& m : owner_->plan_.on_open) conn_->SendText(m.dump());
    }
    void OnText(const std::string& text) override {
      json msg = json::parse(text, nullptr, false);
      {
        absl::MutexLock lock(&owner_->mu_);
        owner_->received_.push_back(msg);
      }
      if (owner_->plan_.close_on_init &&
          msg.value("type", "") == "conversation_initiation_client_data") {
        conn_->Close(owner_->plan_.close_on_init->first, owner_->plan_.close_on_init->second);
      }
    }
    void OnClose(int, const std::string&, bool) override { conn_.reset(); }

   private:
    ScriptedAgent* const owner_;
    std::shared_ptr<ws::Connection> conn_;
  };

  const Plan plan_;
  absl::Mutex mu_;
  std::vector<json> received_ ABSL_GUARDED_BY(mu_);
  std::string resource_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ws::Server> server_;
};

json Metadata(const std::string& in_format = "pcm_16000",
              const std::string& out_format = "pcm_16000") {
  return {{"type", "conversation_initiation_metadata"},
          {"conversation_initiation_metadata_event",
           {{"conversation_id", "conv_scripted"},
            {"agent_output_audio_format", out_format},
            {"user_input_audio_format", in_format}}}};
}

json Audio(int64_t id, size_t samples, bool is_final = false) {
  std::vector<int16_t> pcm(samples, 1000);
  json ev = {{"audio_base_64", absl::Base64Escape(absl::string_view(
                                   reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2))},
             {"event_id", id}};
  if (is_final) ev["is_final"] = true;
  return {{"type", "audio"}, {"audio_event", ev}};
}

// ---- fixture ----

class AgentSessionTest : public ::testing::Test {
 protected:
  void TearDown() override {
    session_.reset();
    if (pool_) pool_->Stop();
    if (sim_) sim_->Shutdown();
  }

  // Quick and quiet: unpaced, end markers, no mid-reply pause, no re-engagement.
  static SimOptions Fast() {
    SimOptions o;
    o.reply_pace = 0;
    o.emit_final_markers = true;
    o.reply_gap_ms = 0;
    o.turn_timeout_s = 0;
    return o;
  }

  // As the live service behaves by default: no end marker, alignment, a
  // pause in the middle of the reply (only the pace is faster).
  static SimOptions Live() {
    SimOptions o;
    o.reply_pace = 0;
    o.turn_timeout_s = 0;
    return o;
  }

  // Tight reply-end settings so tests are quick; the pauses above are longer.
  static AgentOptions Tight(AgentOptions o) {
    o.reply_quiet_gap = absl::Milliseconds(500);
    o.reply_settle = absl::Milliseconds(300);
    return o;
  }

  void StartSim(SimOptions o) {
    o.fixtures_dir = absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio");
    auto sim = ElevenLabsSim::Start(o);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = *std::move(sim);
  }

  AgentOptions Options(const std::string& base_url) {
    AgentOptions o;
    o.base_url = base_url;
    o.agent_id = kAgent;
    o.user_id = "u-hash";
    o.dynamic_variables = {{"user_name", "Ana"}};
    o.connect_timeout = absl::Seconds(20);
    return o;
  }
  AgentOptions SimOptionsFor() { return Options(sim_->http_base_url()); }

  void StartSession(const AgentOptions& o) {
    auto session = AgentSession::Start(o, rec_->Events(), pool_.get());
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = *std::move(session);
  }
  void AwaitStarted() {
    ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.started || s.closed; }));
    ASSERT_TRUE(rec_->Get().started) << rec_->Get().close_reason;
  }

  json SimHttp(const std::string& method, const std::string& path, const std::string& body = "") {
    httplib::Client cli(sim_->http_base_url());
    cli.set_read_timeout(60);
    httplib::Result r = method == "GET" ? cli.Get(path.c_str())
                                        : cli.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(r && r->status == 200) << method << " " << path;
    return r ? json::parse(r->body, nullptr, false) : json();
  }
  // The first conversation once `n` have ended (a long poll, not a sleep).
  json EndedConversation(int n = 1) {
    json j = SimHttp("GET", absl::StrCat("/sim/conversations?ended=true&min_count=", n,
                                         "&wait_ms=30000"));
    EXPECT_GE(j["conversations"].size(), static_cast<size_t>(n)) << j.dump();
    return j["conversations"].empty() ? json::object() : j["conversations"][0];
  }

  std::shared_ptr<Recorder> rec_ = std::make_shared<Recorder>();
  std::unique_ptr<ElevenLabsSim> sim_;
  std::unique_ptr<ws::ClientPool> pool_ = ws::ClientPool::Create();
  std::unique_ptr<AgentSession> session_;
};

bool ReplyEnded(const Seen& s) { return s.reply_ends >= 1 || s.closed; }

// ---- the pure protocol helpers ----

TEST(AgentProtocolTest, AudioFormats) {
  EXPECT_EQ(agent_internal::ParseAudioFormat("pcm_16000")->rate, 16000);
  EXPECT_FALSE(agent_internal::ParseAudioFormat("pcm_16000")->ulaw);
  EXPECT_EQ(agent_internal::ParseAudioFormat("pcm_22050")->rate, 22050);
  EXPECT_EQ(agent_internal::ParseAudioFormat("pcm_44100")->rate, 44100);
  EXPECT_EQ(agent_internal::ParseAudioFormat("ulaw_8000")->rate, 8000);
  EXPECT_TRUE(agent_internal::ParseAudioFormat("ulaw_8000")->ulaw);
  EXPECT_FALSE(agent_internal::ParseAudioFormat("ulaw_16000").ok());
  EXPECT_FALSE(agent_internal::ParseAudioFormat("pcm_12345").ok());
  EXPECT_FALSE(agent_internal::ParseAudioFormat("").ok());
}

TEST(AgentProtocolTest, MuLawRoundTripsWithinG711Precision) {
  std::vector<int16_t> pcm = {0, 100, -100, 1000, -1000, 8000, -8000, 30000, -30000};
  json audio = json::parse(agent_internal::AudioMessage(pcm, /*ulaw=*/true));
  std::string bytes;
  ASSERT_TRUE(absl::Base64Unescape(audio["user_audio_chunk"].get<std::string>(), &bytes));
  EXPECT_EQ(bytes.size(), pcm.size());  // one byte per sample on the wire
  auto back = agent_internal::DecodeAudio(audio["user_audio_chunk"], /*ulaw=*/true);
  ASSERT_TRUE(back.has_value());
  ASSERT_EQ(back->size(), pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i) {
    // G.711 keeps about 3% of the magnitude (plus a small step near zero).
    EXPECT_NEAR((*back)[i], pcm[i], std::abs(pcm[i]) / 16 + 8) << i;
  }
}

TEST(AgentProtocolTest, RetryPolicy) {
  EXPECT_TRUE(agent_internal::RetryableCloseCode(1000));
  EXPECT_TRUE(agent_internal::RetryableCloseCode(1002));
  EXPECT_TRUE(agent_internal::RetryableCloseCode(1011));
  EXPECT_FALSE(agent_internal::RetryableCloseCode(1008));
  EXPECT_FALSE(agent_internal::RetryableConnectFailure(401));
  EXPECT_FALSE(agent_internal::RetryableConnectFailure(403));
  EXPECT_FALSE(agent_internal::RetryableConnectFailure(404));
  EXPECT_TRUE(agent_internal::RetryableConnectFailure(429));
  EXPECT_TRUE(agent_internal::RetryableConnectFailure(503));
  EXPECT_TRUE(agent_internal::RetryableConnectFailure(0));  // refused, reset, timed out
}

TEST(AgentProtocolTest, Urls) {
  auto base = agent_internal::NormalizeBaseUrl("https://api.elevenlabs.io/");
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(agent_internal::PublicAgentUrl(*base, "agent_1"),
            "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_1");
  EXPECT_EQ(agent_internal::PublicAgentUrl("http://127.0.0.1:5", "a b"),
            "ws://127.0.0.1:5/v1/convai/conversation?agent_id=a%20b");
  EXPECT_FALSE(agent_internal::NormalizeBaseUrl("ftp://x").ok());
  EXPECT_FALSE(agent_internal::NormalizeBaseUrl("https://").ok());
  EXPECT_EQ(agent_internal::HostOf("wss://h.example:8443/v1/x?conversation_signature=s"),
            "h.example:8443");
}

TEST(AgentProtocolTest, MessagesRoundTrip) {
  json init = json::parse(agent_internal::InitiationMessage("u1", {{"user_name", "Zoë"}}));
  EXPECT_EQ(init["type"], "conversation_initiation_client_data");
  EXPECT_FALSE(init.contains("conversation_config_override"));
  EXPECT_EQ(init["user_id"], "u1");
  EXPECT_EQ(init["dynamic_variables"]["user_name"], "Zoë");
  std::vector<int16_t> pcm = {0, 1, -1, 32767, -32768};
  json audio = json::parse(agent_internal::AudioMessage(pcm, /*ulaw=*/false));
  EXPECT_EQ(*agent_internal::DecodeAudio(audio["user_audio_chunk"], /*ulaw=*/false), pcm);
  EXPECT_FALSE(agent_internal::DecodeAudio("not base64!", /*ulaw=*/false).has_value());
  EXPECT_EQ(json::parse(agent_internal::PongMessage(42)), json({{"type", "pong"}, {"event_id", 42}}));
}

// ---- the end of a reply: text against alignment (PROTOCOLS.md B4) ----

TEST(ReplyEvidenceTest, CoveredOnlyWhenTheSpokenCharactersReachTheEndOfTheText) {
  agent_internal::ReplyEvidence e;
  e.AddAligned("Hello th");
  EXPECT_FALSE(e.Covered());  // no text yet: agent_response may come after the audio
  e.AddText("Hello there, how are you?");
  EXPECT_TRUE(e.alignment_seen());
  EXPECT_FALSE(e.Covered());
  e.AddAligned("ere how are");
  EXPECT_FALSE(e.Covered());
  e.AddAligned(" you");  // punctuation and spacing differ: still the whole text
  EXPECT_TRUE(e.Covered());
}

TEST(ReplyEvidenceTest, TwoResponsesMustBothBeSpoken) {
  agent_internal::ReplyEvidence e;
  e.AddText("First part.");
  e.AddAligned("First part.");
  EXPECT_TRUE(e.Covered());
  e.AddText("And a second one.");
  EXPECT_FALSE(e.Covered());
  e.AddAligned("And a second one");
  EXPECT_TRUE(e.Covered());
}

TEST(ReplyEvidenceTest, UnspokenSymbolsAndCaseDoNotCount) {
  EXPECT_EQ(agent_internal::NormalizeSpoken("Olá — “Zoë”! 👋 OK…"), "olázoëok");
  agent_internal::ReplyEvidence e;
  e.AddText("Great news \xF0\x9F\x8E\x89 see you soon!");
  e.AddAligned("great news see you soon");
  EXPECT_TRUE(e.Covered());
}

TEST(ReplyEvidenceTest, ARepeatedPhraseMidReplyIsNotTheEnd) {
  agent_internal::ReplyEvidence e;
  e.AddText("Sure, sure. Let me check that for you. Sure, sure.");
  e.AddAligned("Sure, sure.");
  EXPECT_FALSE(e.Covered());
}

TEST(ReplyEvidenceTest, CorrectionReplacesTheCutText) {
  agent_internal::ReplyEvidence e;
  e.AddText("One two three four");
  e.Correct("One two three four", "One two");
  EXPECT_EQ(e.text(), "One two");
  e.AddAligned("One two");
  EXPECT_TRUE(e.Covered());
  e.ToolRequested();
  EXPECT_TRUE(e.tool_running());
  e.ToolResponded();
  EXPECT_FALSE(e.tool_running());
}

// ---- against elevenlabs-sim ----

enum class Evidence { kMarkers, kAlignment, kQuietGap };

class ToneTurnTest : public AgentSessionTest, public ::testing::WithParamInterface<Evidence> {};

// Whichever evidence ends it, a reply that pauses mid-way ends once, after
// all of its audio: markers (not in the contract, honoured), alignment
// covering the text (the live default), or — with neither — a quiet gap
// longer than the pause.
TEST_P(ToneTurnTest, VoiceNoteIsHeardAndTheReplyEndsOnce) {
  SimOptions so = Live();
  so.emit_final_markers = GetParam() == Evidence::kMarkers;
  so.alignment = GetParam() != Evidence::kQuietGap;
  so.reply_gap_ms = GetParam() == Evidence::kQuietGap ? 300 : 1500;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  AgentOptions o = Tight(SimOptionsFor());  // uncovered alignment waits 4 x 500 ms > 1500 ms
  ASSERT_NO_FATAL_FAILURE(StartSession(o));
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
  Seen s = rec_->Get();
  EXPECT_FALSE(s.conversation_id.empty());
  EXPECT_EQ(s.input_rate, 16000);
  EXPECT_EQ(s.output_rate, 16000);
  EXPECT_EQ(session_->conversation_id(), s.conversation_id);
  EXPECT_EQ(session_->input_rate(), 16000);

  std::vector<int16_t> note = ToneNote(16000);
  for (size_t off = 0; off < note.size(); off += 1600) {
    session_->SendAudio(absl::MakeConstSpan(note).subspan(off, 1600));
  }
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  ASSERT_EQ(s.transcripts.size(), 1u);
  EXPECT_THAT(s.transcripts[0], HasSubstr("peak 440 Hz"));
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_16k.s16le"));  // not cut at the pause
  EXPECT_TRUE(std::is_sorted(s.audio_ids.begin(), s.audio_ids.end()));
  EXPECT_EQ(s.order.back(), "reply_end");  // after all the audio
  const ReplyEnd want = GetParam() == Evidence::kMarkers     ? ReplyEnd::kMarker
                        : GetParam() == Evidence::kAlignment ? ReplyEnd::kAligned
                                                             : ReplyEnd::kQuietGap;
  EXPECT_THAT(s.end_reasons, ElementsAre(want));
  // A second end for the same reply would come within a quiet gap or two.
  EXPECT_FALSE(rec_->Wait([](const Seen& s) { return s.reply_ends > 1; }, absl::Milliseconds(1200)));
  EXPECT_EQ(rec_->Get().reply_ends, 1);
}

INSTANTIATE_TEST_SUITE_P(EndEvidence, ToneTurnTest,
                         ::testing::Values(Evidence::kMarkers, Evidence::kAlignment,
                                           Evidence::kQuietGap),
                         [](const auto& info) {
                           return info.param == Evidence::kMarkers     ? "Markers"
                                  : info.param == Evidence::kAlignment ? "Alignment"
                                                                       : "QuietGap";
                         });

// agent_response may come after the audio (seen live): the reply is not
// over until the text arrives and the alignment covers it.
TEST_F(AgentSessionTest, AgentResponseAfterTheAudioStillEndsTheReplyOnce) {
  SimOptions so = Live();
  so.agent_response_timing = "end";
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(Tight(SimOptionsFor())));
  session_->SendText("late text please");
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  EXPECT_THAT(s.responses, ElementsAre("You said: late text please"));
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_16k.s16le"));
  EXPECT_THAT(s.end_reasons, ElementsAre(ReplyEnd::kAligned));
  // The text came after the last audio chunk.
  auto response = std::find(s.order.begin(), s.order.end(), "response");
  ASSERT_NE(response, s.order.end());
  EXPECT_EQ(std::find_if(response, s.order.end(),
                         [](const std::string& e) { return absl::StartsWith(e, "audio:"); }),
            s.order.end());
}

// One user turn, two agent responses with a pause between them: one reply.
TEST_F(AgentSessionTest, TwoResponsesToOneTurnAreOneReply) {
  SimOptions so = Live();
  so.responses_per_turn = 2;
  so.reply_gap_ms = 500;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  AgentOptions o = Tight(SimOptionsFor());
  o.reply_settle = absl::Milliseconds(1500);  // longer than the pause between responses
  ASSERT_NO_FATAL_FAILURE(StartSession(o));
  session_->SendText("two parts");
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  EXPECT_EQ(s.responses.size(), 2u);
  EXPECT_EQ(s.audio_samples, 2 * ReplySamples("agent_reply_16k.s16le"));
  EXPECT_EQ(s.reply_ends, 1);
}

// end_call: the goodbye is the reply (ended by the tool), then the close.
TEST_F(AgentSessionTest, EndCallEndsTheReplyThenTheConversation) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Live()));
  ASSERT_NO_FATAL_FAILURE(StartSession(Tight(SimOptionsFor())));
  session_->SendText("thanks, goodbye");
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_THAT(s.responses, ElementsAre(HasSubstr("Goodbye")));
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_16k.s16le"));
  EXPECT_THAT(s.end_reasons, ElementsAre(ReplyEnd::kEndCall));
  EXPECT_EQ(s.close_code, 1000);
  EXPECT_EQ(EndedConversation()["ended_by_agent"], true);
}

// A conversation held only around turns: closed after the linger, reported
// like any close; input before the linger runs out keeps it open.
TEST_F(AgentSessionTest, CloseWhenIdleClosesUnlessSomethingIsSent) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Fast()));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
  session_->CloseWhenIdle(absl::Seconds(30));
  session_->SendText("keeps it open");  // cancels the pending idle close
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  session_->CloseWhenIdle(absl::Milliseconds(100));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_EQ(s.close_code, 1000);
  EXPECT_TRUE(s.retryable);
  json rec = EndedConversation();
  EXPECT_EQ(rec["closed_by"], "client");
  EXPECT_EQ(rec["user_messages"].size(), 1u);
}

// Telephony agents: μ-law both ways at 8 kHz.
TEST_F(AgentSessionTest, MuLawAgentHearsTheNoteAndAnswers) {
  SimOptions so = Fast();
  so.input_format = "ulaw_8000";
  so.output_format = "ulaw_8000";
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
  EXPECT_EQ(rec_->Get().input_rate, 8000);
  EXPECT_EQ(rec_->Get().output_rate, 8000);
  std::vector<int16_t> note = ToneNote(8000);
  for (size_t off = 0; off < note.size(); off += 800) {
    session_->SendAudio(absl::MakeConstSpan(note).subspan(off, std::min<size_t>(800, note.size() - off)));
  }
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  ASSERT_EQ(s.transcripts.size(), 1u);
  EXPECT_THAT(s.transcripts[0], HasSubstr("peak 440 Hz"));  // μ-law decoded right
  // The 16 kHz voice at 8 kHz, one byte per sample on the wire.
  EXPECT_NEAR(static_cast<double>(s.audio_samples), ReplySamples("agent_reply_16k.s16le") / 2.0, 16);
}

TEST_F(AgentSessionTest, TextTurnContextAndActivityReachTheAgent) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Fast()));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("olá, ünïcode");
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  EXPECT_THAT(s.responses, ElementsAre("You said: olá, ünïcode"));
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_16k.s16le"));
  EXPECT_EQ(s.reply_ends, 1);

  session_->SendContextualUpdate("user is on mobile");
  session_->SendUserActivity();
  session_->Close();
  json rec = EndedConversation();
  EXPECT_EQ(rec["user_id"], "u-hash");
  EXPECT_EQ(rec["dynamic_variables"], json({{"user_name", "Ana"}}));
  EXPECT_EQ(rec["messages_received"]["conversation_initiation_client_data"], 1);
  EXPECT_EQ(rec["contextual_updates"], json({"user is on mobile"}));
  EXPECT_EQ(rec["user_activity"], 1);
  EXPECT_EQ(rec["close_code"], 1000);
  EXPECT_EQ(rec["closed_by"], "client");
  EXPECT_EQ(rec["error_type"], "");  // no override_error: we send no overrides
}

TEST_F(AgentSessionTest, InputBeforeTheStartIsQueuedAndOtherRatesWork) {
  SimOptions so = Fast();
  so.input_format = "pcm_8000";
  so.output_format = "pcm_24000";
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendAudio(ToneNote(8000));  // before on_started: the rate is not known yet
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  EXPECT_EQ(s.input_rate, 8000);
  EXPECT_EQ(s.output_rate, 24000);
  ASSERT_EQ(s.transcripts.size(), 1u);
  EXPECT_THAT(s.transcripts[0], HasSubstr("peak 440 Hz"));
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_24k.s16le"));
}

TEST_F(AgentSessionTest, SignedUrlWorksAndNoSecretIsLogged) {
  SimOptions so = Fast();
  so.api_key = kKey;
  so.agent_id = kAgent;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  AgentOptions o = SimOptionsFor();
  o.api_key = kKey;
  InitLogging("agent_session_test", LogLevel::kDebug, LogFormat::kText);
  ::testing::internal::CaptureStderr();
  auto session = AgentSession::Start(o, rec_->Events(), pool_.get());
  bool ended = false;
  json rec;
  if (session.ok()) {
    (*session)->SendText("hi");
    ended = rec_->Wait(ReplyEnded);
    (*session)->Close();
    rec = EndedConversation();
    session->reset();
  }
  const std::string logs = ::testing::internal::GetCapturedStderr();
  InitLogging("agent_session_test", LogLevel::kInfo, LogFormat::kText);

  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE(ended);
  Seen s = rec_->Get();
  EXPECT_TRUE(s.started) << s.close_reason;
  EXPECT_THAT(s.responses, ElementsAre("You said: hi"));
  EXPECT_EQ(rec["close_code"], 1000);
  EXPECT_THAT(logs, HasSubstr("agent conversation started"));  // the capture worked
  EXPECT_THAT(logs, Not(HasSubstr(kKey)));
  EXPECT_THAT(logs, Not(HasSubstr("cvtkn_")));  // the sim's signature tokens
  EXPECT_THAT(logs, Not(HasSubstr("conversation_signature")));
  // Nothing even needed redacting: the session never tries to log a secret.
  EXPECT_THAT(logs, Not(HasSubstr("[REDACTED]")));
}

TEST_F(AgentSessionTest, SignedUrlFailuresSayWhetherToRetry) {
  SimOptions so = Fast();
  so.api_key = kKey;
  so.agent_id = kAgent;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  AgentOptions o = SimOptionsFor();

  o.api_key = "sk_wrong_key_for_this_test";
  auto wrong = AgentSession::Start(o, rec_->Events(), pool_.get());
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(wrong.status())) << wrong.status();
  EXPECT_THAT(wrong.status().message(), HasSubstr("401"));
  EXPECT_THAT(wrong.status().message(), Not(HasSubstr("sk_wrong_key_for_this_test")));

  o.api_key = kKey;
  o.agent_id = "agent_unknown";
  auto unknown = AgentSession::Start(o, rec_->Events(), pool_.get());
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(unknown.status())) << unknown.status();
  EXPECT_THAT(unknown.status().message(), HasSubstr("404"));

  o.agent_id = kAgent;
  SimHttp("POST", "/sim/faults", R"({"signed_url_status":429,"count":1})");
  auto limited = AgentSession::Start(o, rec_->Events(), pool_.get());
  ASSERT_FALSE(limited.ok());
  EXPECT_TRUE(absl::IsUnavailable(limited.status())) << limited.status();
  EXPECT_THAT(limited.status().message(), Not(HasSubstr(kKey)));

  ASSERT_NO_FATAL_FAILURE(StartSession(o));  // the fault was for one call only
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
}

TEST_F(AgentSessionTest, EveryPingIsAnswered) {
  SimOptions so = Fast();
  so.ping_interval_ms = 20;
  so.pong_timeout_ms = 2000;
  so.reply_pace = 4;  // the reply spans many ping intervals
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("ping me");
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  ASSERT_FALSE(rec_->Get().closed) << rec_->Get().close_reason;
  session_->Close();
  json rec = EndedConversation();
  EXPECT_GE(rec["pings_sent"].get<int>(), 1);
  EXPECT_GE(rec["pongs_received"].get<int>(), 1);
  EXPECT_EQ(rec["close_code"], 1000);  // not 1002: no ping went unanswered
  EXPECT_EQ(rec["closed_by"], "client");
}

TEST_F(AgentSessionTest, GreetingArrivesBeforeAnyInput) {
  SimOptions so = Fast();
  so.first_message = "Hi, how can I help?";
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  EXPECT_THAT(s.responses, ElementsAre("Hi, how can I help?"));
  ASSERT_GE(s.order.size(), 2u);
  EXPECT_EQ(s.order[0], "started");
  EXPECT_EQ(s.order[1], "response");
  EXPECT_EQ(s.audio_samples, ReplySamples("agent_reply_16k.s16le"));
}

TEST_F(AgentSessionTest, SpeakingOverTheAgentInterruptsAndStaleAudioNeverArrives) {
  SimOptions so = Fast();
  so.reply_pace = 1;  // real time, so the reply is still playing when we speak
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("tell me a story");
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return !s.audio_ids.empty() || s.closed; }));
  session_->SendAudio(ToneNote(16000));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return !s.interruptions.empty() || s.closed; }));
  // The tone is also a turn: wait for the reply to it.
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  ASSERT_EQ(s.interruptions.size(), 1u);
  const int64_t cut = s.interruptions[0];
  bool after = false;
  for (const std::string& e : s.order) {
    if (e == absl::StrCat("interruption:", cut)) after = true;
    if (after && e.rfind("audio:", 0) == 0) {
      EXPECT_GT(std::stoll(e.substr(6)), cut) << "stale audio after the interruption";
    }
  }
  EXPECT_LT(s.samples_at_interruption, ReplySamples("agent_reply_16k.s16le"));
  EXPECT_EQ(s.audio_samples - s.samples_at_interruption, ReplySamples("agent_reply_16k.s16le"))
      << "the reply to the new turn arrives whole";
  EXPECT_EQ(s.reply_ends, 1);  // the cut reply ends with the interruption instead
  ASSERT_EQ(s.transcripts.size(), 1u);
  EXPECT_THAT(s.transcripts[0], HasSubstr("peak 440 Hz"));
}

TEST_F(AgentSessionTest, ServerError1011IsRetryable) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Fast()));
  SimHttp("POST", "/sim/faults", R"({"close_after_messages":2,"close_code":1011})");
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("x");
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_EQ(s.close_code, 1011);
  EXPECT_TRUE(s.retryable);
}

TEST_F(AgentSessionTest, UnknownAgentRefusedAtTheUpgradeIsNotRetryable) {
  SimOptions so = Fast();
  so.agent_id = kAgent;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  AgentOptions o = SimOptionsFor();
  o.agent_id = "agent_nobody";
  ASSERT_NO_FATAL_FAILURE(StartSession(o));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_FALSE(s.started);
  EXPECT_EQ(s.close_code, 0);
  EXPECT_THAT(s.close_reason, HasSubstr("404"));
  EXPECT_FALSE(s.retryable);
}

TEST_F(AgentSessionTest, ConcurrencyRefusalIsRetryable) {
  SimOptions so = Fast();
  so.max_conversations = 1;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
  auto second_rec = std::make_shared<Recorder>();
  auto second = AgentSession::Start(SimOptionsFor(), second_rec->Events(), pool_.get());
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second_rec->Wait([](const Seen& s) { return s.closed; }));
  Seen s = second_rec->Get();
  EXPECT_EQ(s.close_code, 0);
  EXPECT_THAT(s.close_reason, HasSubstr("429"));
  EXPECT_TRUE(s.retryable);
}

// ---- lifetime ----

TEST_F(AgentSessionTest, NoCallbackAfterCloseFromTheTestThread) {
  SimOptions so = Fast();
  so.reply_pace = 1;  // audio keeps coming while we close
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("a long story please");
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return !s.audio_ids.empty() || s.closed; }));
  session_->Close();
  rec_->MarkTestClosed();
  session_->Close();  // idempotent
  session_->SendText("dropped");
  session_->SendAudio(std::vector<int16_t>(1600, 0));
  json rec = EndedConversation();
  EXPECT_EQ(rec["close_code"], 1000);
  EXPECT_EQ(rec["closed_by"], "client");
  EXPECT_EQ(rec["user_messages"], json({"a long story please"}));
  // The session is still alive: only Close() keeps its callbacks away.
  pool_->Stop();  // joins the io thread: whatever was pending has run
  session_.reset();
  Seen s = rec_->Get();
  EXPECT_EQ(s.late_callbacks, 0);
  EXPECT_FALSE(s.closed);
}

TEST_F(AgentSessionTest, CloseFromInsideACallbackDoesNotDeadlock) {
  SimOptions so = Fast();
  so.reply_pace = 1;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  // Shared with the io thread: it may outlive this body if an assertion fails.
  struct Hook {
    std::atomic<AgentSession*> session{nullptr};
    absl::Notification closed_inside;
  };
  auto hook = std::make_shared<Hook>();
  rec_->on_audio_hook = [hook, rec = rec_.get()] {
    if (AgentSession* s = hook->session.load(); s && !hook->closed_inside.HasBeenNotified()) {
      s->Close();  // on the io thread, inside our own callback
      rec->MarkTestClosed();
      hook->closed_inside.Notify();
    }
  };
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  hook->session.store(session_.get());
  session_->SendText("story");
  ASSERT_TRUE(hook->closed_inside.WaitForNotificationWithTimeout(kWait));
  hook->session.store(nullptr);
  EXPECT_EQ(EndedConversation()["close_code"], 1000);
  pool_->Stop();
  session_.reset();
  Seen s = rec_->Get();
  // The audio callback that closed still completes; nothing starts after it.
  EXPECT_EQ(s.late_callbacks, 1);
  EXPECT_FALSE(s.closed);
}

TEST_F(AgentSessionTest, CloseBeforeTheSocketOpens) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Fast()));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->Close();
  rec_->MarkTestClosed();
  session_->SendText("never sent");
  json rec = EndedConversation();
  EXPECT_EQ(rec["close_code"], 1000);
  EXPECT_EQ(rec["closed_by"], "client");
  EXPECT_FALSE(rec["messages_received"].contains("user_message"));
  pool_->Stop();
  session_.reset();
  EXPECT_EQ(rec_->Get().late_callbacks, 0);
}

TEST_F(AgentSessionTest, DestroyingTheSessionClosesIt) {
  SimOptions so = Fast();
  so.reply_pace = 1;
  ASSERT_NO_FATAL_FAILURE(StartSim(so));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  session_->SendText("story");
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return !s.audio_ids.empty() || s.closed; }));
  session_.reset();
  rec_->MarkTestClosed();
  EXPECT_EQ(EndedConversation()["close_code"], 1000);
  pool_->Stop();
  EXPECT_EQ(rec_->Get().late_callbacks, 0);
}

TEST_F(AgentSessionTest, SessionMayOutliveItsPool) {
  ASSERT_NO_FATAL_FAILURE(StartSim(Fast()));
  ASSERT_NO_FATAL_FAILURE(StartSession(SimOptionsFor()));
  ASSERT_NO_FATAL_FAILURE(AwaitStarted());
  pool_->Stop();
  pool_.reset();
  session_->SendText("after the pool");
  session_->Close();
  session_.reset();
}

// ---- against a scripted agent ----

TEST_F(AgentSessionTest, StaleAudioToolCallsAndUnknownTypes) {
  ScriptedAgent agent({.on_open = {
                           Metadata(),
                           {{"type", "agent_response"},
                            {"agent_response_event", {{"agent_response", "a"}, {"event_id", 1}}}},
                           Audio(1, 160),
                           {{"type", "interruption"}, {"interruption_event", {{"event_id", 3}}}},
                           Audio(2, 160),  // late, from before the interruption
                           {{"type", "vad_score"}, {"vad_score_event", {{"vad_score", 0.9}}}},
                           {{"type", "agent_response_correction"},
                            {"agent_response_correction_event",
                             {{"original_agent_response", "a"},
                              {"corrected_agent_response", "a-"},
                              {"event_id", 3}}}},
                           {{"type", "tentative_user_transcript"},
                            {"tentative_user_transcription_event", {{"user_transcript", "he"}}}},
                           {{"type", "agent_chat_response_part"},
                            {"text_response_part", {{"text", "x"}, {"type", "delta"}}}},
                           {{"type", "brand_new_event"}, {"whatever", 1}},
                           {{"type", "internal_thing"}},
                           {{"type", "client_tool_call"},
                            {"client_tool_call",
                             {{"tool_name", "open_door"},
                              {"tool_call_id", "call_1"},
                              {"parameters", json::object()},
                              {"event_id", 5}}}},
                           {{"type", "ping"}, {"ping_event", {{"event_id", 7}, {"ping_ms", 0}}}},
                           Audio(8, 320, /*is_final=*/true),
                           {{"type", "agent_response_complete"}},
                           {{"type", "user_transcript"},
                            {"user_transcription_event",
                             {{"user_transcript", "later"}, {"event_id", 9}}}},
                       }});
  AgentOptions o = Options(agent.base_url());
  o.reply_quiet_gap = absl::Milliseconds(200);
  ASSERT_NO_FATAL_FAILURE(StartSession(o));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return !s.transcripts.empty() || s.closed; }));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  EXPECT_EQ(s.conversation_id, "conv_scripted");
  EXPECT_THAT(s.audio_ids, ElementsAre(1, 8));
  EXPECT_EQ(s.audio_samples, 480u);
  EXPECT_THAT(s.interruptions, ElementsAre(3));
  EXPECT_THAT(s.transcripts, ElementsAre("later"));
  EXPECT_EQ(s.reply_ends, 1);

  auto tool = agent.WaitReceived("client_tool_result");
  ASSERT_TRUE(tool.has_value());
  EXPECT_EQ((*tool)["tool_call_id"], "call_1");
  EXPECT_EQ((*tool)["is_error"], true);
  auto pong = agent.WaitReceived("pong");
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ((*pong)["event_id"], 7);
  EXPECT_FALSE(rec_->Wait([](const Seen& s) { return s.reply_ends > 1; }, absl::Milliseconds(600)));
}

// A client tool the owner takes (the handoff tool): its answer goes back as
// the agent's client_tool_result, and the call's parameters reach the owner
// as compact JSON. A tool the owner declines still gets the error answer.
TEST_F(AgentSessionTest, AClientToolTheOwnerTakesIsAnsweredWithItsResult) {
  auto call = [](const std::string& name, const std::string& id, json params) {
    return json{{"type", "client_tool_call"},
                {"client_tool_call",
                 {{"tool_name", name}, {"tool_call_id", id}, {"parameters", params},
                  {"event_id", 4}}}};
  };
  ScriptedAgent agent({.on_open = {Metadata(),
                                   call("open_door", "call_1", json::object()),
                                   call("transfer_to_human", "call_2",
                                        {{"urgent", true}, {"reason", "billing"}})}});
  absl::Mutex mu;
  std::vector<ClientToolCall> calls;
  AgentEvents ev = rec_->Events();
  ev.on_client_tool_call = [&](const ClientToolCall& c) -> std::optional<ClientToolResult> {
    absl::MutexLock lock(&mu);
    calls.push_back(c);
    if (c.tool_name != "transfer_to_human") return std::nullopt;
    return ClientToolResult{"A person will take over", false};
  };
  auto session = AgentSession::Start(Options(agent.base_url()), std::move(ev), pool_.get());
  ASSERT_TRUE(session.ok()) << session.status();
  session_ = *std::move(session);

  auto declined = agent.WaitReceived("client_tool_result");
  ASSERT_TRUE(declined.has_value());
  EXPECT_EQ((*declined)["tool_call_id"], "call_1");
  EXPECT_EQ((*declined)["is_error"], true);
  std::optional<json> taken;
  ASSERT_TRUE(agent.Wait([&](const std::vector<json>& received) {
    for (const json& m : received) {
      if (m.value("type", "") == "client_tool_result" && m["tool_call_id"] == "call_2") taken = m;
    }
    return taken.has_value();
  }));
  EXPECT_EQ((*taken)["is_error"], false);
  EXPECT_EQ((*taken)["result"], "A person will take over");
  session_->Close();  // no callback after this: `calls` may go
  absl::MutexLock lock(&mu);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].tool_name, "transfer_to_human");
  EXPECT_EQ(calls[1].tool_call_id, "call_2");
  EXPECT_EQ(calls[1].parameters, R"({"reason":"billing","urgent":true})");
}

// Found by tests/fuzz/fuzz_agent_messages: a float event id past int64 was
// converted anyway (undefined behaviour; in practice a garbage id echoed back).
TEST_F(AgentSessionTest, AnEventIdThatFitsNoInt64IsNoId) {
  ScriptedAgent agent({.on_open = {Metadata(),
                                   {{"type", "ping"}, {"ping_event", {{"event_id", 1e300}}}},
                                   {{"type", "ping"}, {"ping_event", {{"event_id", 7}}}}}});
  ASSERT_NO_FATAL_FAILURE(StartSession(Options(agent.base_url())));
  auto pong = agent.WaitReceived("pong");  // the first one
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ((*pong)["event_id"], 7);
}

TEST_F(AgentSessionTest, TextOnlyReplyEndsAfterTheQuietGap) {
  ScriptedAgent agent({.on_open = {Metadata(),
                                   {{"type", "agent_response"},
                                    {"agent_response_event",
                                     {{"agent_response", "Only words"}, {"event_id", 1}}}}}});
  AgentOptions o = Options(agent.base_url());
  o.reply_quiet_gap = absl::Milliseconds(200);
  ASSERT_NO_FATAL_FAILURE(StartSession(o));
  ASSERT_TRUE(rec_->Wait(ReplyEnded));
  Seen s = rec_->Get();
  ASSERT_FALSE(s.closed) << s.close_reason;
  EXPECT_THAT(s.responses, ElementsAre("Only words"));
  EXPECT_EQ(s.audio_samples, 0u);
  EXPECT_EQ(s.reply_ends, 1);
}

TEST_F(AgentSessionTest, PolicyClose1008IsNotRetryable) {
  ScriptedAgent agent({.close_on_init = std::make_pair(1008, "override_error")});
  ASSERT_NO_FATAL_FAILURE(StartSession(Options(agent.base_url())));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_EQ(s.close_code, 1008);
  EXPECT_EQ(s.close_reason, "override_error");
  EXPECT_FALSE(s.retryable);

  auto init = agent.WaitReceived("conversation_initiation_client_data");
  ASSERT_TRUE(init.has_value());
  EXPECT_FALSE(init->contains("conversation_config_override"));
  EXPECT_EQ((*init)["user_id"], "u-hash");
  EXPECT_EQ((*init)["dynamic_variables"], json({{"user_name", "Ana"}}));
  EXPECT_EQ(agent.resource(), "/v1/convai/conversation?agent_id=agent_t");
}

TEST_F(AgentSessionTest, UnknownAudioFormatIsRefusedAndNotRetryable) {
  ScriptedAgent agent({.on_open = {Metadata("mp3_44100_128", "pcm_16000"), Audio(1, 160)}});
  ASSERT_NO_FATAL_FAILURE(StartSession(Options(agent.base_url())));
  ASSERT_TRUE(rec_->Wait([](const Seen& s) { return s.closed; }));
  Seen s = rec_->Get();
  EXPECT_FALSE(s.started);
  EXPECT_TRUE(s.audio_ids.empty());
  EXPECT_THAT(s.close_reason, HasSubstr("mp3_44100_128"));
  EXPECT_FALSE(s.retryable);
}

TEST_F(AgentSessionTest, ConfigurationErrors) {
  AgentOptions o = Options("http://127.0.0.1:1");
  o.agent_id = "";
  EXPECT_TRUE(absl::IsInvalidArgument(AgentSession::Start(o, {}, pool_.get()).status()));
  o = Options("ftp://example.com");
  EXPECT_TRUE(absl::IsInvalidArgument(AgentSession::Start(o, {}, pool_.get()).status()));
  o = Options("http://127.0.0.1:1");
  EXPECT_TRUE(absl::IsInvalidArgument(AgentSession::Start(o, {}, nullptr).status()));
}

}  // namespace
}  // namespace bridge::media_worker
