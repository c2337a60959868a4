// whatsapp-sim over real sockets: the Graph API as our client will use it
// (upload, resolve, download, send, mark read, errors and faults) and the
// webhooks it posts to a small stand-in gateway (Meta's shape, bytes and
// signature, retries, duplicates, statuses, verification). The simulator runs
// in-process on port 0; one test runs the real binary.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <signal.h>

#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "test_pki.h"
#include "whatsapp_sim/whatsapp_sim.h"

namespace bridge::whatsapp_sim {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "EAAG-sim-test-access-token-0123456789";
constexpr char kAppSecret[] = "fixture-app-secret";  // fixtures/webhooks/signatures.tsv
constexpr char kVerifyToken[] = "verify-me-please";
constexpr char kPhoneId[] = "106540352242922";
constexpr char kUser[] = "16505551234";
constexpr absl::Duration kWait = absl::Seconds(30);  // hang guard, not a timing assertion
constexpr int kWaitMs = 30000;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Fixture(const std::string& rel) {
  return ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/", rel));
}

// Computed here, independently of the simulator's own code.
std::string HmacHex(const std::string& key, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), len));
}

std::string Sha256B64(const std::string& bytes) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d);
  return absl::Base64Escape(absl::string_view(reinterpret_cast<char*>(d), sizeof(d)));
}

// Percent-encodes a query value (wamids carry '+', '/' and '=').
std::string Q(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::AsciiStrToUpper(absl::BytesToHexString(
                                     absl::string_view(reinterpret_cast<char*>(&c), 1))));
    }
  }
  return out;
}

// The structure of a JSON value: object keys (recursively), array element
// shapes, and value types — what "the fixture shape" means.
json Shape(const json& v) {
  if (v.is_object()) {
    json out = json::object();
    for (const auto& [k, e] : v.items()) out[k] = Shape(e);
    return out;
  }
  if (v.is_array()) {
    json out = json::array();
    for (const auto& e : v) out.push_back(Shape(e));
    return out;
  }
  return v.type_name();
}

// ---------------------------------------------------------------------------
// A stand-in for the gateway's webhook endpoint: records every POST (raw
// bytes + signature), answers with scripted statuses, and answers Meta's
// verification GET like the real gateway.
class FakeGateway {
 public:
  struct Post {
    std::string body;
    std::string signature;  // "" when the header was absent
    bool signed_ = false;
    json parsed;
  };

  FakeGateway() {
    server_.Post("/webhook/whatsapp", [this](const httplib::Request& req, httplib::Response& res) {
      int status = 200;
      {
        absl::MutexLock lock(&mu_);
        Post p{req.body, req.get_header_value("X-Hub-Signature-256"),
               req.has_header("X-Hub-Signature-256"),
               json::parse(req.body, nullptr, false)};
        posts_.push_back(std::move(p));
        if (!script_.empty()) {
          status = script_.front();
          script_.pop_front();
        }
      }
      res.status = status;
      res.set_content(status == 200 ? "EVENT_RECEIVED" : "try again", "text/plain");
    });
    server_.Get("/webhook/whatsapp", [](const httplib::Request& req, httplib::Response& res) {
      if (req.get_param_value("hub.mode") == "subscribe" &&
          req.get_param_value("hub.verify_token") == kVerifyToken) {
        res.set_content(req.get_param_value("hub.challenge"), "text/plain");
      } else {
        res.status = 403;
      }
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~FakeGateway() {
    server_.stop();
    thread_.join();
  }

  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/webhook/whatsapp"); }

  // The next POSTs get these statuses, then 200s.
  void Answer(std::vector<int> statuses) {
    absl::MutexLock lock(&mu_);
    script_.insert(script_.end(), statuses.begin(), statuses.end());
  }

  // Waits until `n` posts match `keep` (all when null); returns those.
  std::vector<Post> Wait(size_t n, std::function<bool(const Post&)> keep = nullptr) {
    auto matching = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      std::vector<Post> out;
      for (const Post& p : posts_) {
        if (!keep || keep(p)) out.push_back(p);
      }
      return out;
    };
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return matching().size() >= n; };
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
    return matching();
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<Post> posts_ ABSL_GUARDED_BY(mu_);
  std::deque<int> script_ ABSL_GUARDED_BY(mu_);
};

bool IsStatusPost(const FakeGateway::Post& p) {
  return p.parsed.is_object() &&
         p.parsed["entry"][0]["changes"][0]["value"].contains("statuses");
}

// ---------------------------------------------------------------------------
class WhatsAppSimTest : public ::testing::Test {
 protected:
  void SetUp() override { StartSim(/*status_webhooks=*/false); }

  void StartSim(bool status_webhooks) {
    sim_.reset();
    SimOptions o;
    o.webhook_url = gateway_.url();
    o.app_secret = kAppSecret;
    o.access_token = kToken;
    o.verify_token = kVerifyToken;
    o.status_webhooks = status_webhooks;
    o.webhook_retry_base_ms = 10;
    auto sim = WhatsAppSim::Start(o);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = *std::move(sim);
  }

  std::unique_ptr<httplib::Client> Client() {
    auto c = std::make_unique<httplib::Client>(sim_->base_url());
    c->set_read_timeout(60);
    return c;
  }
  httplib::Headers Auth(const std::string& token = kToken) {
    return {{"Authorization", absl::StrCat("Bearer ", token)}};
  }

  // POST /v23.0/{phone}/messages; returns {status, body json}.
  std::pair<int, json> SendJson(const json& msg, const std::string& token = kToken,
                                const std::string& phone = kPhoneId) {
    auto r = Client()->Post(absl::StrCat("/v23.0/", phone, "/messages"), Auth(token),
                            msg.dump(), "application/json");
    EXPECT_TRUE(r) << httplib::to_string(r.error());
    if (!r) return {-1, json()};
    last_headers_ = r->headers;
    return {r->status, json::parse(r->body, nullptr, false)};
  }
  std::pair<int, json> SendText(const std::string& body, const std::string& to = kUser) {
    return SendJson({{"messaging_product", "whatsapp"}, {"recipient_type", "individual"},
                     {"to", to}, {"type", "text"},
                     {"text", {{"preview_url", false}, {"body", body}}}});
  }

  std::pair<int, json> Upload(const std::string& bytes, const std::string& mime) {
    httplib::MultipartFormDataItems items = {{"file", bytes, "note.ogg", mime},
                                             {"type", mime, "", ""},
                                             {"messaging_product", "whatsapp", "", ""}};
    auto r = Client()->Post(absl::StrCat("/v23.0/", kPhoneId, "/media"), Auth(), items);
    EXPECT_TRUE(r);
    if (!r) return {-1, json()};
    return {r->status, json::parse(r->body, nullptr, false)};
  }
  std::string UploadOk(const std::string& bytes, const std::string& mime = "audio/ogg") {
    auto [status, body] = Upload(bytes, mime);
    EXPECT_EQ(status, 200) << body;
    return body.value("id", "");
  }

  json Resolve(const std::string& id, int* status) {
    auto r = Client()->Get(absl::StrCat("/v21.0/", id), Auth());
    *status = r ? r->status : -1;
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  // GET on an absolute URL the simulator handed out.
  httplib::Result GetUrl(const std::string& url, const httplib::Headers& headers) {
    const size_t path = url.find('/', url.find("://") + 3);
    httplib::Client c(url.substr(0, path));
    return c.Get(url.substr(path), headers);
  }

  json GetJson(const std::string& path) {
    auto r = Client()->Get(path);
    EXPECT_TRUE(r && r->status == 200) << path << (r ? r->body : "");
    return r ? json::parse(r->body, nullptr, false) : json();
  }
  json PostJson(const std::string& path, const std::string& body, int* status = nullptr) {
    auto r = Client()->Post(path, body, "application/json");
    if (status != nullptr) *status = r ? r->status : -1;
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  static void ExpectGraphError(const json& body, int code) {
    ASSERT_TRUE(body.contains("error")) << body;
    EXPECT_EQ(body["error"]["code"], code) << body;
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"]["type"].is_string());
    EXPECT_TRUE(body["error"]["fbtrace_id"].is_string());
  }

  FakeGateway gateway_;
  std::unique_ptr<WhatsAppSim> sim_;
  httplib::Headers last_headers_;
};

// ----------------------------------------------------------------- media

TEST_F(WhatsAppSimTest, UploadResolveDownloadNeedsTheToken) {
  const std::string note = Fixture("audio/voice_note_hello.ogg");
  const std::string id = UploadOk(note);
  ASSERT_FALSE(id.empty());

  int status = 0;
  json media = Resolve(id, &status);
  ASSERT_EQ(status, 200) << media;
  EXPECT_EQ(media["messaging_product"], "whatsapp");
  EXPECT_EQ(media["id"], id);
  EXPECT_EQ(media["mime_type"], "audio/ogg");
  EXPECT_EQ(media["sha256"], Sha256B64(note));
  EXPECT_EQ(media["file_size"], note.size());

  auto with = GetUrl(media["url"], Auth());
  ASSERT_TRUE(with);
  EXPECT_EQ(with->status, 200);
  EXPECT_TRUE(with->body == note) << "downloaded bytes differ";

  auto without = GetUrl(media["url"], {});
  ASSERT_TRUE(without);
  EXPECT_EQ(without->status, 401);
  ExpectGraphError(json::parse(without->body), 190);
}

TEST_F(WhatsAppSimTest, UploadRejectsAudioOggThatIsNotMonoOpus) {
  for (const char* name : {"audio/broken_random.ogg", "audio/voice_note_stereo_48k.ogg"}) {
    auto [status, body] = Upload(Fixture(name), "audio/ogg");
    EXPECT_EQ(status, 400) << name;
    ExpectGraphError(body, 131053);
    EXPECT_THAT(body["error"]["error_data"]["details"].get<std::string>(), HasSubstr("Opus"));
  }
  // Other audio types are not sniffed.
  auto [status, body] = Upload("ID3 not really an mp3", "audio/mpeg");
  EXPECT_EQ(status, 200) << body;
}

TEST_F(WhatsAppSimTest, DownloadUrlExpiresAndResolvingAgainWorks) {
  const std::string note = Fixture("audio/voice_note_hello.ogg");
  const std::string id = UploadOk(note);
  int status = 0;
  json first = Resolve(id, &status);
  ASSERT_EQ(status, 200);

  int clock_status = 0;
  PostJson("/sim/clock", R"({"advance_s":301})", &clock_status);
  ASSERT_EQ(clock_status, 200);
  auto expired = GetUrl(first["url"], Auth());
  ASSERT_TRUE(expired);
  EXPECT_EQ(expired->status, 404);

  json again = Resolve(id, &status);
  ASSERT_EQ(status, 200);
  EXPECT_NE(again["url"], first["url"]);
  auto fresh = GetUrl(again["url"], Auth());
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->status, 200);
  EXPECT_TRUE(fresh->body == note);
}

TEST_F(WhatsAppSimTest, RegisteredFixtureMediaResolvesByItsId) {
  const std::string note = Fixture("audio/voice_note_hello.ogg");
  auto r = Client()->Post("/sim/media?id=fixture-media-voice-note-hello&mime=audio/ogg", note,
                          "application/octet-stream");
  ASSERT_TRUE(r && r->status == 200);
  int status = 0;
  json media = Resolve("fixture-media-voice-note-hello", &status);
  ASSERT_EQ(status, 200) << media;
  EXPECT_EQ(media["sha256"], Sha256B64(note));
  auto bytes = Client()->Get("/sim/media/fixture-media-voice-note-hello");
  ASSERT_TRUE(bytes);
  EXPECT_TRUE(bytes->body == note);
  Resolve("no-such-media", &status);
  EXPECT_EQ(status, 400);
}

// ----------------------------------------------------------------- messages

TEST_F(WhatsAppSimTest, SentTextAndVoiceNoteAppearInTheOutbox) {
  auto [s1, text] = SendText("Hello from the agent");
  ASSERT_EQ(s1, 200) << text;
  EXPECT_EQ(text["messaging_product"], "whatsapp");
  EXPECT_EQ(text["contacts"][0]["input"], kUser);
  EXPECT_EQ(text["contacts"][0]["wa_id"], kUser);
  const std::string text_id = text["messages"][0]["id"];
  EXPECT_TRUE(absl::StartsWith(text_id, "wamid.")) << text_id;

  const std::string media_id = UploadOk(Fixture("audio/voice_note_tone_440hz.ogg"));
  auto [s2, voice] = SendJson({{"messaging_product", "whatsapp"}, {"to", kUser},
                               {"type", "audio"}, {"audio", {{"id", media_id}, {"voice", true}}},
                               {"context", {{"message_id", "wamid.incoming"}}}});
  ASSERT_EQ(s2, 200) << voice;

  // The long-poll returns as soon as both are there.
  json out = GetJson(absl::StrCat("/sim/users/", kUser, "/outbox?min_count=2&wait_ms=", kWaitMs));
  ASSERT_EQ(out.size(), 2u) << out;
  EXPECT_EQ(out[0]["id"], text_id);
  EXPECT_EQ(out[0]["type"], "text");
  EXPECT_EQ(out[0]["text"], "Hello from the agent");
  EXPECT_TRUE(out[0]["received_at"].is_string());
  EXPECT_EQ(out[1]["id"], voice["messages"][0]["id"]);
  EXPECT_EQ(out[1]["type"], "audio");
  EXPECT_EQ(out[1]["media_id"], media_id);
  EXPECT_EQ(out[1]["voice"], true);
  EXPECT_EQ(out[1]["context_message_id"], "wamid.incoming");

  // An unknown media id is refused.
  auto [s3, bad] = SendJson({{"messaging_product", "whatsapp"}, {"to", kUser},
                             {"type", "audio"}, {"audio", {{"id", "404404"}}}});
  EXPECT_EQ(s3, 400);
  ExpectGraphError(bad, 100);
}

TEST_F(WhatsAppSimTest, TextLimitIs4096Characters) {
  std::string max;
  for (int i = 0; i < 4096; ++i) max += "é";  // 8192 bytes: characters count, not bytes
  auto [ok_status, ok] = SendText(max);
  EXPECT_EQ(ok_status, 200) << ok;

  auto [status, body] = SendText(std::string(4097, 'a'));
  EXPECT_EQ(status, 400);
  ExpectGraphError(body, 100);
  EXPECT_THAT(body["error"]["error_data"]["details"].get<std::string>(), HasSubstr("4096"));
}

TEST_F(WhatsAppSimTest, BadTokenIs401WithCode190OnEveryGraphCall) {
  json msg = {{"messaging_product", "whatsapp"}, {"to", kUser}, {"type", "text"},
              {"text", {{"body", "hi"}}}};
  for (const std::string token : {"wrong-token", ""}) {
    auto [status, body] = SendJson(msg, token);
    EXPECT_EQ(status, 401);
    ExpectGraphError(body, 190);
    EXPECT_EQ(body["error"]["type"], "OAuthException");
    EXPECT_EQ(body["error"]["message"], "Invalid OAuth access token - Cannot parse access token");
  }
  auto r = Client()->Get("/v23.0/12345");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  // Nothing was sent.
  EXPECT_TRUE(GetJson(absl::StrCat("/sim/users/", kUser, "/outbox")).empty());
}

TEST_F(WhatsAppSimTest, WrongPhoneNumberIdIs400Code100) {
  auto [status, body] = SendJson({{"messaging_product", "whatsapp"}, {"to", kUser},
                                  {"type", "text"}, {"text", {{"body", "hi"}}}},
                                 kToken, "999999999");
  EXPECT_EQ(status, 400);
  ExpectGraphError(body, 100);
}

TEST_F(WhatsAppSimTest, MarkReadWithTypingIndicatorIsRecorded) {
  auto [status, body] = SendJson({{"messaging_product", "whatsapp"}, {"status", "read"},
                                  {"message_id", "wamid.ABC"},
                                  {"typing_indicator", {{"type", "text"}}}});
  ASSERT_EQ(status, 200) << body;
  EXPECT_EQ(body, json({{"success", true}}));
  json reads = GetJson(absl::StrCat("/sim/reads?min_count=1&wait_ms=", kWaitMs));
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0]["message_id"], "wamid.ABC");
  EXPECT_EQ(reads[0]["typing_indicator"], "text");
}

// ----------------------------------------------------------------- webhooks

TEST_F(WhatsAppSimTest, TextWebhookIsSignedEscapedAndShapedLikeMeta) {
  const std::string text = "¿Hay mesa libre mañana? 🍝 Danke schön — 谢谢 1/2";
  auto r = Client()->Post("/sim/users/447700900123/text?name=Zo%C3%AB%20%C3%85ngstr%C3%B6m",
                          text, "text/plain");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  const std::string wamid = json::parse(r->body)["message_id"];

  auto posts = gateway_.Wait(1);
  ASSERT_EQ(posts.size(), 1u);
  const FakeGateway::Post& p = posts[0];
  EXPECT_EQ(p.signature, absl::StrCat("sha256=", HmacHex(kAppSecret, p.body)));
  // Meta's serialisation: pure ASCII, \uXXXX with surrogate pairs, "\/".
  for (char c : p.body) ASSERT_LT(static_cast<unsigned char>(c), 0x80) << p.body;
  EXPECT_THAT(p.body, HasSubstr(R"(\u00bfHay)"));
  EXPECT_THAT(p.body, HasSubstr(R"(\ud83c\udf5d)"));
  EXPECT_THAT(p.body, HasSubstr(R"(1\/2)"));

  const json fixture = json::parse(Fixture("webhooks/text_unicode.json"));
  EXPECT_EQ(Shape(p.parsed), Shape(fixture));
  const json& value = p.parsed["entry"][0]["changes"][0]["value"];
  EXPECT_EQ(value["metadata"], fixture["entry"][0]["changes"][0]["value"]["metadata"]);
  EXPECT_EQ(value["contacts"][0]["profile"]["name"], "Zoë Ångström");
  EXPECT_EQ(value["contacts"][0]["wa_id"], "447700900123");
  EXPECT_EQ(value["messages"][0]["id"], wamid);
  EXPECT_EQ(value["messages"][0]["text"]["body"], text);
}

TEST_F(WhatsAppSimTest, VoiceWebhooksCarryVoiceFlagAndDownloadableUrl) {
  const std::string note = Fixture("audio/voice_note_hello.ogg");
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/voice"), note, "audio/ogg");
  ASSERT_TRUE(r && r->status == 200);
  auto fwd = Client()->Post(absl::StrCat("/sim/users/", kUser, "/voice?voice=false&mime=audio/mpeg"),
                            "fake mp3 bytes", "audio/mpeg");
  ASSERT_TRUE(fwd && fwd->status == 200);

  auto posts = gateway_.Wait(2);
  ASSERT_EQ(posts.size(), 2u);
  const json fixture = json::parse(Fixture("webhooks/voice_note.json"));
  EXPECT_EQ(Shape(posts[0].parsed), Shape(fixture));
  const json& audio = posts[0].parsed["entry"][0]["changes"][0]["value"]["messages"][0]["audio"];
  EXPECT_EQ(audio["voice"], true);
  EXPECT_EQ(audio["mime_type"], "audio/ogg; codecs=opus");
  EXPECT_EQ(audio["sha256"], Sha256B64(note));
  EXPECT_THAT(posts[0].body, HasSubstr(R"(http:\/\/)"));
  auto dl = GetUrl(audio["url"], Auth());
  ASSERT_TRUE(dl);
  EXPECT_EQ(dl->status, 200);
  EXPECT_TRUE(dl->body == note);

  const json& fwd_audio = posts[1].parsed["entry"][0]["changes"][0]["value"]["messages"][0]["audio"];
  EXPECT_EQ(fwd_audio["voice"], false);
  EXPECT_EQ(fwd_audio["mime_type"], "audio/mpeg");
}

TEST_F(WhatsAppSimTest, Non200IsRetriedAndEveryAttemptRecorded) {
  gateway_.Answer({500});
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text"), "retry me", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  const std::string wamid = json::parse(r->body)["message_id"];

  json attempts = GetJson(absl::StrCat("/sim/webhooks?id=", Q(wamid),
                                       "&min_count=2&wait_ms=", kWaitMs));
  ASSERT_EQ(attempts.size(), 2u) << attempts;
  EXPECT_EQ(attempts[0]["attempt"], 1);
  EXPECT_EQ(attempts[0]["status"], 500);
  EXPECT_EQ(attempts[1]["attempt"], 2);
  EXPECT_EQ(attempts[1]["status"], 200);
  auto posts = gateway_.Wait(2);
  ASSERT_EQ(posts.size(), 2u);
  EXPECT_EQ(posts[0].body, posts[1].body);  // the same bytes each time
}

TEST_F(WhatsAppSimTest, RetriesStopAfterTheRequestedCount) {
  gateway_.Answer({503, 503, 503, 503});
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text?retries=2"), "x",
                          "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  const std::string wamid = json::parse(r->body)["message_id"];
  json attempts = GetJson(absl::StrCat("/sim/webhooks?id=", Q(wamid),
                                       "&min_count=3&wait_ms=", kWaitMs));
  ASSERT_EQ(attempts.size(), 3u) << attempts;
  EXPECT_EQ(attempts[2]["attempt"], 3);
  EXPECT_EQ(attempts[2]["status"], 503);
}

TEST_F(WhatsAppSimTest, DuplicateFaultDeliversEachWebhookTwice) {
  int status = 0;
  PostJson("/sim/faults", R"({"webhook_duplicate":true})", &status);
  ASSERT_EQ(status, 200);
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text"), "twice", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  const std::string wamid = json::parse(r->body)["message_id"];
  auto posts = gateway_.Wait(2);
  ASSERT_EQ(posts.size(), 2u);
  EXPECT_EQ(posts[0].body, posts[1].body);
  json attempts = GetJson(absl::StrCat("/sim/webhooks?id=", Q(wamid),
                                       "&min_count=2&wait_ms=", kWaitMs));
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_NE(attempts[0]["duplicate"], attempts[1]["duplicate"]);
}

TEST_F(WhatsAppSimTest, RawWebhookPostsTheBytesAsIsWithEachSignMode) {
  const std::string body = Fixture("webhooks/text.json");
  std::string expected_sig;
  for (absl::string_view line : absl::StrSplit(Fixture("webhooks/signatures.tsv"), '\n')) {
    if (absl::StartsWith(line, "text.json\t")) expected_sig = std::string(line.substr(10));
  }
  ASSERT_FALSE(expected_sig.empty());

  gateway_.Answer({200, 401});
  auto good = Client()->Post("/sim/webhook?sign=good", body, "application/json");
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200);
  EXPECT_EQ(good->body, "EVENT_RECEIVED");
  auto bad = Client()->Post("/sim/webhook?sign=bad", body, "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 401);  // the gateway's answer, passed through
  auto none = Client()->Post("/sim/webhook?sign=none", body, "application/json");
  ASSERT_TRUE(none);

  auto posts = gateway_.Wait(3);
  ASSERT_EQ(posts.size(), 3u);
  EXPECT_EQ(posts[0].body, body);
  EXPECT_EQ(posts[0].signature, expected_sig);
  EXPECT_TRUE(posts[1].signed_);
  EXPECT_NE(posts[1].signature, expected_sig);
  EXPECT_FALSE(posts[2].signed_);
}

TEST_F(WhatsAppSimTest, StatusWebhooksFollowASentVoiceNote) {
  StartSim(/*status_webhooks=*/true);
  const std::string media_id = UploadOk(Fixture("audio/voice_note_hello.ogg"));
  auto [status, sent] = SendJson({{"messaging_product", "whatsapp"}, {"to", kUser},
                                  {"type", "audio"}, {"audio", {{"id", media_id}, {"voice", true}}}});
  ASSERT_EQ(status, 200) << sent;
  const std::string wamid = sent["messages"][0]["id"];

  auto posts = gateway_.Wait(4, IsStatusPost);
  ASSERT_EQ(posts.size(), 4u);
  std::vector<std::string> order;
  int64_t last_ts = 0;
  for (const auto& p : posts) {
    EXPECT_EQ(p.signature, absl::StrCat("sha256=", HmacHex(kAppSecret, p.body)));
    const json& st = p.parsed["entry"][0]["changes"][0]["value"]["statuses"][0];
    EXPECT_EQ(st["id"], wamid);
    EXPECT_EQ(st["recipient_id"], kUser);
    ASSERT_TRUE(st["timestamp"].is_string());
    const int64_t ts = std::stoll(st["timestamp"].get<std::string>());
    EXPECT_GT(ts, last_ts);
    last_ts = ts;
    order.push_back(st["status"]);
  }
  EXPECT_THAT(order, ElementsAre("sent", "delivered", "read", "played"));
  EXPECT_EQ(Shape(posts[0].parsed), Shape(json::parse(Fixture("webhooks/status_sent.json"))));
  EXPECT_EQ(Shape(posts[2].parsed), Shape(json::parse(Fixture("webhooks/status_read.json"))));
}

TEST_F(WhatsAppSimTest, OutOfOrderFaultSendsStatusesNewestFirst) {
  StartSim(/*status_webhooks=*/true);
  int status = 0;
  PostJson("/sim/faults", R"({"webhook_out_of_order":true})", &status);
  ASSERT_EQ(status, 200);
  auto [s, sent] = SendText("text: no played status");
  ASSERT_EQ(s, 200);
  auto posts = gateway_.Wait(3, IsStatusPost);
  ASSERT_EQ(posts.size(), 3u);
  std::vector<std::string> order;
  for (const auto& p : posts) {
    order.push_back(p.parsed["entry"][0]["changes"][0]["value"]["statuses"][0]["status"]);
  }
  EXPECT_THAT(order, ElementsAre("read", "delivered", "sent"));
}

// ----------------------------------------------------------- issue #9

// The message object of a webhook post (the last change's first message).
json MessageOf(const FakeGateway::Post& p) {
  const json& changes = p.parsed["entry"][0]["changes"];
  return changes[changes.size() - 1]["value"]["messages"][0];
}

bool IsMessagePost(const FakeGateway::Post& p) { return !IsStatusPost(p); }

TEST_F(WhatsAppSimTest, BsuidOnlyUsersWriteAndAreAnsweredByRecipient) {
  const std::string bsuid = "US.13491208655302741918";
  auto r = Client()->Post(absl::StrCat("/sim/users/", bsuid, "/text?username=neo"), "hi",
                          "text/plain");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  auto posts = gateway_.Wait(1, IsMessagePost);
  ASSERT_EQ(posts.size(), 1u);
  const json& value = posts[0].parsed["entry"][0]["changes"][0]["value"];
  EXPECT_FALSE(value["messages"][0].contains("from")) << value;  // no phone shared
  EXPECT_EQ(value["messages"][0]["from_user_id"], bsuid);
  EXPECT_EQ(value["contacts"][0]["user_id"], bsuid);
  EXPECT_EQ(value["contacts"][0]["profile"]["username"], "neo");
  EXPECT_FALSE(value["contacts"][0].contains("wa_id"));

  auto [status, sent] = SendJson({{"messaging_product", "whatsapp"}, {"recipient", bsuid},
                                  {"type", "text"}, {"text", {{"body", "hello neo"}}}});
  ASSERT_EQ(status, 200) << sent;
  EXPECT_EQ(sent["contacts"][0]["user_id"], bsuid);
  EXPECT_FALSE(sent["contacts"][0].contains("wa_id"));
  json out = GetJson(absl::StrCat("/sim/users/", bsuid, "/outbox?min_count=1&wait_ms=", kWaitMs));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["recipient"], bsuid);
  EXPECT_EQ(out[0]["text"], "hello neo");
  // `to` wins over `recipient`; a recipient that is no BSUID is refused.
  auto [s2, both] = SendJson({{"messaging_product", "whatsapp"}, {"to", kUser},
                              {"recipient", bsuid}, {"text", {{"body", "to wins"}}}});
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(both["contacts"][0]["wa_id"], kUser);
  auto [s3, bad] = SendJson({{"messaging_product", "whatsapp"}, {"recipient", "12345"},
                             {"text", {{"body", "x"}}}});
  EXPECT_EQ(s3, 400);
  ExpectGraphError(bad, 131009);
}

TEST_F(WhatsAppSimTest, AUserWithPhoneAndBsuidIsOneUser) {
  const std::string bsuid = "US.77";
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text?user_id=", bsuid), "both",
                          "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  json m = MessageOf(gateway_.Wait(1, IsMessagePost)[0]);
  EXPECT_EQ(m["from"], kUser);
  EXPECT_EQ(m["from_user_id"], bsuid);
  ASSERT_EQ(SendText("by phone").first, 200);
  ASSERT_EQ(SendJson({{"messaging_product", "whatsapp"}, {"recipient", bsuid},
                      {"text", {{"body", "by bsuid"}}}}).first, 200);
  json out = GetJson(absl::StrCat("/sim/users/", bsuid, "/outbox?min_count=2&wait_ms=", kWaitMs));
  EXPECT_EQ(out.size(), 2u) << out;
  EXPECT_EQ(GetJson(absl::StrCat("/sim/users/", kUser, "/outbox")).size(), 2u);
}

TEST_F(WhatsAppSimTest, ReactionsEditsRevokesAndOldMessages) {
  const std::string base = absl::StrCat("/sim/users/", kUser);
  auto r = Client()->Post(base + "/reaction?message_id=wamid.ours", "\xF0\x9F\x91\x8D", "text/plain");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "");
  r = Client()->Post(base + "/edit?message_id=wamid.mine", "fixed text", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  r = Client()->Post(base + "/revoke?message_id=wamid.mine", "", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  r = Client()->Post(base + "/text?age_s=259200", "three days late", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  r = Client()->Post(base + "/edit", "no target", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  auto posts = gateway_.Wait(4, IsMessagePost);
  ASSERT_EQ(posts.size(), 4u);
  const json reaction = MessageOf(posts[0]);
  EXPECT_EQ(reaction["type"], "reaction");
  EXPECT_EQ(reaction["reaction"]["message_id"], "wamid.ours");
  EXPECT_EQ(reaction["reaction"]["emoji"], "\xF0\x9F\x91\x8D");
  EXPECT_THAT(posts[0].body, HasSubstr("\\ud83d\\udc4d"));  // escaped like Meta
  const json edit = MessageOf(posts[1]);
  EXPECT_EQ(edit["edit"]["original_message_id"], "wamid.mine");
  EXPECT_EQ(edit["edit"]["message"]["text"]["body"], "fixed text");
  EXPECT_EQ(MessageOf(posts[2])["revoke"]["original_message_id"], "wamid.mine");
  const json old = MessageOf(posts[3]);
  const int64_t now = GetJson("/sim/clock")["now"];
  EXPECT_NEAR(std::stoll(old["timestamp"].get<std::string>()), now - 259200, 5);
}

TEST_F(WhatsAppSimTest, MalformedExtraChangeSitsBesideTheValidMessage) {
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text?malformed_extra_change=true"),
                          "valid", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  auto posts = gateway_.Wait(1);
  ASSERT_EQ(posts.size(), 1u);
  const json& changes = posts[0].parsed["entry"][0]["changes"];
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[0]["value"]["metadata"].is_string());
  EXPECT_EQ(changes[1]["value"]["messages"][0]["text"]["body"], "valid");
  EXPECT_EQ(posts[0].signature, absl::StrCat("sha256=", HmacHex(kAppSecret, posts[0].body)));
}

TEST_F(WhatsAppSimTest, DeliveryFailedFaultAcceptsThenPostsAFailedStatusOnce) {
  // Even without --status_webhooks: the fault asked for the failure.
  int status = 0;
  PostJson("/sim/faults", R"({"delivery_failed_code":131053,"message_type":"audio","count":1})",
           &status);
  ASSERT_EQ(status, 200);
  ASSERT_EQ(SendText("text is not affected").first, 200);
  const std::string media_id = UploadOk(Fixture("audio/voice_note_hello.ogg"));
  json voice = {{"messaging_product", "whatsapp"}, {"recipient", "US.5"}, {"type", "audio"},
                {"audio", {{"id", media_id}, {"voice", true}}}};
  auto [s1, sent] = SendJson(voice);
  ASSERT_EQ(s1, 200) << sent;
  const std::string wamid = sent["messages"][0]["id"];
  auto posts = gateway_.Wait(2, IsStatusPost);
  ASSERT_EQ(posts.size(), 2u);
  const json st = posts[1].parsed["entry"][0]["changes"][0]["value"]["statuses"][0];
  EXPECT_EQ(st["id"], wamid);
  EXPECT_EQ(st["status"], "failed");
  EXPECT_EQ(st["recipient_user_id"], "US.5");
  EXPECT_EQ(st["errors"][0]["code"], 131053);
  EXPECT_EQ(st["errors"][0]["title"], "Media upload error");
  EXPECT_EQ(posts[1].signature, absl::StrCat("sha256=", HmacHex(kAppSecret, posts[1].body)));
  // count 1: the next voice note is not failed (and, without
  // --status_webhooks, posts no status at all).
  ASSERT_EQ(SendJson(voice).first, 200);
  EXPECT_EQ(GetJson("/sim/faults")["delivery_failed_code"], 0);
}

TEST_F(WhatsAppSimTest, Bsuid131062FaultRefusesThoseTypesToABsuid) {
  int status = 0;
  PostJson("/sim/faults", R"({"bsuid_131062_types":["audio"]})", &status);
  ASSERT_EQ(status, 200);
  const std::string media_id = UploadOk(Fixture("audio/voice_note_hello.ogg"));
  auto [s1, body] = SendJson({{"messaging_product", "whatsapp"}, {"recipient", "US.5"},
                              {"type", "audio"}, {"audio", {{"id", media_id}, {"voice", true}}}});
  EXPECT_EQ(s1, 400);
  ExpectGraphError(body, 131062);
  EXPECT_EQ(SendJson({{"messaging_product", "whatsapp"}, {"recipient", "US.5"},
                      {"text", {{"body", "text goes"}}}}).first, 200);
}

TEST_F(WhatsAppSimTest, VerifyPerformsMetasChallenge) {
  int status = 0;
  json ok = PostJson("/sim/verify", "", &status);
  ASSERT_EQ(status, 200) << ok;
  EXPECT_EQ(ok["ok"], true) << ok;
  EXPECT_EQ(ok["body"], ok["challenge"]);
  json refused = PostJson("/sim/verify?verify_token=not-the-token", "", &status);
  EXPECT_EQ(refused["ok"], false);
  EXPECT_EQ(refused["status"], 403);
}

// ----------------------------------------------------------------- faults

TEST_F(WhatsAppSimTest, MessagesFault429CarriesRetryAfterAndCode130429) {
  int status = 0;
  PostJson("/sim/faults", R"({"messages_status":429,"retry_after_s":1,"count":3})", &status);
  ASSERT_EQ(status, 200);
  for (int i = 0; i < 3; ++i) {
    auto [s, body] = SendText("hi");
    EXPECT_EQ(s, 429);
    ExpectGraphError(body, 130429);
    auto it = last_headers_.find("Retry-After");
    ASSERT_NE(it, last_headers_.end());
    EXPECT_EQ(it->second, "1");
  }
  auto [s, body] = SendText("hi");
  EXPECT_EQ(s, 200) << body;
}

TEST_F(WhatsAppSimTest, MediaAndUploadFaultsFailThatManyCalls) {
  const std::string id = UploadOk(Fixture("audio/voice_note_hello.ogg"));
  int status = 0;
  PostJson("/sim/faults", R"({"media_status":500,"count":2})", &status);
  ASSERT_EQ(status, 200);
  Resolve(id, &status);
  EXPECT_EQ(status, 500);
  Resolve(id, &status);
  EXPECT_EQ(status, 500);
  Resolve(id, &status);
  EXPECT_EQ(status, 200);

  PostJson("/sim/faults", R"({"upload_status":500,"count":1})", &status);
  auto [s1, b1] = Upload(Fixture("audio/voice_note_hello.ogg"), "audio/ogg");
  EXPECT_EQ(s1, 500);
  EXPECT_TRUE(b1.contains("error"));
  auto [s2, b2] = Upload(Fixture("audio/voice_note_hello.ogg"), "audio/ogg");
  EXPECT_EQ(s2, 200) << b2;
}

TEST_F(WhatsAppSimTest, LatencyFaultDelaysGraphAnswers) {
  int status = 0;
  PostJson("/sim/faults", R"({"latency_ms":200})", &status);
  ASSERT_EQ(status, 200);
  const absl::Time start = absl::Now();
  auto [s, body] = SendText("slow");
  EXPECT_EQ(s, 200);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  auto cleared = Client()->Delete("/sim/faults");
  ASSERT_TRUE(cleared && cleared->status == 200);
  EXPECT_EQ(json::parse(cleared->body)["latency_ms"], 0);
}

TEST_F(WhatsAppSimTest, PairRateLimitAllowsOneMessagePerSixSecondsPerUser) {
  int status = 0;
  PostJson("/sim/faults", R"({"pair_rate_limit":true})", &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(SendText("one").first, 200);
  auto [s, body] = SendText("two");
  EXPECT_EQ(s, 400);
  ExpectGraphError(body, 131056);
  EXPECT_EQ(SendText("another user", "447700900123").first, 200);
  PostJson("/sim/clock", R"({"advance_s":6})", &status);
  EXPECT_EQ(SendText("three").first, 200);
}

TEST_F(WhatsAppSimTest, ServiceWindowFaultRefusesFreeFormAfter24Hours) {
  int status = 0;
  PostJson("/sim/faults", R"({"service_window":true})", &status);
  ASSERT_EQ(status, 200);
  auto [never, body] = SendText("you never wrote");
  EXPECT_EQ(never, 400);
  ExpectGraphError(body, 131047);
  auto r = Client()->Post(absl::StrCat("/sim/users/", kUser, "/text"), "hi", "text/plain");
  ASSERT_TRUE(r && r->status == 200);
  EXPECT_EQ(SendText("within the window").first, 200);
  PostJson("/sim/clock", R"({"advance_s":86401})", &status);
  EXPECT_EQ(SendText("too late").first, 400);
}

TEST_F(WhatsAppSimTest, ShutdownWakesLongPolls) {
  absl::Notification returned;
  const std::string base = sim_->base_url();
  std::thread poll([&] {
    httplib::Client c(base);
    c.set_read_timeout(120);
    c.Get(absl::StrCat("/sim/users/", kUser, "/outbox?min_count=1&wait_ms=120000"));
    returned.Notify();
  });
  json stats = GetJson(absl::StrCat("/sim/stats?min_long_polls=1&wait_ms=", kWaitMs));
  ASSERT_EQ(stats["long_polls"], 1) << stats;  // the poll is waiting in the simulator
  const absl::Time start = absl::Now();
  sim_.reset();  // must not wait out the two-minute poll
  EXPECT_LT(absl::Now() - start, kWait);
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(kWait));
  poll.join();
}

TEST_F(WhatsAppSimTest, BadFaultSpecsAreRefusedAndChangeNothing) {
  int status = 0;
  PostJson("/sim/faults", R"({"no_such_fault":1})", &status);
  EXPECT_EQ(status, 400);
  PostJson("/sim/faults", R"({"latency_ms":100,"messages_status":"x"})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(GetJson("/sim/faults")["latency_ms"], 0);
}

TEST(WhatsAppSimHelpers, RetryScheduleIsImmediateThenExponential) {
  const absl::Duration base = absl::Seconds(1);
  EXPECT_EQ(WebhookRetryDelay(1, base), absl::ZeroDuration());
  EXPECT_EQ(WebhookRetryDelay(2, base), absl::ZeroDuration());
  EXPECT_EQ(WebhookRetryDelay(3, base), absl::Seconds(1));
  EXPECT_EQ(WebhookRetryDelay(4, base), absl::Seconds(2));
  EXPECT_EQ(WebhookRetryDelay(5, base), absl::Seconds(4));
  EXPECT_EQ(WebhookRetryDelay(60, base), absl::Hours(1));
}

// ----------------------------------------------------------------- TLS, binary

TEST(WhatsAppSimTls, ServesTheGraphApiOverHttps) {
  auto pki = bridge::testing::MakeTestPki();
  ASSERT_TRUE(pki.ok()) << pki.status();
  SimOptions o;
  o.access_token = kToken;
  o.tls_cert = pki->server_cert;
  o.tls_key = pki->server_key;
  auto sim = WhatsAppSim::Start(o);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(absl::StartsWith((*sim)->base_url(), "https://"));
  httplib::Client c((*sim)->base_url());
  c.enable_server_certificate_verification(false);
  auto r = c.Get(absl::StrCat("/v23.0/", kPhoneId),
                 {{"Authorization", absl::StrCat("Bearer ", kToken)}});
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
}

TEST(WhatsAppSimBinary, PrintsReadyServesThePhonePageAndStopsCleanly) {
  bridge::testing::ChildProcess sim(
      BRIDGE_WHATSAPP_SIM_BIN,
      {"--env_file=/nonexistent/.env", "--listen=127.0.0.1:0",
       absl::StrCat("--access_token=", kToken), absl::StrCat("--app_secret=", kAppSecret)});
  auto ready = sim.WaitReady();
  ASSERT_TRUE(ready.count("http")) << sim.Output();
  httplib::Client c(absl::StrCat("http://", ready["http"]));
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("<html"));
  auto denied = c.Get("/v23.0/123", {{"Authorization", "Bearer wrong"}});
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 401);
  sim.Signal(SIGTERM);
  auto code = sim.Wait();
  ASSERT_TRUE(code.has_value()) << sim.Output();
  EXPECT_EQ(*code, 0) << sim.Output();
  EXPECT_THAT(sim.Output(), Not(HasSubstr(kToken)));
  EXPECT_THAT(sim.Output(), Not(HasSubstr(kAppSecret)));
}

}  // namespace
}  // namespace bridge::whatsapp_sim

namespace bridge::whatsapp_sim {
namespace {

// The user calls: returns the call id.
std::string PlaceCall(httplib::Client& cli) {
  auto r = cli.Post(absl::StrCat("/sim/users/", kUser, "/call").c_str(),
                    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "application/sdp");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "");
  return r ? json::parse(r->body, nullptr, false).value("call_id", "") : "";
}

// The business's POST /calls with `action` (+ an SDP answer when given);
// returns {status, body}.
std::pair<int, json> CallAction(httplib::Client& cli, const std::string& call_id,
                                const std::string& action, bool with_answer = true) {
  json body = {{"messaging_product", "whatsapp"}, {"call_id", call_id}, {"action", action}};
  if (with_answer) body["session"] = {{"sdp_type", "answer"}, {"sdp", "v=0\r\n"}};
  auto a = cli.Post(absl::StrCat("/v23.0/", kPhoneId, "/calls"),
                    {{"Authorization", absl::StrCat("Bearer ", kToken)}}, body.dump(),
                    "application/json");
  return {a ? a->status : -1, a ? json::parse(a->body, nullptr, false) : json()};
}

// A `calls` terminate webhook: value.calls[0] (event "terminate").
bool IsCallEnd(const FakeGateway::Post& p) {
  if (!p.parsed.is_object()) return false;
  const json& v = p.parsed["entry"][0]["changes"][0]["value"];
  return v.contains("calls") && v["calls"][0].value("event", "") == "terminate";
}
json CallOf(const FakeGateway::Post& p) {
  return p.parsed["entry"][0]["changes"][0]["value"]["calls"][0];
}

// Calls (PROTOCOLS.md A6): the business's actions are validated as Meta does,
// and an ended call takes none; its terminate webhook comes after the 200.
TEST_F(WhatsAppSimTest, CallActionsAreValidatedAndAnEndedCallTakesNone) {
  auto cli = Client();
  const std::string call = PlaceCall(*cli);
  auto [s1, b1] = CallAction(*cli, call, "accept", /*with_answer=*/false);
  EXPECT_EQ(s1, 400) << "accept needs the SDP answer";
  ExpectGraphError(b1, 100);
  auto [s2, b2] = CallAction(*cli, call, "pre_accept");
  EXPECT_EQ(s2, 200) << b2;
  auto h = cli->Post(absl::StrCat("/sim/users/", kUser, "/hangup?call_id=", call).c_str(), "",
                     "text/plain");
  ASSERT_TRUE(h && h->status == 200);
  auto [s3, b3] = CallAction(*cli, call, "accept");
  EXPECT_EQ(s3, 400) << "the caller hung up: " << b3;
  EXPECT_THAT(b3.dump(), ::testing::HasSubstr("has ended"));
  auto again = cli->Post(absl::StrCat("/sim/users/", kUser, "/hangup?call_id=", call).c_str(), "",
                         "text/plain");
  EXPECT_EQ(again ? again->status : -1, 409) << "one hang-up per call";
}

// Meta fails a call the business has not accepted within about 30-60 s
// (PROTOCOLS.md A6): a FAILED terminate webhook, and a late accept is refused.
// A call accepted in time lives on.
TEST_F(WhatsAppSimTest, ACallNotAcceptedInTimeFailsAndALateAcceptIsRefused) {
  auto cli = Client();
  const std::string late = PlaceCall(*cli), taken = PlaceCall(*cli);
  EXPECT_EQ(CallAction(*cli, late, "pre_accept").first, 200);
  EXPECT_EQ(CallAction(*cli, taken, "pre_accept").first, 200);
  EXPECT_EQ(CallAction(*cli, taken, "accept").first, 200);
  int clock_status = 0;
  PostJson("/sim/clock", R"({"advance_s":31})", &clock_status);
  ASSERT_EQ(clock_status, 200);
  std::vector<FakeGateway::Post> ends = gateway_.Wait(1, IsCallEnd);
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(CallOf(ends[0]).value("id", ""), late);
  EXPECT_EQ(CallOf(ends[0]).value("status", ""), "FAILED");
  auto [status, body] = CallAction(*cli, late, "accept");
  EXPECT_EQ(status, 400) << "accepted too late: " << body;
  EXPECT_THAT(body.dump(), ::testing::HasSubstr("has ended"));
  EXPECT_EQ(CallAction(*cli, taken, "terminate", /*with_answer=*/false).first, 200)
      << "the accepted call was not failed";
  ends = gateway_.Wait(2, IsCallEnd);
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_EQ(CallOf(ends[1]).value("id", ""), taken);
  EXPECT_EQ(CallOf(ends[1]).value("status", ""), "COMPLETED");
}

}  // namespace
}  // namespace bridge::whatsapp_sim
