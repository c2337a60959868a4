// elevenlabs-sim over real sockets, driven by the production WebSocket client
// (bridge::ws): scripted conversations, turn detection, replies, interruptions,
// auth, limits and faults, and every message checked against the published
// contract (tests/contract/elevenlabs_server_messages.json).
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "audio/ogg_opus_decoder.h"
#include "elevenlabs_sim/elevenlabs_sim.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "test_pki.h"
#include "ws/websocket.h"

extern "C" {
#include <spandsp/telephony.h>
#include <spandsp/bit_operations.h>
#include <spandsp/g711.h>
}

namespace bridge::elevenlabs_sim {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kWait = absl::Seconds(30);  // hang guard, not a timing assertion

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int16_t> DecodeFixture(const std::string& name, int rate) {
  std::string bytes = ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", name));
  auto pcm = audio::DecodeOggOpus(
      {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, rate);
  EXPECT_TRUE(pcm.ok()) << pcm.status();
  return pcm.ok() ? *pcm : std::vector<int16_t>();
}

size_t ReplyFixtureSamples() {
  return ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/agent_reply_16k.s16le")).size() / 2;
}

// Checks one server message against the contract table; returns problems.
std::string ContractProblems(const json& msg) {
  static const json contract = json::parse(ReadFile(BRIDGE_CONTRACT_JSON));
  if (!msg.is_object() || !msg.contains("type")) return "no type";
  const std::string type = msg["type"];
  // End markers are checked for shape but are not in the contract (PROTOCOLS.md B3).
  const json& table = contract.contains(type) || !contract["_not_in_contract"].contains(type)
                          ? contract
                          : contract["_not_in_contract"];
  if (!table.contains(type)) return absl::StrCat("type '", type, "' is not in the contract");
  std::string problems;
  for (const auto& [key, fields] : table[type].items()) {
    if (!msg.contains(key) || !msg[key].is_object()) {
      absl::StrAppend(&problems, type, ".", key, " missing; ");
      continue;
    }
    for (const auto& [fname, ftype_j] : fields.items()) {
      std::string name = fname;
      const bool optional = absl::EndsWith(name, "?");
      if (optional) name.pop_back();
      const std::string ftype = ftype_j;
      if (!msg[key].contains(name)) {
        if (!optional) absl::StrAppend(&problems, type, ".", key, ".", name, " missing; ");
        continue;
      }
      const json& v = msg[key][name];
      bool ok = false;
      for (absl::string_view t : absl::StrSplit(ftype, '|')) {
        if (absl::StartsWith(ftype, "enum:")) {
          std::string want = ftype.substr(5);
          for (absl::string_view e : absl::StrSplit(want, '|')) {
            ok |= (v.is_string() && v.get<std::string>() == e) ||
                  (v.is_number() && absl::StrCat(v.get<int64_t>()) == e);
          }
          break;
        }
        ok |= (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
              (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
              (t == "null" && v.is_null()) || (t == "boolean" && v.is_boolean());
      }
      if (!ok) absl::StrAppend(&problems, type, ".", key, ".", name, " is ", v.dump(), "; ");
    }
  }
  return problems;
}

// A scripted client: records every message, answers pings unless told not to.
class AgentClient : public ws::ConnectionHandler {
 public:
  explicit AgentClient(bool answer_pings = true) : answer_pings_(answer_pings) {}

  void OnOpen() override {
    absl::MutexLock l(&mu_);
    opened_ = true;
  }
  void OnText(const std::string& text) override {
    json msg = json::parse(text);
    if (answer_pings_ && msg.value("type", "") == "ping") {
      conn_->SendText(
          json{{"type", "pong"}, {"event_id", msg["ping_event"]["event_id"]}}.dump());
    }
    absl::MutexLock l(&mu_);
    messages_.push_back(std::move(msg));
  }
  void OnClose(int code, const std::string& reason, bool) override {
    absl::MutexLock l(&mu_);
    close_code_ = code;
    close_reason_ = reason;
  }
  void OnFail(const std::string& error, int) override {
    absl::MutexLock l(&mu_);
    failure_ = error;
  }

  void Send(const json& j) { conn_->SendText(j.dump()); }
  void SendPcm(const std::vector<int16_t>& pcm, size_t chunk) {
    for (size_t off = 0; off < pcm.size(); off += chunk) {
      size_t n = std::min(chunk, pcm.size() - off);
      std::string bytes(reinterpret_cast<const char*>(pcm.data() + off), n * 2);
      Send({{"user_audio_chunk", absl::Base64Escape(bytes)}});
    }
  }

  // Waits until a message of `type` (the n-th, 1-based) arrived; returns it.
  std::optional<json> WaitFor(const std::string& type, int n = 1) {
    auto have = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return CountLocked(type) >= n || close_code_ != 0 || !failure_.empty();
    };
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&have), kWait);
    int seen = 0;
    for (const auto& m : messages_) {
      if (m.value("type", "") == type && ++seen == n) return m;
    }
    return std::nullopt;
  }
  int WaitClosed() {
    auto closed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return close_code_ != 0 || !failure_.empty();
    };
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&closed), kWait);
    return close_code_;
  }
  bool WaitOpenOrFail() {
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return opened_ || !failure_.empty(); };
    absl::MutexLock l(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&done), kWait);
    return opened_;
  }
  // Audio samples received so far, and whether event ids only ever increased.
  // Audio samples received so far (`bytes_per_sample` 1 for μ-law), and
  // whether every chunk carries the event id of its response (one id per
  // response, never decreasing: what clients drop stale audio by).
  size_t AudioSamples(bool* ordered = nullptr, int bytes_per_sample = 2) {
    absl::MutexLock l(&mu_);
    size_t samples = 0;
    int64_t last = 0;
    std::set<int64_t> response_ids;
    bool ok = true;
    for (const auto& m : messages_) {
      const std::string type = m.value("type", "");
      if (type == "agent_response") response_ids.insert(m["agent_response_event"]["event_id"].get<int64_t>());
      if (type != "audio") continue;
      std::string raw;
      absl::Base64Unescape(m["audio_event"]["audio_base_64"].get<std::string>(), &raw);
      samples += raw.size() / bytes_per_sample;
      int64_t id = m["audio_event"]["event_id"];
      ok &= id >= last;
      last = id;
    }
    for (const auto& m : messages_) {
      if (m.value("type", "") == "audio") ok &= response_ids.count(m["audio_event"]["event_id"].get<int64_t>()) > 0;
    }
    if (ordered) *ordered = ok;
    return samples;
  }
  // The characters all audio chunks' alignment spoke, concatenated.
  std::string AlignedText() {
    absl::MutexLock l(&mu_);
    std::string text;
    for (const auto& m : messages_) {
      if (m.value("type", "") != "audio" || !m["audio_event"].contains("alignment")) continue;
      for (const json& c : m["audio_event"]["alignment"]["chars"]) text += c.get<std::string>();
    }
    return text;
  }
  std::vector<std::string> Types() {
    absl::MutexLock l(&mu_);
    std::vector<std::string> types;
    for (const auto& m : messages_) types.push_back(m.value("type", ""));
    return types;
  }
  std::vector<json> Messages() {
    absl::MutexLock l(&mu_);
    return messages_;
  }
  std::string failure() {
    absl::MutexLock l(&mu_);
    return failure_;
  }
  std::string close_reason() {
    absl::MutexLock l(&mu_);
    return close_reason_;
  }

  std::shared_ptr<ws::Connection> conn_;

 private:
  int CountLocked(const std::string& type) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int n = 0;
    for (const auto& m : messages_) n += m.value("type", "") == type ? 1 : 0;
    return n;
  }

  const bool answer_pings_;
  absl::Mutex mu_;
  std::vector<json> messages_ ABSL_GUARDED_BY(mu_);
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  int close_code_ ABSL_GUARDED_BY(mu_) = 0;
  std::string close_reason_ ABSL_GUARDED_BY(mu_);
  std::string failure_ ABSL_GUARDED_BY(mu_);
};

class ElevenLabsSimTest : public ::testing::Test {
 protected:
  void Start(SimOptions o) {
    o.fixtures_dir = absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio");
    auto sim = ElevenLabsSim::Start(o);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = *std::move(sim);
    pool_ = ws::ClientPool::Create();
  }
  void TearDown() override {
    if (pool_) pool_->Stop();
    if (sim_) sim_->Shutdown();
  }

  std::shared_ptr<AgentClient> Connect(const std::string& url, bool answer_pings = true,
                                       std::vector<std::pair<std::string, std::string>> headers = {}) {
    auto client = std::make_shared<AgentClient>(answer_pings);
    ws::ClientOptions co;
    co.url = url;
    co.headers = std::move(headers);
    co.ca_file = ca_file_;
    auto conn = pool_->Connect(co, client);
    EXPECT_TRUE(conn.ok()) << conn.status();
    client->conn_ = *conn;
    return client;
  }
  std::shared_ptr<AgentClient> ConnectPublic(bool answer_pings = true) {
    return Connect(absl::StrCat(sim_->ws_base_url(), "/v1/convai/conversation?agent_id=agent_t"),
                   answer_pings);
  }
  json Http(const std::string& method, const std::string& path, const std::string& body = "",
            httplib::Headers headers = {}, int* status = nullptr) {
    httplib::Client cli(sim_->http_base_url());
    cli.set_read_timeout(60);
    if (!ca_file_.empty()) cli.set_ca_cert_path(ca_file_.c_str());
    httplib::Result r = method == "GET"    ? cli.Get(path.c_str(), headers)
                        : method == "POST" ? cli.Post(path.c_str(), headers, body, "application/json")
                                           : cli.Delete(path.c_str(), headers);
    if (status) *status = r ? r->status : -1;
    return r ? json::parse(r->body, nullptr, false) : json();
  }
  json Conversations(int min_ended) {
    return Http("GET", absl::StrCat("/sim/conversations?ended=true&min_count=", min_ended,
                                    "&wait_ms=30000"));
  }

  std::unique_ptr<ElevenLabsSim> sim_;
  std::unique_ptr<ws::ClientPool> pool_;
  std::string ca_file_;  // set for TLS runs: the test CA
};

SimOptions Fast() {
  SimOptions o;
  o.reply_pace = 0;
  o.ping_interval_ms = 50;
  o.emit_final_markers = true;
  return o;
}

double TranscriptSeconds(const std::string& transcript) {
  // "[audio 3.00s, speech 2.98s, peak 440 Hz]"
  double s = 0;
  std::string num = transcript.substr(7, transcript.find('s', 7) - 7);
  EXPECT_TRUE(absl::SimpleAtod(num, &s)) << transcript;
  return s;
}

TEST_F(ElevenLabsSimTest, ScriptedToneConversation) {
  Start(Fast());
  auto c = ConnectPublic();
  c->Send({{"type", "conversation_initiation_client_data"},
           {"user_id", "u-hash"},
           {"dynamic_variables", {{"user_name", "Ana"}}}});
  auto meta = c->WaitFor("conversation_initiation_metadata");
  ASSERT_TRUE(meta.has_value()) << c->failure();
  EXPECT_EQ((*meta)["conversation_initiation_metadata_event"]["user_input_audio_format"],
            "pcm_16000");
  ASSERT_TRUE(c->WaitFor("ping").has_value());

  std::vector<int16_t> pcm = DecodeFixture("voice_note_tone_440hz.ogg", 16000);
  pcm.resize(pcm.size() + 16000 * 3 / 2, 0);  // 1.5 s of trailing silence ends the turn
  c->SendPcm(pcm, 1600);

  auto transcript = c->WaitFor("user_transcript");
  ASSERT_TRUE(transcript.has_value());
  std::string text = (*transcript)["user_transcription_event"]["user_transcript"];
  EXPECT_THAT(text, HasSubstr("peak 440 Hz"));
  EXPECT_NEAR(TranscriptSeconds(text), 3.0, 0.05) << text;
  ASSERT_TRUE(c->WaitFor("agent_response").has_value());
  ASSERT_TRUE(c->WaitFor("agent_response_complete").has_value());
  bool ordered = false;
  EXPECT_EQ(c->AudioSamples(&ordered), ReplyFixtureSamples());
  EXPECT_TRUE(ordered);

  c->conn_->Close(ws::kCloseNormal, "bye");
  json convs = Conversations(1);
  ASSERT_EQ(convs["conversations"].size(), 1u);
  const json& rec = convs["conversations"][0];
  EXPECT_EQ(rec["user_id"], "u-hash");
  EXPECT_EQ(rec["dynamic_variables"]["user_name"], "Ana");
  EXPECT_GE(rec["pongs_received"].get<int>(), 1);
  EXPECT_EQ(rec["closed_by"], "client");
  EXPECT_EQ(rec["close_code"], 1000);
  EXPECT_NEAR(rec["audio_seconds_received"].get<double>(), pcm.size() / 16000.0, 1e-6);
  for (const json& m : c->Messages()) EXPECT_EQ(ContractProblems(m), "") << m.dump();
}

TEST_F(ElevenLabsSimTest, SpeechNoteTranscriptNamesItsDuration) {
  Start(Fast());
  auto c = ConnectPublic();
  std::vector<int16_t> pcm = DecodeFixture("voice_note_hello.ogg", 16000);
  const double note_s = pcm.size() / 16000.0;
  pcm.resize(pcm.size() + 24000, 0);
  c->SendPcm(pcm, 4000);
  auto t = c->WaitFor("user_transcript");
  ASSERT_TRUE(t.has_value());
  std::string text = (*t)["user_transcription_event"]["user_transcript"];
  // The digital-zero padding after the note is not part of what was said.
  EXPECT_NEAR(TranscriptSeconds(text), note_s, 0.02) << text;
}

TEST_F(ElevenLabsSimTest, LongPauseInsideANoteEndsTheTurnEarly) {
  Start(Fast());
  auto c = ConnectPublic();
  std::vector<int16_t> tone = DecodeFixture("voice_note_tone_440hz.ogg", 16000);
  std::vector<int16_t> pcm = tone;
  pcm.resize(pcm.size() + 16000, 0);  // a 1 s pause, longer than the VAD's 600 ms
  pcm.insert(pcm.end(), tone.begin(), tone.end());
  pcm.resize(pcm.size() + 24000, 0);
  c->SendPcm(pcm, 1600);
  ASSERT_TRUE(c->WaitFor("user_transcript", 2).has_value());
}

TEST_F(ElevenLabsSimTest, TextTurnIsAnsweredWithTextAndAudio) {
  Start(Fast());
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "olá, ünïcode"}});
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)["agent_response_event"]["agent_response"], "You said: olá, ünïcode");
  ASSERT_TRUE(c->WaitFor("agent_response_complete").has_value());
  EXPECT_EQ(c->AudioSamples(), ReplyFixtureSamples());
  c->Send({{"type", "contextual_update"}, {"text", "user is on mobile"}});
  c->Send({{"type", "user_activity"}});
  c->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["contextual_updates"][0], "user is on mobile");
  EXPECT_EQ(rec["user_activity"], 1);
}

TEST_F(ElevenLabsSimTest, SpeakingOverTheAgentInterruptsIt) {
  SimOptions o = Fast();
  o.reply_pace = 1.0;  // real time, so the reply is still playing when we speak
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "tell me a story"}});
  ASSERT_TRUE(c->WaitFor("agent_response").has_value());
  c->SendPcm(DecodeFixture("voice_note_tone_440hz.ogg", 16000), 1600);
  auto intr = c->WaitFor("interruption");
  ASSERT_TRUE(intr.has_value());
  // What the user heard of the cut response, as the live service corrects it.
  auto correction = c->WaitFor("agent_response_correction");
  ASSERT_TRUE(correction.has_value());
  const json& ce = (*correction)["agent_response_correction_event"];
  EXPECT_EQ(ce["original_agent_response"], "You said: tell me a story");
  EXPECT_TRUE(absl::StartsWith("You said: tell me a story",
                               ce["corrected_agent_response"].get<std::string>()));
  const int64_t cut = (*intr)["interruption_event"]["event_id"];
  EXPECT_LT(c->AudioSamples(), ReplyFixtureSamples());
  for (const json& m : c->Messages()) {
    if (m.value("type", "") == "audio") {
      // Audio older than the interruption must be dropped by clients: ids make that possible.
      EXPECT_NE(m["audio_event"]["event_id"].get<int64_t>(), cut);
    }
  }
}

TEST_F(ElevenLabsSimTest, GreetingIsSpokenFirstWhenConfigured) {
  SimOptions o = Fast();
  o.first_message = "Hi, how can I help?";
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "conversation_initiation_client_data"}});
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)["agent_response_event"]["agent_response"], "Hi, how can I help?");
}

TEST_F(ElevenLabsSimTest, SignedUrlsNeedTheKeyAndWorkOnce) {
  SimOptions o = Fast();
  o.api_key = "sk_sim_test_key";
  o.agent_id = "agent_t";
  Start(o);
  int status = 0;
  Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=agent_t", "", {}, &status);
  EXPECT_EQ(status, 401);
  Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=other",
       "", {{"xi-api-key", "sk_sim_test_key"}}, &status);
  EXPECT_EQ(status, 404);
  json j = Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=agent_t", "",
                {{"xi-api-key", "sk_sim_test_key"}}, &status);
  ASSERT_EQ(status, 200);
  std::string url = j["signed_url"];
  EXPECT_THAT(url, HasSubstr("conversation_signature=cvtkn_"));
  auto c = Connect(url);
  EXPECT_TRUE(c->WaitOpenOrFail()) << c->failure();
  auto again = Connect(url);  // a signature is good once
  EXPECT_FALSE(again->WaitOpenOrFail());
  EXPECT_THAT(again->failure(), Not(HasSubstr("cvtkn_")));  // never echo the secret
  auto unsigned_conn = ConnectPublic();
  EXPECT_FALSE(unsigned_conn->WaitOpenOrFail());
}

TEST_F(ElevenLabsSimTest, MalformedAndUnknownMessagesClose1008) {
  Start(Fast());
  auto c = ConnectPublic();
  c->conn_->SendText("{not json");
  EXPECT_EQ(c->WaitClosed(), 1008);
  auto err = c->WaitFor("error");
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ((*err)["error_event"]["error_type"], "invalid_message");

  auto d = ConnectPublic();
  d->Send({{"type", "definitely_not_a_message"}});
  EXPECT_EQ(d->WaitClosed(), 1008);
  for (const json& m : d->Messages()) EXPECT_EQ(ContractProblems(m), "") << m.dump();
}

TEST_F(ElevenLabsSimTest, OverridesAreRefusedLikeAnAgentThatAllowsNone) {
  Start(Fast());
  auto c = ConnectPublic();
  c->Send({{"type", "conversation_initiation_client_data"},
           {"conversation_config_override", {{"agent", {{"first_message", "x"}}}}}});
  EXPECT_EQ(c->WaitClosed(), 1008);
  EXPECT_EQ(c->close_reason(), "override_error");
}

TEST_F(ElevenLabsSimTest, ClientThatStopsAnsweringPingsIsClosed) {
  SimOptions o = Fast();
  o.pong_timeout_ms = 200;
  Start(o);
  auto c = ConnectPublic(/*answer_pings=*/false);
  EXPECT_EQ(c->WaitClosed(), 1002);
}

TEST_F(ElevenLabsSimTest, NoInputAndMaxDurationEndTheConversation) {
  SimOptions o = Fast();
  o.input_timeout_s = 1;
  Start(o);
  auto c = ConnectPublic();
  EXPECT_EQ(c->WaitClosed(), 1002);
  EXPECT_EQ(c->close_reason(), "transport_receive_timeout");
  sim_->Shutdown();

  o.input_timeout_s = 60;
  o.max_duration_s = 1;
  Start(o);
  auto d = ConnectPublic();
  EXPECT_EQ(d->WaitClosed(), 1000);
  EXPECT_EQ(d->close_reason(), "max_duration_exceeded");
}

TEST_F(ElevenLabsSimTest, ConcurrencyLimitRefusesAndCounts) {
  SimOptions o = Fast();
  o.max_conversations = 1;
  Start(o);
  auto a = ConnectPublic();
  ASSERT_TRUE(a->WaitOpenOrFail());
  auto b = ConnectPublic();
  EXPECT_FALSE(b->WaitOpenOrFail());
  EXPECT_EQ(Http("GET", "/sim/conversations")["refused"], 1);
}

TEST_F(ElevenLabsSimTest, FaultsCloseSignedUrlAndStall) {
  Start(Fast());
  int status = 0;
  Http("POST", "/sim/faults", R"({"close_after_messages":2,"close_code":1011})", {}, &status);
  ASSERT_EQ(status, 200);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "x"}});
  EXPECT_EQ(c->WaitClosed(), 1011);

  Http("POST", "/sim/faults", R"({"signed_url_status":429,"retry_after_s":2,"count":2})");
  for (int i = 0; i < 2; ++i) {
    Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=a", "", {}, &status);
    EXPECT_EQ(status, 429);
  }
  Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=a", "", {}, &status);
  EXPECT_EQ(status, 200);

  Http("POST", "/sim/faults", R"({"stall_ms":300})");
  Http("DELETE", "/sim/faults", "", {}, &status);
  EXPECT_EQ(status, 200);
}

// By default the simulator behaves as the live service is documented and
// observed to: no end marker, alignment covering the text, one event id per
// response, internal event types, a pause mid-reply.
TEST_F(ElevenLabsSimTest, LiveDefaultsSendNoEndMarkerAndAlignTheWholeText) {
  SimOptions o;
  o.reply_pace = 0;
  o.reply_gap_ms = 200;
  o.turn_timeout_s = 1;  // the re-engagement is a marker-free sign that the reply ended
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "hello there"}});
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value());
  const std::string text = (*r)["agent_response_event"]["agent_response"];
  ASSERT_TRUE(c->WaitFor("agent_response", 2).has_value());
  c->conn_->Close(ws::kCloseNormal, "");
  ASSERT_NE(c->WaitClosed(), 0);
  bool ordered = false;
  EXPECT_GE(c->AudioSamples(&ordered), ReplyFixtureSamples());
  EXPECT_TRUE(ordered);
  EXPECT_TRUE(absl::StartsWith(c->AlignedText(), text)) << c->AlignedText();
  std::vector<std::string> types = c->Types();
  EXPECT_THAT(types, Not(Contains("agent_response_complete")));
  EXPECT_THAT(types, Contains("internal_tentative_agent_response"));
  for (const json& m : c->Messages()) {
    EXPECT_EQ(ContractProblems(m), "") << m.dump();
    if (m.value("type", "") == "audio") {
      EXPECT_FALSE(m["audio_event"].contains("is_final"));
    }
  }
}

// disable_first_message_interruptions: what is said over the greeting is
// not heard at all, so a client must let the greeting finish.
TEST_F(ElevenLabsSimTest, UninterruptibleGreetingIgnoresInputOverIt) {
  SimOptions o = Fast();
  o.first_message = "Hi, how can I help?";
  o.first_message_uninterruptible = true;
  o.reply_pace = 1.0;  // the greeting lasts ~6 s
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "conversation_initiation_client_data"}});
  ASSERT_TRUE(c->WaitFor("agent_response").has_value());
  c->Send({{"type", "user_message"}, {"text", "talking over you"}});
  ASSERT_TRUE(c->WaitFor("agent_response_complete").has_value());  // the greeting's end
  c->Send({{"type", "user_message"}, {"text", "now"}});
  auto reply = c->WaitFor("agent_response", 2);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["agent_response_event"]["agent_response"], "You said: now");
  c->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["ignored_during_greeting"], 1);
  EXPECT_EQ(rec["user_messages"].size(), 1u);
  EXPECT_EQ(rec["interruptions"], 0);
}

TEST_F(ElevenLabsSimTest, AgentResponseCanComeAfterTheAudio) {
  SimOptions o = Fast();
  o.agent_response_timing = "end";
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "late"}});
  ASSERT_TRUE(c->WaitFor("agent_response_complete").has_value());
  std::vector<std::string> types = c->Types();
  auto response = std::find(types.begin(), types.end(), "agent_response");
  ASSERT_NE(response, types.end());
  EXPECT_EQ(std::find(response, types.end(), "audio"), types.end());  // no audio after it
  EXPECT_EQ(c->AudioSamples(), ReplyFixtureSamples());
}

TEST_F(ElevenLabsSimTest, GoodbyeEndsWithEndCallAndClose1000) {
  SimOptions o = Fast();
  o.emit_final_markers = false;
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "OK, goodbye!"}});
  EXPECT_EQ(c->WaitClosed(), 1000);
  auto tool = c->WaitFor("agent_tool_response");
  ASSERT_TRUE(tool.has_value());
  EXPECT_EQ((*tool)["agent_tool_response"]["tool_name"], "end_call");
  EXPECT_EQ(c->AudioSamples(), ReplyFixtureSamples());  // the goodbye was spoken first
  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["ended_by_agent"], true);
  EXPECT_EQ(rec["closed_by"], "server");
  for (const json& m : c->Messages()) EXPECT_EQ(ContractProblems(m), "") << m.dump();
}

TEST_F(ElevenLabsSimTest, SilentUserIsReengagedAfterTheTurnTimeout) {
  SimOptions o = Fast();
  o.turn_timeout_s = 1;
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "hi"}});
  auto again = c->WaitFor("agent_response", 2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)["agent_response_event"]["agent_response"], "Are you still there?");
  c->conn_->Close(ws::kCloseNormal, "");
  EXPECT_GE(Conversations(1)["conversations"][0]["reengagements"].get<int>(), 1);
}

TEST_F(ElevenLabsSimTest, MuLawBothWays) {
  SimOptions o = Fast();
  o.input_format = "ulaw_8000";
  o.output_format = "ulaw_8000";
  Start(o);
  auto c = ConnectPublic();
  auto meta = c->WaitFor("conversation_initiation_metadata");
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ((*meta)["conversation_initiation_metadata_event"]["agent_output_audio_format"],
            "ulaw_8000");
  std::vector<int16_t> pcm = DecodeFixture("voice_note_tone_440hz.ogg", 8000);
  pcm.resize(pcm.size() + 8000 * 3 / 2, 0);
  for (size_t off = 0; off < pcm.size(); off += 800) {
    std::string bytes;
    for (size_t i = off; i < std::min(pcm.size(), off + 800); ++i) {
      bytes.push_back(static_cast<char>(linear_to_ulaw(pcm[i])));
    }
    c->Send({{"user_audio_chunk", absl::Base64Escape(bytes)}});
  }
  auto t = c->WaitFor("user_transcript");
  ASSERT_TRUE(t.has_value());
  EXPECT_THAT((*t)["user_transcription_event"]["user_transcript"].get<std::string>(),
              HasSubstr("peak 440 Hz"));
  ASSERT_TRUE(c->WaitFor("agent_response_complete").has_value());
  EXPECT_NEAR(static_cast<double>(c->AudioSamples(nullptr, /*bytes_per_sample=*/1)),
              ReplyFixtureSamples() / 2.0, 16);
}

// POST /v1/speech-to-text: multipart file + model_id, the key when set.
TEST_F(ElevenLabsSimTest, SpeechToTextDescribesTheRecording) {
  SimOptions o = Fast();
  o.api_key = "sk_sim_stt_key";
  Start(o);
  httplib::Client cli(sim_->http_base_url());
  const std::string note = ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/voice_note_tone_440hz.ogg"));
  httplib::MultipartFormDataItems form = {{"file", note, "voice.ogg", "audio/ogg"},
                                          {"model_id", "scribe_v2", "", ""}};
  httplib::Headers key = {{"xi-api-key", "sk_sim_stt_key"}};
  auto ok = cli.Post("/v1/speech-to-text", key, form);
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  json j = json::parse(ok->body);
  EXPECT_THAT(j["text"].get<std::string>(), HasSubstr("peak 440 Hz"));
  EXPECT_TRUE(j.contains("language_code"));

  auto no_key = cli.Post("/v1/speech-to-text", form);
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  auto no_model = cli.Post("/v1/speech-to-text", key,
                           httplib::MultipartFormDataItems{{"file", note, "voice.ogg", "audio/ogg"}});
  ASSERT_TRUE(no_model);
  EXPECT_EQ(no_model->status, 422);
  auto garbage = cli.Post("/v1/speech-to-text", key,
                          httplib::MultipartFormDataItems{{"file", "not audio", "x.ogg", "audio/ogg"},
                                                          {"model_id", "scribe_v2", "", ""}});
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 400);
  const std::string silence = ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/voice_note_silence.ogg"));
  auto quiet = cli.Post("/v1/speech-to-text", key,
                        httplib::MultipartFormDataItems{{"file", silence, "s.ogg", "audio/ogg"},
                                                        {"model_id", "scribe_v2", "", ""}});
  ASSERT_TRUE(quiet);
  EXPECT_EQ(json::parse(quiet->body)["text"], "");  // no speech, no words
  json seen = Http("GET", "/sim/transcriptions");
  ASSERT_EQ(seen["transcriptions"].size(), 4u);  // the unauthorised call never got in
  EXPECT_EQ(seen["transcriptions"][0]["model_id"], "scribe_v2");
}

TEST_F(ElevenLabsSimTest, TlsWithATestCaForBothTheSignedUrlAndTheSocket) {
  auto pki = bridge::testing::MakeTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  SimOptions o = Fast();
  o.tls_cert = pki->server_cert;
  o.tls_key = pki->server_key;
  o.api_key = "sk_tls_test_key";
  Start(o);
  ca_file_ = pki->ca_cert;
  EXPECT_EQ(sim_->ws_base_url().substr(0, 6), "wss://");
  int status = 0;
  json j = Http("GET", "/v1/convai/conversation/get-signed-url?agent_id=a", "",
                {{"xi-api-key", "sk_tls_test_key"}}, &status);
  ASSERT_EQ(status, 200);
  auto c = Connect(j["signed_url"]);
  c->Send({{"type", "user_message"}, {"text", "over TLS"}});
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value()) << c->failure();
  EXPECT_EQ((*r)["agent_response_event"]["agent_response"], "You said: over TLS");
  // A client that does not trust the test CA is refused at the handshake.
  ca_file_.clear();
  auto untrusted = ConnectPublic();
  EXPECT_FALSE(untrusted->WaitOpenOrFail());
}

// ---- erasure, what a conversation received, the handoff tool ----

std::string ConversationIdOf(AgentClient& c) {
  auto meta = c.WaitFor("conversation_initiation_metadata");
  return meta ? (*meta)["conversation_initiation_metadata_event"]["conversation_id"]
                    .get<std::string>()
              : "";
}

TEST_F(ElevenLabsSimTest, DeleteConversationNeedsTheKeyAndAnswers404Afterwards) {
  SimOptions o = Fast();
  o.api_key = "sk_sim_delete_key";
  Start(o);
  auto c = Connect(absl::StrCat(sim_->ws_base_url(), "/v1/convai/conversation?agent_id=a"),
                   true, {{"xi-api-key", "sk_sim_delete_key"}});
  const std::string id = ConversationIdOf(*c);
  ASSERT_FALSE(id.empty()) << c->failure();
  c->conn_->Close(ws::kCloseNormal, "");
  ASSERT_NE(c->WaitClosed(), 0);

  const std::string path = absl::StrCat("/v1/convai/conversations/", id);
  const httplib::Headers key = {{"xi-api-key", "sk_sim_delete_key"}};
  int status = 0;
  Http("DELETE", path, "", {}, &status);
  EXPECT_EQ(status, 401);
  Http("DELETE", path, "", {{"xi-api-key", "wrong"}}, &status);
  EXPECT_EQ(status, 401);
  json unknown = Http("DELETE", "/v1/convai/conversations/conv_unknown", "", key, &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(unknown["detail"]["status"], "conversation_not_found");
  EXPECT_FALSE(Conversations(1)["conversations"][0]["deleted"].get<bool>());

  json ok = Http("DELETE", path, "", key, &status);
  EXPECT_EQ(status, 200);
  EXPECT_TRUE(ok.is_object()) << ok.dump();
  Http("DELETE", path, "", key, &status);
  EXPECT_EQ(status, 404);  // already gone

  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["conversation_id"], id);
  EXPECT_TRUE(rec["deleted"].get<bool>());
  EXPECT_TRUE(rec.contains("deleted_at"));
}

TEST_F(ElevenLabsSimTest, RecordsInitiationDataContextAndMessagesInOrder) {
  Start(Fast());
  auto c = ConnectPublic();
  c->Send({{"type", "conversation_initiation_client_data"},
           {"user_id", "u-42"},
           {"dynamic_variables", {{"customer_name", "Ana"}, {"tier", "gold"}}}});
  c->Send({{"type", "contextual_update"}, {"text", "Earlier: the user asked about prices."}});
  c->Send({{"type", "user_message"}, {"text", "and the delivery?"}});
  ASSERT_TRUE(c->WaitFor("agent_response").has_value()) << c->failure();
  c->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["initiation_client_data"]["user_id"], "u-42");
  EXPECT_EQ(rec["initiation_client_data"]["dynamic_variables"]["tier"], "gold");
  EXPECT_EQ(rec["dynamic_variables"]["customer_name"], "Ana");
  EXPECT_TRUE(rec["conversation_config_override"].is_null());
  EXPECT_EQ(rec["contextual_updates"], json::array({"Earlier: the user asked about prices."}));
  EXPECT_EQ(rec["user_messages"], json::array({"and the delivery?"}));
  // The history reached the agent before the user's words.
  ASSERT_EQ(rec["timeline"].size(), 2u) << rec["timeline"].dump();
  EXPECT_EQ(rec["timeline"][0]["type"], "contextual_update");
  EXPECT_EQ(rec["timeline"][1]["type"], "user_message");
  EXPECT_EQ(rec["timeline"][1]["text"], "and the delivery?");
}

TEST_F(ElevenLabsSimTest, OverridesAreRecordedRefusedOrAllowed) {
  const json override = {{"agent", {{"prompt", {{"prompt", "You remember: likes tea."}}}}}};
  Start(Fast());
  auto refused = ConnectPublic();
  refused->Send({{"type", "conversation_initiation_client_data"},
                 {"conversation_config_override", override}});
  EXPECT_EQ(refused->WaitClosed(), 1008);
  EXPECT_EQ(Conversations(1)["conversations"][0]["conversation_config_override"], override);
  sim_->Shutdown();

  SimOptions o = Fast();
  o.allow_overrides = true;
  Start(o);
  auto allowed = ConnectPublic();
  allowed->Send({{"type", "conversation_initiation_client_data"},
                 {"conversation_config_override", override}});
  allowed->Send({{"type", "user_message"}, {"text", "hi"}});
  ASSERT_TRUE(allowed->WaitFor("agent_response").has_value()) << allowed->failure();
  allowed->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  EXPECT_EQ(rec["conversation_config_override"], override);
  EXPECT_EQ(rec["close_code"], 1000);
}

// client_tool_call as the live agent sends it (PROTOCOLS.md B3); the contract
// table lists server messages without it, so its shape is checked here.
void ExpectToolCallShape(const json& m, const std::string& tool_name) {
  ASSERT_TRUE(m.contains("client_tool_call")) << m.dump();
  const json& call = m["client_tool_call"];
  EXPECT_EQ(call["tool_name"], tool_name);
  EXPECT_TRUE(call["tool_call_id"].is_string());
  EXPECT_TRUE(call["parameters"].is_object());
  EXPECT_TRUE(call["event_id"].is_number());
}

TEST_F(ElevenLabsSimTest, AskingForAHumanCallsTheHandoffToolAndWaitsForItsResult) {
  Start(Fast());
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "Can I talk to a HUMAN please?"}});
  auto call = c->WaitFor("client_tool_call");
  ASSERT_TRUE(call.has_value()) << c->failure();
  ExpectToolCallShape(*call, "transfer_to_human");
  const json& ev = (*call)["client_tool_call"];
  EXPECT_THAT(ev["parameters"]["reason"].get<std::string>(), HasSubstr("HUMAN"));
  // Nothing is said until the tool answers.
  EXPECT_THAT(c->Types(), Not(Contains("agent_response")));

  c->Send({{"type", "client_tool_result"}, {"tool_call_id", "toolu_not_ours"},
           {"result", "?"}, {"is_error", false}});
  c->Send({{"type", "client_tool_result"}, {"tool_call_id", ev["tool_call_id"]},
           {"result", "queued for a person"}, {"is_error", false}});
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value()) << c->failure();
  EXPECT_EQ((*r)["agent_response_event"]["agent_response"], "Connecting you to a person.");
  c->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  ASSERT_EQ(rec["client_tool_calls"].size(), 1u);
  const json& done = rec["client_tool_calls"][0];
  EXPECT_EQ(done["tool_call_id"], ev["tool_call_id"]);
  EXPECT_EQ(done["tool_name"], "transfer_to_human");
  EXPECT_EQ(done["status"], "answered");
  EXPECT_EQ(done["result"], "queued for a person");
  EXPECT_FALSE(done["is_error"].get<bool>());
  EXPECT_EQ(rec["timeline"].back()["tool_call_id"], ev["tool_call_id"]);
  for (const json& m : c->Messages()) {
    if (m.value("type", "") != "client_tool_call") EXPECT_EQ(ContractProblems(m), "") << m.dump();
  }
}

TEST_F(ElevenLabsSimTest, UnansweredHandoffToolTimesOutAndTheAgentSaysSo) {
  SimOptions o = Fast();
  o.handoff_tool_name = "escalate";
  o.client_tool_timeout_ms = 200;
  Start(o);
  auto c = ConnectPublic();
  c->Send({{"type", "user_message"}, {"text", "human"}});
  auto call = c->WaitFor("client_tool_call");
  ASSERT_TRUE(call.has_value()) << c->failure();
  ExpectToolCallShape(*call, "escalate");
  auto r = c->WaitFor("agent_response");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)["agent_response_event"]["agent_response"],
            "Sorry, I could not reach a person right now.");
  c->conn_->Close(ws::kCloseNormal, "");
  json rec = Conversations(1)["conversations"][0];
  ASSERT_EQ(rec["client_tool_calls"].size(), 1u);
  EXPECT_EQ(rec["client_tool_calls"][0]["status"], "timed_out");
  EXPECT_EQ(rec["client_tool_calls"][0]["tool_name"], "escalate");
}

}  // namespace
}  // namespace bridge::elevenlabs_sim
