// The webhook edge through the real gateway and controller binaries: a signed
// webhook becomes a durable, deduplicated session turn visible over the
// Sessions API; every kind of bad input gets its own clear answer and
// changes nothing; a controller outage is a 503 (WhatsApp retries), and a
// controller restart keeps what was acknowledged.
#include <signal.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "child_process.h"
#include "fresh_dir.h"
#include "grpc_probe.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "common/hub_signature.h"
#include "httplib.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

// ASan (g++ says __SANITIZE_ADDRESS__, clang __has_feature).
#if defined(__SANITIZE_ADDRESS__)
#define BRIDGE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRIDGE_UNDER_ASAN 1
#endif
#endif

namespace bridge::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::bridge::v1;

constexpr char kSecret[] = "fixture-app-secret";

std::string Fixture(const std::string& name) {
  std::ifstream in(absl::StrCat(BRIDGE_FIXTURES_DIR, "/webhooks/", name), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string SignatureOf(const std::string& name) {
  for (absl::string_view line : absl::StrSplit(Fixture("signatures.tsv"), '\n')) {
    std::vector<std::string> cols = absl::StrSplit(line, '\t');
    if (cols.size() == 2 && cols[0] == name) return cols[1];
  }
  return "";
}

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = absl::StrCat(FreshDir("ingest"), "/controller.db");
    StartController("127.0.0.1:0");
    gateway_ = std::make_unique<ChildProcess>(
        BRIDGE_GATEWAY_BIN,
        std::vector<std::string>{"--env_file=/nonexistent", "--listen=127.0.0.1:0",
                                 absl::StrCat("--controller=", controller_addr_),
                                 "--max_body_bytes=262144", "--ingest_deadline=60s"},
        std::map<std::string, std::string>{{"WEBHOOK_SIGNATURE_SECRET", kSecret}});
    auto ready = gateway_->WaitReady();
    ASSERT_TRUE(ready.count("http")) << gateway_->Output();
    http_ = ready["http"];
    AwaitGatewayReady();  // connected: the first webhook is not a fast 503
  }

  void StartController(const std::string& listen) {
    controller_ = std::make_unique<ChildProcess>(
        BRIDGE_CONTROLLER_BIN,
        std::vector<std::string>{"--env_file=/nonexistent", absl::StrCat("--listen=", listen),
                                 "--metrics_listen=127.0.0.1:0",
                                 // The fixtures carry Meta's timestamps from 2025.
                                 "--max_message_age=87600h",
                                 absl::StrCat("--store=sqlite:", db_)});
    auto ready = controller_->WaitReady();
    ASSERT_TRUE(ready.count("grpc")) << controller_->Output();
    controller_addr_ = ready["grpc"];
  }

  // The gateway has reconnected to the controller (its /readyz says so): a
  // webhook now waits for the durable ack instead of a fast 503.
  void AwaitGatewayReady() {
    httplib::Client cli(absl::StrCat("http://", http_));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);  // a hang guard
    while (absl::Now() < deadline) {
      auto r = cli.Get("/readyz");
      if (r && r->status == 200) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "the gateway never became ready";
  }

  void StopController() {
    controller_->Signal(SIGTERM);
    ASSERT_EQ(controller_->Wait().value_or(-1), 0);
  }

  httplib::Result Post(const std::string& body, const std::string& signature) {
    httplib::Client cli(absl::StrCat("http://", http_));
    cli.set_read_timeout(30);
    httplib::Headers h;
    if (!signature.empty()) h.emplace("X-Hub-Signature-256", signature);
    return cli.Post("/webhook/whatsapp", h, body, "application/json");
  }
  int PostFixture(const std::string& name) {
    auto r = Post(Fixture(name), SignatureOf(name));
    return r ? r->status : -1;
  }

  std::vector<v1::Session> Sessions() {
    auto sessions = ListSessions(controller_addr_);
    EXPECT_TRUE(sessions.ok()) << sessions.status();
    return sessions.ok() ? *sessions : std::vector<v1::Session>();
  }

  std::string Metrics() {
    httplib::Client cli(absl::StrCat("http://", http_));
    auto r = cli.Get("/metrics");
    return r ? r->body : "";
  }

  std::string db_, http_, controller_addr_;
  std::unique_ptr<ChildProcess> controller_, gateway_;
};

TEST_F(IngestTest, SignedWebhookBecomesOneDurableDeduplicatedTurn) {
  EXPECT_EQ(PostFixture("text.json"), 200);
  EXPECT_EQ(PostFixture("text.json"), 200);  // Meta's retry: acknowledged, not queued again
  auto sessions = Sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].phone_number_id(), "106540352242922");
  EXPECT_EQ(sessions[0].turns_pending(), 1);
  EXPECT_THAT(sessions[0].wa_id(), HasSubstr("****"));
  EXPECT_EQ(sessions[0].state(), v1::SESSION_STATE_PENDING);  // no worker yet

  StopController();  // a restart keeps what was acknowledged
  StartController(controller_addr_);
  AwaitGatewayReady();
  sessions = Sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].turns_pending(), 1);
  EXPECT_EQ(PostFixture("text.json"), 200);
  EXPECT_EQ(Sessions()[0].turns_pending(), 1);
}

TEST_F(IngestTest, BatchFromTwoBusinessNumbersGivesTwoSessions) {
  EXPECT_EQ(PostFixture("batch.json"), 200);
  auto sessions = Sessions();
  ASSERT_EQ(sessions.size(), 2u);
  int64_t pending = 0;
  for (const auto& s : sessions) pending += s.turns_pending();
  EXPECT_EQ(pending, 3);
  EXPECT_EQ(PostFixture("status_read.json"), 200);
  EXPECT_EQ(PostFixture("system_error.json"), 200);
  EXPECT_EQ(PostFixture("unsupported.json"), 200);
  EXPECT_THAT(Metrics(), HasSubstr("bridge_gateway_webhook_events_total{kind=\"status\"} 2"));
}

TEST_F(IngestTest, BadInputIsRefusedClearlyAndChangesNothing) {
  const std::string body = Fixture("text.json");
  auto r = Post(body, "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = Post(body, SignatureOf("voice_note.json"));  // a signature of other bytes
  EXPECT_EQ(r->status, 403);
  r = Post(body + " ", SignatureOf("text.json"));  // one byte changed
  EXPECT_EQ(r->status, 403);
  for (const char* name : {"malformed_not_json.json", "malformed_truncated.json",
                           "malformed_wrong_object.json"}) {
    r = Post(Fixture(name), SignatureOf(name));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << name;
  }
  // A webhook envelope with bad parts is acknowledged (Meta would retry it
  // for days); the parts are counted.
  for (const char* name : {"malformed_missing_changes.json", "malformed_wrong_types.json"}) {
    r = Post(Fixture(name), SignatureOf(name));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << name;
  }
  r = Post(std::string(300000, ' '), "sha256=00");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(Sessions().empty());
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("bridge_gateway_webhooks_total{outcome=\"bad_signature\"} 2"));
  EXPECT_THAT(m, HasSubstr("bridge_gateway_webhooks_total{outcome=\"missing_signature\"} 1"));
  EXPECT_THAT(m, HasSubstr("bridge_gateway_webhooks_total{outcome=\"malformed\"} 3"));
  EXPECT_THAT(m, HasSubstr("bridge_gateway_webhook_events_total{kind=\"malformed\"} 2"));
  EXPECT_THAT(m, HasSubstr("bridge_gateway_webhooks_total{outcome=\"too_large\"} 1"));
  EXPECT_THAT(gateway_->Output(), Not(HasSubstr(kSecret)));
  EXPECT_THAT(gateway_->Output(), Not(HasSubstr(SignatureOf("voice_note.json").substr(7))));
}

// The gateway's deadline is 60 s and the client gives up after 30: the 503
// comes at once because the controller is not connected, not at the deadline
// (each webhook waiting it out would pile up HTTP threads).
TEST_F(IngestTest, ControllerOutageIsA503SoWhatsAppRetries) {
  StopController();
  auto r = Post(Fixture("text.json"), SignatureOf("text.json"));
  ASSERT_TRUE(r) << "no answer before the client's timeout";
  EXPECT_EQ(r->status, 503);
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  StartController(controller_addr_);
  AwaitGatewayReady();
  EXPECT_EQ(PostFixture("text.json"), 200);
  EXPECT_EQ(Sessions().size(), 1u);
}

// A raw TCP connection to the gateway: what attackers and broken clients do
// that an HTTP client library will not.
class RawConnection {
 public:
  explicit RawConnection(const std::string& host_port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(host_port.substr(host_port.rfind(':') + 1))));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawConnection() { close(fd_); }
  bool connected() const { return connected_; }
  bool Send(absl::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // What the server answered before it closed (may be empty after a reset).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd_, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// Slow and idle clients (slowloris: headers that never end; connections
// that never say anything) do not keep a signed webhook from its answer:
// it is served while they are all open. The client gives up after 3 s, well
// inside the 5 s the gateway grants each stalled peer.
TEST_F(IngestTest, SlowAndIdleClientsDoNotHoldUpAWebhook) {
  // Each stalled client costs the gateway a thread made on demand. Under
  // ASan a thread costs ~10x more to make (its stack's shadow, fake stacks),
  // and 1200 of them took longer than the 3 s the test grants in about half
  // the runs. 300 still outnumber any fixed pool (httplib's own is 8-64).
#ifdef BRIDGE_UNDER_ASAN
  constexpr int kSlow = 100, kIdle = 200;
#else
  constexpr int kSlow = 200, kIdle = 1000;
#endif
  std::vector<std::unique_ptr<RawConnection>> attackers;
  for (int i = 0; i < kSlow; ++i) {
    attackers.push_back(std::make_unique<RawConnection>(http_));
    ASSERT_TRUE(attackers.back()->connected());
    ASSERT_TRUE(attackers.back()->Send("POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\nX-A: "));
  }
  for (int i = 0; i < kIdle; ++i) {
    attackers.push_back(std::make_unique<RawConnection>(http_));
    ASSERT_TRUE(attackers.back()->connected());
  }
  httplib::Client cli(absl::StrCat("http://", http_));
  cli.set_read_timeout(3);
  cli.set_connection_timeout(3);
  httplib::Headers h = {{"X-Hub-Signature-256", SignatureOf("text.json")}};
  auto r = cli.Post("/webhook/whatsapp", h, Fixture("text.json"), "application/json");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  auto health = cli.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

// The body limit holds while reading, chunked or not: nothing past it is
// buffered, and a huge chunked body costs the gateway no memory.
TEST_F(IngestTest, ChunkedBodiesOverTheLimitAreRefusedWhileReading) {
  auto rss = [this] {
    for (absl::string_view line : absl::StrSplit(Metrics(), '\n')) {
      if (absl::StartsWith(line, "process_resident_memory_bytes ")) {
        return std::stod(std::string(line.substr(line.find(' ') + 1)));
      }
    }
    return -1.0;
  };
  const double before = rss();
  ASSERT_GT(before, 0);
  for (size_t total : {size_t{3} << 20, size_t{300} << 20}) {
    RawConnection c(http_);
    ASSERT_TRUE(c.connected());
    std::string body(total, ' ');
    ASSERT_TRUE(c.Send(absl::StrCat("POST /webhook/whatsapp HTTP/1.1\r\nHost: x\r\n",
                                    "X-Hub-Signature-256: ", SignBody(kSecret, body), "\r\n",
                                    "Content-Type: application/json\r\n",
                                    "Transfer-Encoding: chunked\r\n\r\n")));
    const std::string chunk = absl::StrCat(absl::Hex(1 << 16), "\r\n", std::string(1 << 16, ' '),
                                           "\r\n");
    // The gateway may read the rest to discard it or close at once: either
    // way nothing past the limit is kept (the memory check below).
    size_t sent = 0;
    while (sent < total && c.Send(chunk)) sent += 1 << 16;
    if (sent >= total) c.Send("0\r\n\r\n");
    EXPECT_THAT(c.ReadAll(), HasSubstr(" 413 "));
  }
  EXPECT_THAT(Metrics(), HasSubstr("bridge_gateway_webhooks_total{outcome=\"too_large\"} 2"));
#ifndef BRIDGE_UNDER_ASAN
  // (Not under ASan: its quarantine keeps up to 256 MB of freed blocks, so
  // the read-and-discard of the rest shows up as resident memory there.)
  EXPECT_LT(rss() - before, 64 << 20) << "bytes past the limit were buffered";
#endif
  EXPECT_TRUE(Sessions().empty());
}

// A signed body nested 100,000 deep is a clear 400 and the gateway lives on
// (Meta would retry a crash-causing body for days).
TEST_F(IngestTest, ABodyNestedTooDeepIs400AndTheGatewayLives) {
  const std::string deep = absl::StrCat(
      R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"x","value":{"a":)",
      std::string(100000, '['), std::string(100000, ']'), "}}]}]}");
  auto r = Post(deep, SignBody(kSecret, deep));
  ASSERT_TRUE(r) << "the gateway died";
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(r->body, HasSubstr("nested deeper"));
  EXPECT_EQ(PostFixture("text.json"), 200);
}

// The verification echo repeats what the caller sent: never sniffed as HTML.
TEST_F(IngestTest, AnswersAreNotSniffed) {
  httplib::Client cli(absl::StrCat("http://", http_));
  auto r = cli.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
}

}  // namespace
}  // namespace bridge::testing
