// Plain HTTP on the WebSocket port, answered by ServerCallbacks::on_http.
#include <httplib.h>

#include <memory>
#include <optional>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "ws/websocket.h"
#include "ws_test_util.h"

namespace bridge::ws {
namespace {

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerCallbacks callbacks;
    callbacks.on_http = [this](const HttpRequest& request) {
      absl::MutexLock lock(&mu_);
      last_ = request;
      HttpResponse response;
      if (request.Path() == "/health") {
        response.body = R"({"ok":true})";
        response.headers = {{"X-Bridge", "yes"}};
      } else if (request.Path() == "/echo") {
        response.content_type = "text/plain";
        response.body = request.body;
      } else {
        response.status = 429;
        response.body = "slow down";
      }
      return response;
    };
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start({}, std::move(callbacks));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  HttpRequest last() {
    absl::MutexLock lock(&mu_);
    return last_;
  }

  httplib::Client Client() {
    httplib::Client client("127.0.0.1", test_util::PortOf(*server_));
    client.set_connection_timeout(20);
    client.set_read_timeout(20);
    return client;
  }

  absl::Mutex mu_;
  HttpRequest last_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Server> server_;
};

TEST_F(HttpServerTest, GetAnsweredByOnHttp) {
  httplib::Client client = Client();
  httplib::Result result = client.Get("/health?probe=a%2Bb&x", {{"X-Custom", "v"}});
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, R"({"ok":true})");
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(result->get_header_value("X-Bridge"), "yes");
  HttpRequest request = last();
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.Path(), "/health");
  EXPECT_EQ(request.Query("probe"), "a+b");
  EXPECT_EQ(request.Query("x"), "");
  EXPECT_EQ(request.Query("missing"), std::nullopt);
  EXPECT_EQ(request.Header("x-custom"), "v");
}

TEST_F(HttpServerTest, PostBodyReachesOnHttp) {
  httplib::Client client = Client();
  httplib::Result result = client.Post("/echo", "payload 123", "text/plain");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "payload 123");
  EXPECT_EQ(last().method, "POST");
}

TEST_F(HttpServerTest, StatusFromHandler) {
  httplib::Client client = Client();
  httplib::Result result = client.Get("/elsewhere");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->body, "slow down");
}

TEST(HttpServerDefaultTest, NotFoundWithoutOnHttp) {
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start({}, {});
  ASSERT_TRUE(server.ok());
  httplib::Client client("127.0.0.1", test_util::PortOf(**server));
  client.set_read_timeout(20);
  httplib::Result result = client.Get("/anything");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
}

}  // namespace
}  // namespace bridge::ws
