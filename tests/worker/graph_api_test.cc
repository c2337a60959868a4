// GraphApi against whatsapp-sim over real sockets: media upload, resolve and
// streamed download (webhook URLs, expired URLs, digests, limits, sink
// errors), text and voice-note sends, read + typing, and the PROTOCOLS.md A5
// error policy under the simulator's faults (throughput, pair rate limit,
// 5xx, bad token, closed window), TLS verification and concurrent use. The
// simulator runs in-process on port 0. Retries are observed through
// GraphApiOptions::on_retry and the simulator's records, never the clock.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "graph_api_policy.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "media_worker/graph_api.h"
#include "test_pki.h"
#include "nlohmann/json.hpp"
#include "whatsapp_sim/whatsapp_sim.h"

namespace bridge::media_worker {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using whatsapp_sim::SimOptions;
using whatsapp_sim::WhatsAppSim;

constexpr char kToken[] = "EAAG-graph-api-test-token-0123456789";
constexpr char kPhoneId[] = "106540352242922";  // the simulator's default number
constexpr char kUser[] = "16505551234";
constexpr int kWaitMs = 30000;  // hang guard for long-polls, not a timing assertion

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string VoiceNote() {
  return ReadFile(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/voice_note_hello.ogg"));
}

// Computed here, independently of the client and the simulator.
std::string Sha256B64(absl::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(md), len));
}

// Collects what DownloadMedia streams.
struct Collector {
  std::string bytes;
  int chunks = 0;
  std::function<absl::Status(absl::string_view)> Sink() {
    return [this](absl::string_view chunk) {
      bytes.append(chunk.data(), chunk.size());
      ++chunks;
      return absl::OkStatus();
    };
  }
};

struct RetrySeen {
  GraphError error;
  int attempt;
  absl::Duration delay;
};

class GraphApiTest : public ::testing::Test {
 protected:
  void SetUp() override { StartSim(SimOptions{}); }

  void StartSim(SimOptions o) {
    o.access_token = kToken;
    auto sim = WhatsAppSim::Start(o);
    ASSERT_TRUE(sim.ok()) << sim.status();
    sim_ = *std::move(sim);
    control_ = std::make_unique<httplib::Client>(sim_->base_url());
    control_->enable_server_certificate_verification(false);
    control_->set_read_timeout(60, 0);
    control_->set_tcp_nodelay(true);
  }

  // Fast backoff; every retry is recorded (and may run a hook).
  GraphApiOptions Options() {
    GraphApiOptions o;
    o.base_url = sim_->base_url();
    o.access_token = kToken;
    o.initial_backoff = absl::Milliseconds(1);
    o.max_backoff = absl::Milliseconds(20);
    o.on_retry = [this](const GraphError& e, int attempt, absl::Duration delay) {
      std::function<void()> hook;
      {
        absl::MutexLock lock(&mu_);
        retries_.push_back({e, attempt, delay});
        hook = retry_hook_;
      }
      if (hook) hook();
    };
    return o;
  }

  std::vector<RetrySeen> Retries() {
    absl::MutexLock lock(&mu_);
    return retries_;
  }

  void SetRetryHook(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    retry_hook_ = std::move(hook);
  }

  json SimCall(const std::string& method, const std::string& path, const std::string& body = "",
               const std::string& content_type = "application/json") {
    httplib::Result r = method == "GET"      ? control_->Get(path)
                        : method == "DELETE" ? control_->Delete(path)
                                             : control_->Post(path, body, content_type);
    EXPECT_TRUE(r) << method << " " << path << ": " << httplib::to_string(r.error());
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << method << " " << path << ": " << r->body;
    return json::parse(r->body, nullptr, false);
  }

  void Fault(const std::string& spec) { SimCall("POST", "/sim/faults", spec); }

  // Media a user "sent": registered on the simulator under `id`.
  std::string RegisterMedia(const std::string& id, const std::string& bytes) {
    json r = SimCall("POST", absl::StrCat("/sim/media?id=", id, "&mime=audio/ogg"), bytes,
                     "application/octet-stream");
    return r.value("id", "");
  }

  json Outbox(const std::string& wa_id, int min_count) {
    return SimCall("GET", absl::StrCat("/sim/users/", wa_id, "/outbox?min_count=", min_count,
                                       "&wait_ms=", kWaitMs));
  }

  std::unique_ptr<WhatsAppSim> sim_;
  std::unique_ptr<httplib::Client> control_;
  absl::Mutex mu_;
  std::vector<RetrySeen> retries_ ABSL_GUARDED_BY(mu_);
  std::function<void()> retry_hook_ ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------------ media

TEST_F(GraphApiTest, UploadResolveAndStreamedDownloadRoundTrip) {
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  ASSERT_GT(note.size(), 4096u);  // more than one chunk
  auto id = api->UploadMedia(kPhoneId, note, "audio/ogg", "hello.ogg");
  ASSERT_TRUE(id.ok()) << id.status();
  auto info = api->ResolveMedia(*id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, *id);
  EXPECT_EQ(info->mime_type, "audio/ogg");
  EXPECT_EQ(info->sha256_b64, Sha256B64(note));
  EXPECT_EQ(info->file_size, static_cast<int64_t>(note.size()));
  EXPECT_THAT(info->url, StartsWith(sim_->base_url()));

  Collector got;
  absl::Status s = api->DownloadMedia(*id, "", Sha256B64(note), got.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);
  EXPECT_GT(got.chunks, 1);  // handed over as it arrived, not in one piece

  // No digest from the webhook: the one the resolve gave is checked.
  Collector again;
  s = api->DownloadMedia(*id, "", "", again.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(again.bytes, note);
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, DownloadUsesTheWebhookUrlWithoutResolving) {
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  const std::string id = RegisterMedia("730111222333444", note);
  auto info = api->ResolveMedia(id);
  ASSERT_TRUE(info.ok()) << info.status();
  // A media id that does not resolve: success proves the URL was used as is.
  Collector got;
  absl::Status s = api->DownloadMedia("999000999000999", info->url, Sha256B64(note), got.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);
}

// A webhook naming another host (signed by anyone who holds the app secret,
// or forged where the webhook is not checked) must not collect the token:
// the URL is ignored and the media resolved by its id.
TEST_F(GraphApiTest, AForeignMediaUrlNeverSeesTheToken) {
  httplib::Server foreign;
  absl::Mutex mu;
  std::vector<std::string> authorizations;
  int requests = 0;
  foreign.Get(".*", [&](const httplib::Request& req, httplib::Response& res) {
    absl::MutexLock l(&mu);
    ++requests;
    authorizations.push_back(req.get_header_value("Authorization"));
    res.set_content("not audio", "audio/ogg");
  });
  const int port = foreign.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { foreign.listen_after_bind(); });
  while (!foreign.is_running()) std::this_thread::yield();  // accepting: stop() ends it
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  const std::string id = RegisterMedia("730111222333445", note);
  Collector got;
  absl::Status s = api->DownloadMedia(
      id, absl::StrCat("http://127.0.0.1:", port, "/v1/media?token=x"), Sha256B64(note),
      got.Sink());
  foreign.stop();
  serving.join();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);  // resolved by its id instead
  absl::MutexLock l(&mu);
  EXPECT_EQ(requests, 0);
  for (const auto& a : authorizations) EXPECT_THAT(a, Not(HasSubstr(kToken)));
}

TEST(TokenScopeTest, OnlyTheGraphHostAndMetaMediaHostsOverTls) {
  using graph_internal::TokenMayGoTo;
  const std::vector<std::string> meta = GraphApiOptions().media_hosts;
  const std::string graph = "https://graph.facebook.com";
  EXPECT_TRUE(TokenMayGoTo("https://graph.facebook.com/v23.0/123", graph, meta));
  EXPECT_TRUE(TokenMayGoTo("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
                           graph, meta));
  EXPECT_TRUE(TokenMayGoTo("https://MMG.WhatsApp.NET/v/t62", graph, meta));
  EXPECT_FALSE(TokenMayGoTo("http://lookaside.fbsbx.com/x", graph, meta));  // no TLS
  EXPECT_FALSE(TokenMayGoTo("https://fbsbx.com.evil.example/x", graph, meta));
  EXPECT_FALSE(TokenMayGoTo("https://evilfbsbx.com/x", graph, meta));
  EXPECT_FALSE(TokenMayGoTo("https://graph.facebook.com.evil.example/x", graph, meta));
  EXPECT_FALSE(TokenMayGoTo("https://user@evil.example/x", graph, meta));
  EXPECT_FALSE(TokenMayGoTo("", graph, meta));
  EXPECT_TRUE(TokenMayGoTo("http://127.0.0.1:8080/v23.0/1", "http://127.0.0.1:8080", meta));
  EXPECT_FALSE(TokenMayGoTo("http://127.0.0.1:8081/v23.0/1", "http://127.0.0.1:8080", meta));
}

TEST_F(GraphApiTest, ExpiredUrlIsResolvedAgainTransparently) {
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  const std::string id = RegisterMedia("730111222333445", note);
  auto info = api->ResolveMedia(id);
  ASSERT_TRUE(info.ok()) << info.status();
  SimCall("POST", "/sim/clock", R"({"advance_s":301})");
  {  // The old URL is dead now.
    httplib::Client c(sim_->base_url());
    auto parts = graph_internal::SplitUrl(info->url);
    ASSERT_TRUE(parts.ok());
    auto r = c.Get(parts->path_and_query, {{"Authorization", absl::StrCat("Bearer ", kToken)}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
  }
  Collector got;
  absl::Status s = api->DownloadMedia(id, info->url, Sha256B64(note), got.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);  // exactly once: nothing from the 404 reached the sink
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, UnknownMediaIsNotFoundWithItsGraphCode) {
  auto api = NewGraphApi(Options());
  Collector got;
  absl::Status s = api->DownloadMedia("123456789012345", "", "", got.Sink());
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  std::optional<GraphError> e = GraphErrorOf(s);
  ASSERT_TRUE(e.has_value()) << s;
  EXPECT_EQ(e->code, 100);
  EXPECT_EQ(e->subcode, 33);
  EXPECT_FALSE(e->retryable);
  EXPECT_TRUE(got.bytes.empty());
  EXPECT_TRUE(absl::IsInvalidArgument(api->ResolveMedia("../../me").status()));
}

TEST_F(GraphApiTest, WrongSha256IsDataLoss) {
  auto api = NewGraphApi(Options());
  const std::string id = RegisterMedia("730111222333446", VoiceNote());
  Collector got;
  absl::Status s = api->DownloadMedia(id, "", Sha256B64("something else"), got.Sink());
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("sha256"));
}

TEST_F(GraphApiTest, MediaOverTheSizeLimitIsRefusedBeforeTheSink) {
  GraphApiOptions o = Options();
  o.max_media_bytes = 1000;
  auto api = NewGraphApi(o);
  const std::string id = RegisterMedia("730111222333447", VoiceNote());
  Collector got;
  absl::Status s = api->DownloadMedia(id, "", "", got.Sink());
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("1000"));
  EXPECT_TRUE(got.bytes.empty());  // Content-Length said so up front
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, SinkErrorAbortsTheDownloadAndComesBackUnchanged) {
  auto api = NewGraphApi(Options());
  const std::string id = RegisterMedia("730111222333448", VoiceNote());
  int calls = 0;
  const absl::Status refusal = absl::CancelledError("decoder: not an Ogg stream");
  absl::Status s = api->DownloadMedia(id, "", "", [&](absl::string_view) {
    ++calls;
    return refusal;
  });
  EXPECT_EQ(s, refusal);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, MediaServerErrorsAreRetried) {
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  const std::string id = RegisterMedia("730111222333449", note);
  Fault(R"({"media_status":500,"count":2})");
  Collector got;
  absl::Status s = api->DownloadMedia(id, "", Sha256B64(note), got.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);
  std::vector<RetrySeen> r = Retries();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].error.code, 131000);
  EXPECT_EQ(r[0].error.http_status, 500);
  EXPECT_EQ(r[1].attempt, 2);
  EXPECT_EQ(r[1].delay, absl::Milliseconds(2));  // initial_backoff doubled
  EXPECT_TRUE(SimCall("GET", "/sim/faults")["media"].is_null());  // both faults used up

  // The same on the download URL itself: nothing reached the sink yet.
  auto info = api->ResolveMedia(id);
  ASSERT_TRUE(info.ok()) << info.status();
  Fault(R"({"media_status":503,"count":2})");
  Collector direct;
  s = api->DownloadMedia(id, info->url, Sha256B64(note), direct.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(direct.bytes, note);
  EXPECT_EQ(Retries().size(), 4u);
  EXPECT_EQ(Retries()[3].error.code, 2);
  EXPECT_TRUE(SimCall("GET", "/sim/faults")["media"].is_null());
}

TEST_F(GraphApiTest, UploadServerErrorIsRetried) {
  auto api = NewGraphApi(Options());
  Fault(R"({"upload_status":500,"count":1})");
  auto id = api->UploadMedia(kPhoneId, VoiceNote(), "audio/ogg", "reply.ogg");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(Retries().size(), 1u);
  auto stored = control_->Get(absl::StrCat("/sim/media/", *id));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->body, VoiceNote());
}

// A Graph API slower than our read timeout: the message was sent and may be
// delivered, so it is not sent again (issue #10: one message, three replies);
// reads are still retried.
TEST_F(GraphApiTest, AMessageThatTimesOutIsNotSentTwice) {
  GraphApiOptions o = Options();
  o.request_timeout = absl::Milliseconds(300);
  auto api = NewGraphApi(o);
  Fault(R"({"latency_ms":1000})");
  auto wamid = api->SendText(kPhoneId, {kUser}, "only once", "");
  ASSERT_FALSE(wamid.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(wamid.status())) << wamid.status();
  std::optional<GraphError> e = GraphErrorOf(wamid.status());
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->maybe_sent);
  EXPECT_TRUE(Retries().empty());
  json out = Outbox(kUser, 1);  // the sim carried it out after its latency
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["text"], "only once");
  auto info = api->ResolveMedia("730111222333450");  // a read: retried, then given up
  EXPECT_FALSE(info.ok());
  EXPECT_FALSE(Retries().empty());
}

TEST_F(GraphApiTest, RetriesRunOutAsUnavailableOrResourceExhausted) {
  GraphApiOptions o = Options();
  o.max_attempts = 3;
  auto api = NewGraphApi(o);
  Fault(R"({"media_status":503})");  // until cleared
  auto info = api->ResolveMedia("730111222333450");
  EXPECT_TRUE(absl::IsUnavailable(info.status())) << info.status();
  std::optional<GraphError> e = GraphErrorOf(info.status());
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, 2);
  EXPECT_TRUE(e->retryable);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("3 attempts"));
  EXPECT_EQ(Retries().size(), 2u);

  Fault(R"({"messages_status":429})");
  auto sent = api->SendText(kPhoneId, {kUser}, "hi", "");
  EXPECT_TRUE(absl::IsResourceExhausted(sent.status())) << sent.status();
  EXPECT_EQ(GraphErrorOf(sent.status())->code, 130429);
  EXPECT_EQ(Retries().size(), 4u);
}

// ------------------------------------------------------------------ sending

TEST_F(GraphApiTest, SendTextAsAReply) {
  auto api = NewGraphApi(Options());
  auto wamid = api->SendText(kPhoneId, {kUser}, "Hello there \xF0\x9F\x91\x8B", "wamid.IN-1");
  ASSERT_TRUE(wamid.ok()) << wamid.status();
  EXPECT_THAT(*wamid, StartsWith("wamid."));
  json out = Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump();
  EXPECT_EQ(out[0]["id"], *wamid);
  EXPECT_EQ(out[0]["type"], "text");
  EXPECT_EQ(out[0]["text"], "Hello there \xF0\x9F\x91\x8B");
  EXPECT_EQ(out[0]["context_message_id"], "wamid.IN-1");
}

TEST_F(GraphApiTest, TooLongTextIsABadRequestAndNotRetried) {
  auto api = NewGraphApi(Options());
  auto wamid = api->SendText(kPhoneId, {kUser}, std::string(4097, 'a'), "");
  EXPECT_TRUE(absl::IsInvalidArgument(wamid.status())) << wamid.status();
  std::optional<GraphError> e = GraphErrorOf(wamid.status());
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, 100);
  EXPECT_EQ(e->http_status, 400);
  EXPECT_FALSE(e->retryable);
  EXPECT_THAT(std::string(wamid.status().message()), HasSubstr("graph error 100"));
  EXPECT_THAT(std::string(wamid.status().message()), HasSubstr("4096"));
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, SendVoiceNoteAsAReply) {
  auto api = NewGraphApi(Options());
  auto media = api->UploadMedia(kPhoneId, VoiceNote(), "audio/ogg", "reply.ogg");
  ASSERT_TRUE(media.ok()) << media.status();
  auto wamid = api->SendVoiceNote(kPhoneId, {kUser}, *media, "wamid.IN-2");
  ASSERT_TRUE(wamid.ok()) << wamid.status();
  json out = Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump();
  EXPECT_EQ(out[0]["id"], *wamid);
  EXPECT_EQ(out[0]["type"], "audio");
  EXPECT_EQ(out[0]["voice"], true);
  EXPECT_EQ(out[0]["media_id"], *media);
  EXPECT_EQ(out[0]["context_message_id"], "wamid.IN-2");
}

TEST_F(GraphApiTest, MarkReadShowsTheTypingIndicator) {
  auto api = NewGraphApi(Options());
  absl::Status s = api->MarkReadTyping(kPhoneId, "wamid.IN-3");
  ASSERT_TRUE(s.ok()) << s;
  json reads = SimCall("GET", absl::StrCat("/sim/reads?min_count=1&wait_ms=", kWaitMs));
  ASSERT_EQ(reads.size(), 1u) << reads.dump();
  EXPECT_EQ(reads[0]["message_id"], "wamid.IN-3");
  EXPECT_EQ(reads[0]["typing_indicator"], "text");
}

// A person holds the conversation: read, but nobody shown typing.
TEST_F(GraphApiTest, MarkReadAloneShowsNoTypingIndicator) {
  auto api = NewGraphApi(Options());
  absl::Status s = api->MarkRead(kPhoneId, "wamid.IN-4");
  ASSERT_TRUE(s.ok()) << s;
  json reads = SimCall("GET", absl::StrCat("/sim/reads?min_count=1&wait_ms=", kWaitMs));
  ASSERT_EQ(reads.size(), 1u) << reads.dump();
  EXPECT_EQ(reads[0]["message_id"], "wamid.IN-4");
  EXPECT_TRUE(reads[0]["typing_indicator"].is_null()) << reads.dump();
}

TEST_F(GraphApiTest, ThrottlingIsRetriedHonouringRetryAfter) {
  GraphApiOptions o = Options();
  o.max_backoff = absl::Seconds(1);  // room for the 1 s Retry-After, no more
  auto api = NewGraphApi(o);
  Fault(R"({"messages_status":429,"retry_after_s":1,"count":2})");
  auto wamid = api->SendText(kPhoneId, {kUser}, "third time lucky", "");
  ASSERT_TRUE(wamid.ok()) << wamid.status();
  std::vector<RetrySeen> r = Retries();
  ASSERT_EQ(r.size(), 2u);  // succeeded on the third attempt
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r[i].error.code, 130429);
    EXPECT_EQ(r[i].attempt, i + 1);
    EXPECT_EQ(r[i].delay, absl::Seconds(1));  // Retry-After beats the 1-2 ms backoff
  }
  EXPECT_TRUE(SimCall("GET", "/sim/faults")["messages"].is_null());
  json out = Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["id"], *wamid);
}

TEST_F(GraphApiTest, PairRateLimitIsRetriedWithCappedBackoff) {
  auto api = NewGraphApi(Options());
  Fault(R"({"pair_rate_limit":true})");
  ASSERT_TRUE(api->SendText(kPhoneId, {kUser}, "first", "").ok());
  // The simulated 6 s pass while the client backs off, without waiting them.
  SetRetryHook([this] { SimCall("POST", "/sim/clock", R"({"advance_s":7})"); });
  auto second = api->SendText(kPhoneId, {kUser}, "second", "");
  ASSERT_TRUE(second.ok()) << second.status();
  std::vector<RetrySeen> r = Retries();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error.code, 131056);
  EXPECT_TRUE(r[0].error.retryable);
  EXPECT_EQ(r[0].delay, absl::Milliseconds(20));  // 4 s, capped by max_backoff
  EXPECT_EQ(Outbox(kUser, 2).size(), 2u);
}

TEST_F(GraphApiTest, ClosedWindowIsPermanent) {
  auto api = NewGraphApi(Options());
  Fault(R"({"service_window":true})");
  auto wamid = api->SendText(kPhoneId, {kUser}, "anyone there?", "");
  EXPECT_TRUE(absl::IsFailedPrecondition(wamid.status())) << wamid.status();
  EXPECT_THAT(std::string(wamid.status().message()),
              HasSubstr("graph error 131047: Re-engagement message"));
  EXPECT_EQ(GraphErrorOf(wamid.status())->code, 131047);
  EXPECT_TRUE(Retries().empty());
}

TEST_F(GraphApiTest, BadTokenIsUnauthenticatedAndNeverEchoed) {
  const std::string wrong = "EAAG-wrong-token-9876543210-zyx";
  GraphApiOptions o = Options();
  o.access_token = wrong;
  auto api = NewGraphApi(o);
  auto wamid = api->SendText(kPhoneId, {kUser}, "hi", "");
  EXPECT_TRUE(absl::IsUnauthenticated(wamid.status())) << wamid.status();
  std::optional<GraphError> e = GraphErrorOf(wamid.status());
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, 190);
  EXPECT_EQ(e->http_status, 401);
  EXPECT_FALSE(e->retryable);
  EXPECT_THAT(wamid.status().ToString(), Not(HasSubstr(wrong)));
  EXPECT_THAT(wamid.status().ToString(), Not(HasSubstr(kToken)));
  EXPECT_THAT(e->message, Not(HasSubstr(wrong)));
  EXPECT_TRUE(Retries().empty());
  Collector got;
  absl::Status s = api->DownloadMedia("730111222333451", "", "", got.Sink());
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
}

TEST_F(GraphApiTest, RefusedConnectionsAreRetriedThenUnavailable) {
  std::string dead;
  {
    auto other = WhatsAppSim::Start(SimOptions{});
    ASSERT_TRUE(other.ok()) << other.status();
    dead = (*other)->base_url();
  }  // stopped: its port now refuses
  GraphApiOptions o = Options();
  o.base_url = dead;
  o.max_attempts = 2;
  auto api = NewGraphApi(o);
  auto wamid = api->SendText(kPhoneId, {kUser}, "hi", "");
  EXPECT_TRUE(absl::IsUnavailable(wamid.status())) << wamid.status();
  EXPECT_FALSE(GraphErrorOf(wamid.status()).has_value());
  std::vector<RetrySeen> r = Retries();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error.http_status, 0);
}

TEST_F(GraphApiTest, ConcurrentCallsFromManyThreads) {
  auto api = NewGraphApi(Options());
  const std::string note = VoiceNote();
  const std::string id = RegisterMedia("730111222333452", note);
  constexpr int kThreads = 8, kEach = 4;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string user = absl::StrCat("1650555100", t);
      for (int i = 0; i < kEach; ++i) {
        if (!api->SendText(kPhoneId, {user}, absl::StrCat("msg ", i), "").ok()) ++failures;
        Collector got;
        if (!api->DownloadMedia(id, "", Sha256B64(note), got.Sink()).ok() || got.bytes != note) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(Outbox(absl::StrCat("1650555100", t), kEach).size(), static_cast<size_t>(kEach));
  }
}

// ------------------------------------------------------------------ TLS

class GraphApiTlsTest : public GraphApiTest {
 protected:
  void SetUp() override {
    auto pki = bridge::testing::MakeTestPki("IP:127.0.0.1");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
    SimOptions o;
    o.tls_cert = pki_.server_cert;
    o.tls_key = pki_.server_key;
    StartSim(o);
  }
  bridge::testing::TestPki pki_;
};

TEST_F(GraphApiTlsTest, VerifiesThePeerWithTheConfiguredCaFile) {
  ASSERT_THAT(sim_->base_url(), StartsWith("https://"));
  GraphApiOptions o = Options();
  o.ca_file = pki_.ca_cert;
  auto api = NewGraphApi(o);
  const std::string note = VoiceNote();
  auto id = api->UploadMedia(kPhoneId, note, "audio/ogg", "hello.ogg");
  ASSERT_TRUE(id.ok()) << id.status();
  Collector got;
  absl::Status s = api->DownloadMedia(*id, "", Sha256B64(note), got.Sink());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got.bytes, note);
}

TEST_F(GraphApiTlsTest, RefusesAnUntrustedCertificateWithoutRetrying) {
  auto api = NewGraphApi(Options());  // the system store does not know our cert
  auto info = api->ResolveMedia("730111222333453");
  EXPECT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("certificate"));
  EXPECT_TRUE(Retries().empty());
}

// ------------------------------------------------------------------ policy

TEST(GraphPolicyTest, BackoffDoublesHonoursRetryAfterAndIsCapped) {
  GraphApiOptions o;
  o.initial_backoff = absl::Milliseconds(500);
  o.max_backoff = absl::Seconds(30);
  using graph_internal::RetryDelay;
  EXPECT_EQ(RetryDelay(o, 1, 130429, std::nullopt), absl::Milliseconds(500));
  EXPECT_EQ(RetryDelay(o, 2, 130429, std::nullopt), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(o, 4, 0, std::nullopt), absl::Seconds(4));
  EXPECT_EQ(RetryDelay(o, 10, 0, std::nullopt), absl::Seconds(30));
  EXPECT_EQ(RetryDelay(o, 1, 130429, 7), absl::Seconds(7));
  EXPECT_EQ(RetryDelay(o, 1, 130429, 3600), absl::Seconds(30));
  EXPECT_EQ(RetryDelay(o, 1, 131056, std::nullopt), absl::Seconds(4));   // 4^1
  EXPECT_EQ(RetryDelay(o, 2, 131056, std::nullopt), absl::Seconds(16));  // 4^2
  EXPECT_EQ(RetryDelay(o, 3, 131056, std::nullopt), absl::Seconds(30));  // capped
}

TEST(GraphPolicyTest, DecidesOnTheGraphCodeNotTheHttpStatus) {
  using graph_internal::DecodeGraphError;
  using graph_internal::Reply;
  auto body = [](int code) {
    return absl::StrCat(R"({"error":{"message":"(#)", code,
                        R"() x","type":"OAuthException","code":)", code,
                        R"(,"fbtrace_id":"AbC"}})");
  };
  for (int code : {4, 80007, 130429, 131056, 131057, 131000, 131016, 1, 2}) {
    auto e = DecodeGraphError(400, body(code));
    ASSERT_TRUE(e.has_value());
    EXPECT_TRUE(graph_internal::ShouldRetry(Reply{400}, e)) << code;
  }
  for (int code : {131047, 131026, 131049, 100, 131008, 131009, 368, 131031, 190}) {
    auto e = DecodeGraphError(500, body(code));  // even as a 5xx
    ASSERT_TRUE(e.has_value());
    EXPECT_FALSE(graph_internal::ShouldRetry(Reply{500}, e)) << code;
  }
  EXPECT_TRUE(graph_internal::ShouldRetry(Reply{429}, std::nullopt));  // 429 without a body
  EXPECT_TRUE(graph_internal::ShouldRetry(Reply{429}, DecodeGraphError(429, body(80008))));
  EXPECT_FALSE(graph_internal::ShouldRetry(Reply{400}, DecodeGraphError(400, body(80008))));
  EXPECT_TRUE(graph_internal::ShouldRetry(Reply{502, "<html>"}, std::nullopt));
  EXPECT_FALSE(graph_internal::ShouldRetry(Reply{404, "Not Found"}, std::nullopt));
  auto e = DecodeGraphError(400, body(131047));
  EXPECT_EQ(e->error.message, "x");  // "(#131047) " is not repeated
  absl::Status s = graph_internal::FailureStatus("POST /v23.0/1/messages", Reply{400}, e, 1, false);
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(std::string(s.message()), StartsWith("graph error 131047: x ["));
  EXPECT_THAT(std::string(s.message()), HasSubstr("fbtrace_id AbC"));
}

// Found by tests/fuzz/fuzz_graph_response: a float code past int64 was cast
// (undefined behaviour), and a code past int wrapped around to a real one.
TEST(GraphPolicyTest, CodesThatFitNoIntAreNoCodes) {
  using graph_internal::DecodeGraphError;
  auto code_of = [](const std::string& code) {
    auto e = DecodeGraphError(400, absl::StrCat(R"({"error":{"message":"m","code":)", code,
                                                R"(,"error_subcode":)", code, "}}"));
    EXPECT_TRUE(e.has_value()) << code;
    return e ? std::make_pair(e->error.code, e->error.subcode) : std::make_pair(-1, -1);
  };
  EXPECT_EQ(code_of("190"), std::make_pair(190, 190));
  EXPECT_EQ(code_of("190.0"), std::make_pair(190, 190));
  EXPECT_EQ(code_of("1.31e49"), std::make_pair(0, 0));
  EXPECT_EQ(code_of("-1e300"), std::make_pair(0, 0));
  EXPECT_EQ(code_of("4294967486"), std::make_pair(0, 0));  // 2^32 + 190
  EXPECT_EQ(code_of("\"4294967486\""), std::make_pair(0, 0));
}

TEST(GraphPolicyTest, MediaInfoTakesFileSizeAsNumberOrString) {
  auto a = graph_internal::ParseMediaInfo(R"({"url":"https://x/y?z=1","mime_type":"audio/ogg",)"
                                          R"("sha256":"s","file_size":"1234","id":"9"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->file_size, 1234);
  auto b = graph_internal::ParseMediaInfo(R"({"url":"https://x/y","file_size":77,"id":"9"})");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->file_size, 77);
  EXPECT_FALSE(graph_internal::ParseMediaInfo(R"({"id":"9"})").ok());
}

TEST(GraphPolicyTest, UrlsSplitAndLoseTheirQueryWhenMentioned) {
  auto u = graph_internal::SplitUrl("https://lookaside.fbsbx.com:8443/wa/x?mid=1&hash=SECRET#f");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->origin, "https://lookaside.fbsbx.com:8443");
  EXPECT_EQ(u->path_and_query, "/wa/x?mid=1&hash=SECRET");
  EXPECT_EQ(u->path, "/wa/x");
  EXPECT_EQ(graph_internal::StripQuery("http://h/p?hash=SECRET"), "http://h/p");
  EXPECT_FALSE(graph_internal::SplitUrl("ftp://h/p").ok());
  EXPECT_FALSE(graph_internal::SplitUrl("https://user@h/p").ok());
  EXPECT_THAT(std::string(graph_internal::SplitUrl("file:///x?hash=SECRET").status().message()),
              Not(HasSubstr("SECRET")));
}

}  // namespace
}  // namespace bridge::media_worker
