// The library's string helpers: HttpRequest accessors and private URL parsing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "url.h"
#include "ws/websocket.h"

namespace bridge::ws {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(HttpRequestTest, PathQueryHeader) {
  HttpRequest request;
  request.resource = "/v1/convai/conversation?agent_id=agent%201&flag&q=a+b&empty=#frag";
  request.headers = {{"xi-api-key", "k"}};
  EXPECT_EQ(request.Path(), "/v1/convai/conversation");
  EXPECT_EQ(request.Query("agent_id"), "agent 1");
  EXPECT_EQ(request.Query("flag"), "");
  EXPECT_EQ(request.Query("q"), "a b");
  EXPECT_EQ(request.Query("empty"), "");
  EXPECT_EQ(request.Query("frag"), std::nullopt);
  EXPECT_EQ(request.Query("agent"), std::nullopt);
  EXPECT_EQ(request.Header("xi-api-key"), "k");
  EXPECT_EQ(request.Header("missing"), std::nullopt);

  HttpRequest bare;
  bare.resource = "/plain";
  EXPECT_EQ(bare.Path(), "/plain");
  EXPECT_EQ(bare.Query("a"), std::nullopt);
}

TEST(UrlTest, ParsesWsUrls) {
  absl::StatusOr<internal::WsUrl> url =
      internal::ParseWsUrl("wss://api.elevenlabs.io/v1/convai?agent_id=x");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_TRUE(url->secure);
  EXPECT_EQ(url->host, "api.elevenlabs.io");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->resource, "/v1/convai?agent_id=x");
  EXPECT_EQ(url->HostPort(), "api.elevenlabs.io:443");

  url = internal::ParseWsUrl("ws://127.0.0.1:8080");
  ASSERT_TRUE(url.ok());
  EXPECT_FALSE(url->secure);
  EXPECT_EQ(url->port, 8080);
  EXPECT_EQ(url->resource, "/");

  url = internal::ParseWsUrl("ws://[::1]:9/x");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->HostPort(), "[::1]:9");
}

TEST(UrlTest, RejectsBadUrlsWithoutQuotingThem) {
  for (const char* bad : {"http://h/?sig=SECRET", "ws://?sig=SECRET", "ws://h:99999/?sig=SECRET",
                          "ws://user:SECRET@h/", "h:80"}) {
    absl::StatusOr<internal::WsUrl> url = internal::ParseWsUrl(bad);
    EXPECT_FALSE(url.ok()) << bad;
    EXPECT_THAT(url.status().message(), Not(HasSubstr("SECRET"))) << bad;
  }
}

TEST(UrlTest, HostPort) {
  auto hp = internal::SplitHostPort("0.0.0.0:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "0.0.0.0");
  EXPECT_EQ(hp->second, 0);
  hp = internal::SplitHostPort("[::]:443");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "::");
  EXPECT_FALSE(internal::SplitHostPort("localhost").ok());
  EXPECT_FALSE(internal::SplitHostPort(":80").ok());
  EXPECT_FALSE(internal::SplitHostPort("h:x").ok());
  EXPECT_EQ(internal::JoinHostPort("::1", 5), "[::1]:5");
}

}  // namespace
}  // namespace bridge::ws
