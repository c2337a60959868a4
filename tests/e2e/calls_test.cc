// Issue #15, signalling: a user's WhatsApp call reaches a worker through the
// real gateway and controller, and is refused at once with `reject` through
// the Graph API (the media path is not built yet, docs/calls.md), whether its
// offer is a real browser's or malformed; Meta's terminate webhook after the
// reject is recorded; a webhook delivered twice is offered once. Waits are on
// events (the simulator's /sim/calls long poll, metrics), never a sleep.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "bridge_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string ChromiumOffer() {
  std::ifstream in(absl::StrCat(BRIDGE_SDP_FIXTURES_DIR, "/chromium_156_offer.sdp"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The user calls; returns the call id.
std::string UserCalls(BridgeCluster& c, const std::string& user, const std::string& sdp) {
  httplib::Client cli(absl::StrCat("http://", c.whatsapp_sim_http()));
  auto r = cli.Post(absl::StrCat("/sim/users/", user, "/call?name=Caller").c_str(), sdp,
                    "application/sdp");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  return r ? json::parse(r->body, nullptr, false).value("call_id", "") : "";
}

// What the business did with calls, once there are `n` actions.
json CallActions(BridgeCluster& c, int n) {
  httplib::Client cli(absl::StrCat("http://", c.whatsapp_sim_http()));
  cli.set_read_timeout(90);
  auto r = cli.Get(absl::StrCat("/sim/calls?min_count=", n, "&wait_ms=60000").c_str());
  return r ? json::parse(r->body, nullptr, false) : json::array();
}

TEST(CallsTest, ACallIsRejectedAtOnceAndItsEndIsRecorded) {
  BridgeCluster c;
  const std::string call = UserCalls(c, "15551230021", ChromiumOffer());
  const json actions = CallActions(c, 1);
  ASSERT_EQ(actions.size(), 1u) << c.Logs();
  EXPECT_EQ(actions[0]["call_id"], call);
  EXPECT_EQ(actions[0]["action"], "reject");
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="rejected"} 1)"))
      << c.Logs();
  // Meta's terminate webhook comes after the reject's 200.
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="ended"} 1)"))
      << c.Logs();
  EXPECT_TRUE(c.AwaitGatewayMetric(R"(bridge_gateway_webhook_events_total{kind="call"} 2)"));
  EXPECT_THAT(c.Logs(), HasSubstr("calls are not answered by this bridge yet"));
}

TEST(CallsTest, AMalformedOfferIsRejectedWithWhatIsWrongWithIt) {
  BridgeCluster c;
  UserCalls(c, "15551230022", "v=0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
  const json actions = CallActions(c, 1);
  ASSERT_EQ(actions.size(), 1u) << c.Logs();
  EXPECT_EQ(actions[0]["action"], "reject");
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="rejected"} 1)"));
  EXPECT_THAT(c.Logs(), HasSubstr("transport is RTP/AVP, not UDP/TLS/RTP/SAVPF"));
}

TEST(CallsTest, ACallWebhookDeliveredTwiceIsOfferedOnce) {
  BridgeCluster c;
  c.PostFault(R"({"webhook_duplicate":true})");
  UserCalls(c, "15551230023", ChromiumOffer());
  ASSERT_EQ(CallActions(c, 1).size(), 1u) << c.Logs();
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="duplicate"} 1)"))
      << c.Logs();
  EXPECT_TRUE(c.AwaitControllerMetric(R"(bridge_controller_calls_total{outcome="offered"} 1)"));
  EXPECT_EQ(CallActions(c, 0).size(), 1u);
}

}  // namespace
}  // namespace bridge::testing
