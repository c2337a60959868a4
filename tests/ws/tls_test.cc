// wss:// and https:// with a throwaway CA made at test time.
#include <httplib.h>

#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "ws/websocket.h"
#include "ws_test_util.h"

namespace bridge::ws {
namespace {

using test_util::EchoService;
using test_util::Recorder;
using test_util::TestPki;
using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  // Starts a wss echo server whose certificate covers `sans`.
  void StartServer(const std::string& sans) {
    absl::StatusOr<TestPki> pki = test_util::MakeTestPki(sans);
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
    ServerCallbacks callbacks = echo_.Callbacks();
    callbacks.on_http = [](const HttpRequest&) {
      return HttpResponse{.content_type = "text/plain", .body = "secure"};
    };
    ServerOptions options;
    options.tls = TlsFiles{pki_.server_cert, pki_.server_key};
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options, std::move(callbacks));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = test_util::PortOf(*server_);
  }

  std::string Url(const std::string& host) { return absl::StrCat("wss://", host, ":", port_, "/"); }

  TestPki pki_;
  EchoService echo_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  std::unique_ptr<ClientPool> pool_ = ClientPool::Create();
};

TEST_F(TlsTest, RoundTripWithCaFile) {
  ASSERT_NO_FATAL_FAILURE(StartServer("DNS:localhost,IP:127.0.0.1"));
  for (const char* host : {"127.0.0.1", "localhost"}) {
    auto client = std::make_shared<Recorder>();
    ClientOptions options{.url = Url(host), .ca_file = pki_.ca_cert};
    absl::StatusOr<std::shared_ptr<Connection>> conn = pool_->Connect(options, client);
    ASSERT_TRUE(conn.ok()) << conn.status();
    (*conn)->SendText(absl::StrCat("over tls to ", host));
    ASSERT_TRUE(client->WaitTexts(1)) << host << ": " << client->fail().value_or("");
    EXPECT_EQ(client->texts()[0], absl::StrCat("over tls to ", host));
    (*conn)->Close(kCloseNormal, "");
    EXPECT_TRUE(client->WaitClose());
  }
}

// A server acknowledging a client's close hit an Asio quirk that made
// websocketpp wait for its TLS shutdown timer (seconds) before OnClose; the
// fixed socket policy reports it at once. Fails as >= 1 s if it comes back.
TEST_F(TlsTest, ServerSeesClientCloseWithoutShutdownStall) {
  ASSERT_NO_FATAL_FAILURE(StartServer("IP:127.0.0.1"));
  auto client = std::make_shared<Recorder>();
  absl::StatusOr<std::shared_ptr<Connection>> conn =
      pool_->Connect({.url = Url("127.0.0.1"), .ca_file = pki_.ca_cert}, client);
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE(client->WaitOpen()) << client->fail().value_or("");
  std::shared_ptr<test_util::EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_TRUE(server_side->WaitOpen());
  absl::Time start = absl::Now();
  (*conn)->Close(kCloseNormal, "bye");
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  EXPECT_EQ(server_side->close()->code, kCloseNormal);
  EXPECT_TRUE(server_side->close()->remote);
}

TEST_F(TlsTest, UnknownCaFails) {
  ASSERT_NO_FATAL_FAILURE(StartServer("DNS:localhost,IP:127.0.0.1"));
  auto client = std::make_shared<Recorder>();
  // verify_peer with the system store, which does not know our CA.
  ASSERT_TRUE(pool_->Connect({.url = Url("127.0.0.1")}, client).ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(*client->fail(), HasSubstr(absl::StrCat("127.0.0.1:", port_)));
  EXPECT_FALSE(client->opened());
}

TEST_F(TlsTest, HostNameMismatchFails) {
  ASSERT_NO_FATAL_FAILURE(StartServer("DNS:elsewhere.invalid"));
  auto client = std::make_shared<Recorder>();
  ASSERT_TRUE(pool_->Connect({.url = Url("127.0.0.1"), .ca_file = pki_.ca_cert}, client).ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr("does not match host 127.0.0.1"));
}

TEST_F(TlsTest, NoVerificationConnectsToAnyCertificate) {
  ASSERT_NO_FATAL_FAILURE(StartServer("DNS:elsewhere.invalid"));
  auto client = std::make_shared<Recorder>();
  ASSERT_TRUE(pool_->Connect({.url = Url("127.0.0.1"), .verify_peer = false}, client).ok());
  EXPECT_TRUE(client->WaitOpen()) << client->fail().value_or("");
}

TEST_F(TlsTest, PlainClientToTlsServerFails) {
  ASSERT_NO_FATAL_FAILURE(StartServer("IP:127.0.0.1"));
  auto client = std::make_shared<Recorder>();
  ClientOptions options{.url = absl::StrCat("ws://127.0.0.1:", port_, "/")};
  ASSERT_TRUE(pool_->Connect(options, client).ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr(absl::StrCat("127.0.0.1:", port_)));
}

TEST_F(TlsTest, HttpsGetOnSamePort) {
  ASSERT_NO_FATAL_FAILURE(StartServer("DNS:localhost,IP:127.0.0.1"));
  httplib::SSLClient client("localhost", port_);
  client.set_ca_cert_path(pki_.ca_cert.c_str());
  client.enable_server_certificate_verification(true);
  client.set_read_timeout(20);
  httplib::Result result = client.Get("/health");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "secure");
}

TEST(TlsServerTest, MissingCertificateIsAnError) {
  ServerOptions options;
  options.tls = TlsFiles{"/nonexistent/cert.pem", "/nonexistent/key.pem"};
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options, {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("/nonexistent/cert.pem"));
}

TEST(TlsClientTest, MissingCaFileIsAnError) {
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  absl::StatusOr<std::shared_ptr<Connection>> conn = pool->Connect(
      {.url = "wss://127.0.0.1:1/", .ca_file = "/nonexistent/ca.pem"}, std::make_shared<Recorder>());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace bridge::ws
