// The WhatsApp edge of issue #9 end to end: the real gateway, controller and
// worker with both simulators, on port 0. Users known only by a BSUID,
// reactions, edits, revokes, messages days late, batches with a bad part and
// voice notes that fail after the 200. Every wait is on an event (READY
// lines, the outbox long poll, a metric, the Sessions API), never a sleep.
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "bridge_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
namespace v1 = ::bridge::v1;

constexpr char kUser[] = "15551239001";
constexpr char kBsuid[] = "US.13491208655302741918";

// "?message_id=W" with W percent-encoded: wamids are base64 ('+', '/', '=').
std::string About(const std::string& wamid) {
  std::string out = "?message_id=";
  for (unsigned char c : wamid) {
    if (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-') out.push_back(static_cast<char>(c));
    else absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
  }
  return out;
}

// Gateway, controller, one worker and both simulators.
class Edge : public BridgeCluster {
 public:
  explicit Edge(std::vector<std::string> sim_args = {})
      : BridgeCluster({.workers = 1, .sim_args = std::move(sim_args)}) {}
  bool AwaitMetric(const std::string& line, bool gateway = false) {
    return gateway ? AwaitGatewayMetric(line) : AwaitControllerMetric(line);
  }
};

std::string Action(const std::string& action, int n) {
  return absl::StrCat("bridge_controller_message_actions_total{action=\"", action, "\"} ", n);
}

TEST(WhatsAppEdgeTest, ABsuidOnlyUserGetsRepliesSentToTheRecipient) {
  Edge e;
  const std::string wamid = e.UserSays(kBsuid, "text", "hello", "?username=neo");
  json out = e.Outbox(kBsuid, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["recipient"], kBsuid);
  EXPECT_FALSE(out[0].contains("to"));
  EXPECT_EQ(out[0]["text"], "You said: hello");
  EXPECT_EQ(out[0]["context_message_id"], wamid);
  v1::Session s = e.AwaitSession([](const v1::Session& s) { return s.turns_done() == 1; });
  EXPECT_EQ(s.user_id(), absl::StrCat("US.1", std::string(16, '*'), "918"));  // masked
  EXPECT_EQ(s.username(), "***");
  EXPECT_TRUE(s.wa_id().empty());
}

TEST(WhatsAppEdgeTest, AReactionIsNotAnswered) {
  Edge e;
  e.UserSays(kUser, "text", "hi");
  json out = e.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  e.UserSays(kUser, "reaction", "\xF0\x9F\x91\x8D",
             About(out[0]["id"].get<std::string>()));
  ASSERT_TRUE(e.AwaitMetric(Action("reaction_inform", 1))) << e.Logs();
  const std::string again = e.UserSays(kUser, "text", "again");
  out = e.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << e.Logs();
  EXPECT_EQ(out[1]["text"], "You said: again");  // nothing in between for the reaction
  EXPECT_EQ(out[1]["context_message_id"], again);
  e.AwaitSession([](const v1::Session& s) { return s.turns_done() == 3; });
  EXPECT_EQ(e.Outbox(kUser, 0).size(), 2u);
}

TEST(WhatsAppEdgeTest, AnEditOfAWaitingMessageIsAnsweredWithTheNewText) {
  Edge e;
  // Slow Graph answers keep the first turn busy while the next one waits.
  e.PostFault(R"({"latency_ms":1500})");
  e.UserSays(kUser, "text", "first");
  const std::string typo = e.UserSays(kUser, "text", "tpyo");
  e.UserSays(kUser, "edit", "typo", About(typo));
  ASSERT_TRUE(e.AwaitMetric(Action("edit_replaced", 1))) << e.Logs();
  json out = e.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << e.Logs();
  EXPECT_EQ(out[0]["text"], "You said: first");
  EXPECT_EQ(out[1]["text"], "You said: typo");
  e.AwaitSession([](const v1::Session& s) { return s.turns_done() == 2; });
  EXPECT_EQ(e.Outbox(kUser, 0).size(), 2u);
}

TEST(WhatsAppEdgeTest, AnEditOfAnAnsweredMessageTellsTheAgentAndIsNotAnswered) {
  Edge e;
  const std::string typo = e.UserSays(kUser, "text", "tpyo");
  ASSERT_EQ(e.Outbox(kUser, 1).size(), 1u) << e.Logs();
  e.UserSays(kUser, "edit", "typo", About(typo));
  ASSERT_TRUE(e.AwaitMetric(Action("edit_inform", 1))) << e.Logs();
  e.UserSays(kUser, "text", "next");
  json out = e.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << e.Logs();
  EXPECT_EQ(out[1]["text"], "You said: next");
}

TEST(WhatsAppEdgeTest, ARevokeDropsAWaitingMessageAndOtherwiseIsNotAnswered) {
  Edge e;
  e.PostFault(R"({"latency_ms":1500})");
  e.UserSays(kUser, "text", "first");
  const std::string oops = e.UserSays(kUser, "text", "oops");
  e.UserSays(kUser, "revoke", "", About(oops));
  ASSERT_TRUE(e.AwaitMetric(Action("revoke_dropped", 1))) << e.Logs();
  json out = e.Outbox(kUser, 1);
  ASSERT_GE(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["text"], "You said: first");
  e.PostFault(R"({"latency_ms":0})");
  // A revoke of what was answered: the agent hears it, the user gets nothing.
  e.UserSays(kUser, "revoke", "", About(out[0]["id"].get<std::string>()));
  ASSERT_TRUE(e.AwaitMetric(Action("revoke_inform", 1))) << e.Logs();
  e.UserSays(kUser, "text", "after");
  out = e.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << e.Logs();
  EXPECT_EQ(out[1]["text"], "You said: after");
}

TEST(WhatsAppEdgeTest, AMessageThreeDaysOldIsRecordedNotAnswered) {
  Edge e;
  e.UserSays(kUser, "text", "late", "?age_s=259200");
  ASSERT_TRUE(e.AwaitMetric(
      "bridge_controller_ingest_events_total{kind=\"message\",outcome=\"too_old\"} 1"))
      << e.Logs();
  e.UserSays(kUser, "text", "now");
  json out = e.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["text"], "You said: now");
  v1::Session s = e.AwaitSession([](const v1::Session& s) { return s.turns_done() == 1; });
  EXPECT_EQ(s.messages_too_old(), 1);
  EXPECT_EQ(e.Outbox(kUser, 0).size(), 1u);
}

TEST(WhatsAppEdgeTest, ABatchWithOneBadChangeAnswersItsValidMessage) {
  Edge e;
  e.UserSays(kUser, "text", "valid", "?malformed_extra_change=true&retries=0");
  json out = e.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["text"], "You said: valid");
  EXPECT_TRUE(e.AwaitMetric("bridge_gateway_webhook_events_total{kind=\"malformed\"} 1",
                            /*gateway=*/true));
  EXPECT_TRUE(e.AwaitMetric("bridge_gateway_webhooks_total{outcome=\"acked\"}", true));
}

TEST(WhatsAppEdgeTest, AVoiceNoteThatFailsAfterThe200IsFollowedByItsText) {
  Edge e;
  e.PostFault(R"({"delivery_failed_code":131053,"message_type":"audio","count":1})");
  e.UserSays(kUser, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  json out = e.Outbox(kUser, 2);
  ASSERT_EQ(out.size(), 2u) << e.Logs();
  EXPECT_EQ(out[0]["type"], "audio");
  EXPECT_EQ(out[0]["delivery_failed_code"], 131053);
  EXPECT_EQ(out[1]["type"], "text");
  EXPECT_FALSE(out[1].value("text", "").empty());
  ASSERT_TRUE(e.AwaitMetric("bridge_controller_delivery_failures_total{code=\"131053\"} 1"))
      << e.Logs();
  EXPECT_TRUE(e.AwaitMetric(Action("resend_as_text", 1)));
  v1::Session s = e.AwaitSession([](const v1::Session& s) { return s.turns_done() == 2; });
  EXPECT_EQ(s.delivery_failures(), 1);
  EXPECT_EQ(s.last_delivery_error(), "131053 Media upload error");
  EXPECT_EQ(e.Outbox(kUser, 0).size(), 2u);  // once, not again
}

// A voice note cannot go to a user known only by a BSUID (131062 for that
// type): the reply goes as text instead of not at all.
TEST(WhatsAppEdgeTest, AVoiceReplyRefusedForABsuidOnlyUserGoesAsText) {
  Edge e;
  e.PostFault(R"({"bsuid_131062_types":["audio"]})");
  e.UserSays(kBsuid, "voice", AudioFixture("voice_note_tone_440hz.ogg"));
  json out = e.Outbox(kBsuid, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["type"], "text");
  EXPECT_EQ(out[0]["recipient"], kBsuid);
  EXPECT_THAT(out[0]["text"].get<std::string>(), ::testing::HasSubstr("You said: [audio"));
}

// The user opened the chat: the agent's greeting is the answer.
TEST(WhatsAppEdgeTest, RequestWelcomeIsAnsweredWithTheGreeting) {
  Edge e({"--first_message=Welcome! How can I help?"});
  e.UserSays(kUser, "welcome", "");
  json out = e.Outbox(kUser, 1);
  ASSERT_EQ(out.size(), 1u) << e.Logs();
  EXPECT_EQ(out[0]["text"], "Welcome! How can I help?");
}

}  // namespace
}  // namespace bridge::testing
