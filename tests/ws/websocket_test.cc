// Plain ws:// server and client against each other and against raw sockets.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "ws/websocket.h"
#include "ws_test_util.h"

namespace bridge::ws {
namespace {

using test_util::EchoHandler;
using test_util::EchoService;
using test_util::kHangGuard;
using test_util::Recorder;
using ::testing::HasSubstr;
using ::testing::Not;

class WebSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start({}, echo_.Callbacks());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    pool_ = ClientPool::Create();
  }

  // Connects to the echo server and waits until both ends are open.
  std::shared_ptr<Connection> ConnectOpen(const std::shared_ptr<Recorder>& client,
                                          size_t server_index = 0) {
    absl::StatusOr<std::shared_ptr<Connection>> conn =
        pool_->Connect({.url = test_util::WsUrlFor(*server_)}, client);
    EXPECT_TRUE(conn.ok()) << conn.status();
    if (!conn.ok()) return nullptr;
    EXPECT_TRUE(client->WaitOpen()) << client->fail().value_or("");
    std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler(server_index);
    EXPECT_NE(server_side, nullptr);
    if (server_side) {
      EXPECT_TRUE(server_side->WaitOpen());
    }
    return *conn;
  }

  EchoService echo_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<ClientPool> pool_;
};

TEST_F(WebSocketTest, EchoRoundTrip) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  EXPECT_TRUE(conn->open());
  conn->SendText("hello");
  ASSERT_TRUE(client->WaitTexts(1));
  EXPECT_EQ(client->texts()[0], "hello");
  EXPECT_EQ(echo_.WaitHandler()->texts(), std::vector<std::string>{"hello"});
}

TEST_F(WebSocketTest, ManyMessagesArriveInOrder) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  constexpr int kCount = 2000;
  std::vector<std::string> sent;
  for (int i = 0; i < kCount; ++i) {
    sent.push_back(absl::StrCat("message ", i));
    conn->SendText(sent.back());
  }
  ASSERT_TRUE(client->WaitTexts(kCount));
  EXPECT_EQ(client->texts(), sent);
}

TEST_F(WebSocketTest, OneMebibyteMessage) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  conn->SendText(big);
  ASSERT_TRUE(client->WaitTexts(1));
  EXPECT_EQ(client->texts()[0].size(), big.size());
  EXPECT_TRUE(client->texts()[0] == big);
}

TEST_F(WebSocketTest, SendsBeforeOpenAreQueuedInOrder) {
  auto client = std::make_shared<Recorder>();
  absl::StatusOr<std::shared_ptr<Connection>> conn =
      pool_->Connect({.url = test_util::WsUrlFor(*server_)}, client);
  ASSERT_TRUE(conn.ok());
  (*conn)->SendText("first");
  (*conn)->SendText("second");
  ASSERT_TRUE(client->WaitTexts(2));
  EXPECT_EQ(client->texts(), (std::vector<std::string>{"first", "second"}));
}

TEST_F(WebSocketTest, UpgradeSeesHeadersQueryAndRemote) {
  auto client = std::make_shared<Recorder>();
  ClientOptions options;
  options.url = test_util::WsUrlFor(*server_, "/v1/convai?agent_id=a%20b&x=1");
  options.headers = {{"xi-api-key", "k-123"}};
  ASSERT_TRUE(pool_->Connect(options, client).ok());
  ASSERT_TRUE(client->WaitOpen());
  HttpRequest request = echo_.request();
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.Path(), "/v1/convai");
  EXPECT_EQ(request.Query("agent_id"), "a b");
  EXPECT_EQ(request.Header("xi-api-key"), "k-123");
  EXPECT_EQ(request.Header("upgrade"), "websocket");
  EXPECT_THAT(echo_.WaitHandler()->connection()->remote(), HasSubstr("127.0.0.1:"));
}

TEST_F(WebSocketTest, RefusedUpgradeFailsClientWithStatus) {
  ServerCallbacks callbacks;
  callbacks.on_upgrade = [](const HttpRequest&, std::shared_ptr<Connection>)
      -> std::variant<std::shared_ptr<ConnectionHandler>, HttpResponse> {
    return HttpResponse{.status = 403, .body = R"({"error":"forbidden"})"};
  };
  absl::StatusOr<std::unique_ptr<Server>> refusing = Server::Start({}, callbacks);
  ASSERT_TRUE(refusing.ok());
  auto client = std::make_shared<Recorder>();
  ASSERT_TRUE(pool_->Connect({.url = test_util::WsUrlFor(**refusing, "/?token=SECRET")}, client)
                  .ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_EQ(client->fail_http_status(), 403);
  EXPECT_THAT(*client->fail(), HasSubstr("403"));
  EXPECT_THAT(*client->fail(), HasSubstr("forbidden"));
  EXPECT_THAT(*client->fail(), HasSubstr((*refusing)->address()));
  EXPECT_THAT(*client->fail(), Not(HasSubstr("SECRET")));
  EXPECT_FALSE(client->opened());
  EXPECT_EQ(client->finish_count(), 1);
}

TEST_F(WebSocketTest, ServerCloseReachesClientAsRemote) {
  auto client = std::make_shared<Recorder>();
  ASSERT_NE(ConnectOpen(client), nullptr);
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  server_side->connection()->Close(kClosePolicyViolation, "bad agent");
  ASSERT_TRUE(client->WaitClose());
  EXPECT_EQ(client->close()->code, kClosePolicyViolation);
  EXPECT_EQ(client->close()->reason, "bad agent");
  EXPECT_TRUE(client->close()->remote);
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_EQ(server_side->close()->code, kClosePolicyViolation);
  EXPECT_FALSE(server_side->close()->remote);
  EXPECT_EQ(client->finish_count(), 1);
}

TEST_F(WebSocketTest, ClientCloseReachesServerAsRemote) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  conn->Close(kCloseNormal, "done");
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_EQ(server_side->close()->code, kCloseNormal);
  EXPECT_EQ(server_side->close()->reason, "done");
  EXPECT_TRUE(server_side->close()->remote);
  ASSERT_TRUE(client->WaitClose());
  EXPECT_EQ(client->close()->code, kCloseNormal);
  EXPECT_FALSE(client->close()->remote);
  EXPECT_FALSE(conn->open());
  conn->SendText("after close");  // ignored, must not crash
}

TEST_F(WebSocketTest, UnsendableCloseCodeBecomesInternalError) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  conn->Close(kCloseAbnormal, "no such frame");  // 1006 may not go on the wire
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_EQ(server_side->close()->code, kCloseInternalError);
  EXPECT_TRUE(client->WaitClose());
}

TEST_F(WebSocketTest, CloseBeforeOpenClosesWithoutOnOpen) {
  auto client = std::make_shared<Recorder>();
  absl::StatusOr<std::shared_ptr<Connection>> conn =
      pool_->Connect({.url = test_util::WsUrlFor(*server_)}, client);
  ASSERT_TRUE(conn.ok());
  (*conn)->SendText("dropped");
  (*conn)->Close(kCloseNormal, "changed my mind");
  ASSERT_TRUE(client->WaitFinished());
  ASSERT_TRUE(client->close().has_value()) << client->fail().value_or("");
  EXPECT_EQ(client->close()->code, kCloseNormal);
  EXPECT_FALSE(client->close()->remote);
  EXPECT_FALSE(client->opened());
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_TRUE(server_side->texts().empty());
}

TEST_F(WebSocketTest, ScheduleFiresAndCancelPrevents) {
  auto client = std::make_shared<Recorder>();
  std::shared_ptr<Connection> conn = ConnectOpen(client);
  ASSERT_NE(conn, nullptr);
  absl::Notification first, last;
  std::atomic<bool> cancelled_ran{false};
  conn->Schedule(absl::Milliseconds(10), [&] { first.Notify(); });
  uint64_t cancelled = conn->Schedule(absl::Milliseconds(50), [&] { cancelled_ran = true; });
  conn->Cancel(cancelled);
  // Fires after the cancelled one would have: by then it would have run.
  conn->Schedule(absl::Milliseconds(200), [&] { last.Notify(); });
  EXPECT_TRUE(first.WaitForNotificationWithTimeout(kHangGuard));
  EXPECT_TRUE(last.WaitForNotificationWithTimeout(kHangGuard));
  EXPECT_FALSE(cancelled_ran);
}

TEST_F(WebSocketTest, ScheduleSkippedOnceClosed) {
  auto client_a = std::make_shared<Recorder>();
  std::shared_ptr<Connection> a = ConnectOpen(client_a, 0);
  auto client_b = std::make_shared<Recorder>();
  std::shared_ptr<Connection> b = ConnectOpen(client_b, 1);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::atomic<bool> ran_on_closed{false};
  absl::Notification clock;
  a->Schedule(absl::Milliseconds(100), [&] { ran_on_closed = true; });
  a->Close(kCloseNormal, "");
  // Same pool, same io thread, same clock: b's later timer orders after a's.
  b->Schedule(absl::Milliseconds(300), [&] { clock.Notify(); });
  ASSERT_TRUE(clock.WaitForNotificationWithTimeout(kHangGuard));
  EXPECT_FALSE(ran_on_closed);
}

TEST_F(WebSocketTest, ServerStopClosesClientsWithGoingAway) {
  auto client = std::make_shared<Recorder>();
  ASSERT_NE(ConnectOpen(client), nullptr);
  server_->Stop();
  ASSERT_TRUE(client->WaitClose());
  EXPECT_EQ(client->close()->code, kCloseGoingAway);
  EXPECT_TRUE(client->close()->remote);
  server_->Stop();  // idempotent
}

TEST_F(WebSocketTest, PoolStopClosesServerSideWithGoingAway) {
  auto client = std::make_shared<Recorder>();
  ASSERT_NE(ConnectOpen(client), nullptr);
  pool_->Stop();
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_EQ(server_side->close()->code, kCloseGoingAway);
  EXPECT_TRUE(server_side->close()->remote);
  EXPECT_TRUE(client->WaitClose());
  absl::StatusOr<std::shared_ptr<Connection>> late =
      pool_->Connect({.url = test_util::WsUrlFor(*server_)}, std::make_shared<Recorder>());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(WebSocketTest, ClientSocketDropIsAbnormalOnServer) {
  ASSERT_EQ(test_util::UpgradeThenDrop(test_util::PortOf(*server_)), "");
  std::shared_ptr<EchoHandler> server_side = echo_.WaitHandler();
  ASSERT_NE(server_side, nullptr);
  ASSERT_TRUE(server_side->WaitClose());
  EXPECT_EQ(server_side->close()->code, kCloseAbnormal);
  EXPECT_TRUE(server_side->close()->remote);
}

TEST(WebSocketClientTest, ServerSocketDropIsAbnormalOnClient) {
  test_util::SilentListener listener;
  ASSERT_GE(listener.fd(), 0);
  auto client = std::make_shared<Recorder>();
  std::string peer_error;
  std::thread peer([&] {
    peer_error = test_util::ServeHandshakeThenDrop(listener.fd(), [&] { client->WaitOpen(); });
  });
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  ASSERT_TRUE(
      pool->Connect({.url = absl::StrCat("ws://127.0.0.1:", listener.port(), "/")}, client).ok());
  EXPECT_TRUE(client->WaitClose());
  peer.join();
  EXPECT_EQ(peer_error, "");
  ASSERT_TRUE(client->close().has_value());
  EXPECT_EQ(client->close()->code, kCloseAbnormal);
  EXPECT_TRUE(client->close()->remote);
}

TEST(WebSocketClientTest, ClosedPortFailsNamingHostPortButNotQuery) {
  test_util::ClosedPort closed;
  auto client = std::make_shared<Recorder>();
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  std::string url =
      absl::StrCat("ws://127.0.0.1:", closed.port(), "/v1?conversation_signature=SECRET");
  ASSERT_TRUE(pool->Connect({.url = url}, client).ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr(absl::StrCat("127.0.0.1:", closed.port())));
  EXPECT_THAT(*client->fail(), Not(HasSubstr("SECRET")));
  EXPECT_EQ(client->finish_count(), 1);
}

TEST(WebSocketClientTest, OpenTimeoutFails) {
  test_util::SilentListener silent;
  auto client = std::make_shared<Recorder>();
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  ClientOptions options;
  options.url = absl::StrCat("ws://127.0.0.1:", silent.port(), "/");
  options.open_timeout = absl::Milliseconds(300);
  ASSERT_TRUE(pool->Connect(options, client).ok());
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr("timed out"));
  EXPECT_THAT(*client->fail(), HasSubstr(absl::StrCat("127.0.0.1:", silent.port())));
  EXPECT_EQ(client->finish_count(), 1);
}

TEST(WebSocketClientTest, PoolStopAbandonsPendingConnect) {
  test_util::SilentListener silent;
  auto client = std::make_shared<Recorder>();
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  ASSERT_TRUE(
      pool->Connect({.url = absl::StrCat("ws://127.0.0.1:", silent.port(), "/")}, client).ok());
  pool->Stop();
  ASSERT_TRUE(client->WaitFail());
  EXPECT_THAT(*client->fail(), HasSubstr("pool stopped"));
}

TEST(WebSocketClientTest, BadUrlIsAnErrorWithoutTheQuery) {
  std::unique_ptr<ClientPool> pool = ClientPool::Create();
  absl::StatusOr<std::shared_ptr<Connection>> conn =
      pool->Connect({.url = "http://example.invalid/?conversation_signature=SECRET"},
                    std::make_shared<Recorder>());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conn.status().message(), Not(HasSubstr("SECRET")));
}

TEST(WebSocketServerTest, StartErrors) {
  EXPECT_EQ(Server::Start({.listen = "no-port"}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<Server>> first = Server::Start({}, {});
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<Server>> second =
      Server::Start({.listen = (*first)->address()}, {});
  EXPECT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr((*first)->address()));
}

}  // namespace
}  // namespace bridge::ws
