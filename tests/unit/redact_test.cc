#include "common/redact.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bridge {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RedactTest, BearerTokens) {
  std::string s = Redact("GET /v23.0/123 Authorization: Bearer EAAGm0PX4ZCpsBA.x-y_z=");
  EXPECT_THAT(s, Not(HasSubstr("EAAGm0PX4ZCpsBA")));
  EXPECT_THAT(s, HasSubstr("Bearer [REDACTED]"));
}

TEST(RedactTest, HubSignature) {
  std::string s = Redact(
      "bad signature sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914");
  EXPECT_EQ(s, "bad signature sha256=[REDACTED]");
}

TEST(RedactTest, SignedUrlQueryParameters) {
  std::string s = Redact(
      "connecting wss://api.elevenlabs.io/v1/convai/conversation?agent_id=abc"
      "&conversation_signature=cvtkn_01hx2&token=zz9 now");
  EXPECT_THAT(s, HasSubstr("agent_id=abc"));
  EXPECT_THAT(s, Not(HasSubstr("cvtkn_01hx2")));
  EXPECT_THAT(s, Not(HasSubstr("zz9")));
  EXPECT_EQ(Redact("token=abc123&x=1"), "token=[REDACTED]&x=1");
}

TEST(RedactTest, ApiKeyHeadersAndJsonFields) {
  EXPECT_THAT(Redact("xi-api-key: sk_abcdef0123"), Not(HasSubstr("sk_abcdef0123")));
  EXPECT_THAT(Redact(R"({"access_token":"EAAB123","id":"7"})"),
              HasSubstr(R"("access_token":"[REDACTED]")"));
  EXPECT_THAT(Redact(R"({"signed_url": "wss://x?conversation_signature=q"})"),
              Not(HasSubstr("conversation_signature=q")));
}

TEST(RedactTest, RegisteredSecretsAnywhere) {
  RegisterSecret("my-app-secret-value");
  RegisterSecret("abc");  // too short to redact safely
  EXPECT_EQ(Redact("key is my-app-secret-value!"), "key is [REDACTED]!");
  EXPECT_EQ(Redact("abc"), "abc");
  absl::Status s = RedactStatus(absl::InternalError("failed with my-app-secret-value"));
  EXPECT_EQ(s.message(), "failed with [REDACTED]");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
}

TEST(LogTest, TextLinesRedactMessageAndFields) {
  InitLogging("test", LogLevel::kDebug, LogFormat::kText);
  RegisterSecret("sk_field_secret_1");
  std::string line = FormatLogLine(LogLevel::kWarn, "call failed Bearer abc.def.ghi",
                                   {{"key", "sk_field_secret_1"}, {"n", 3}});
  EXPECT_THAT(line, HasSubstr("WARN test: call failed Bearer [REDACTED]"));
  EXPECT_THAT(line, HasSubstr("key=[REDACTED]"));
  EXPECT_THAT(line, HasSubstr("n=3"));
  EXPECT_THAT(FormatLogLine(LogLevel::kInfo, "m", {{"v", "two words"}}),
              HasSubstr("v=\"two words\""));
}

TEST(LogTest, JsonLinesAreValidJsonAndRedacted) {
  InitLogging("test", LogLevel::kInfo, LogFormat::kJson);
  std::string line = FormatLogLine(LogLevel::kError, "quote \" and sha256=abcdef0123456789",
                                   {{"status", absl::UnavailableError("down")}});
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["service"], "test");
  EXPECT_EQ(j["msg"], "quote \" and sha256=[REDACTED]");
  EXPECT_EQ(j["status"], "UNAVAILABLE: down");
  InitLogging("test", LogLevel::kInfo, LogFormat::kText);
}

TEST(LogTest, LevelsFilter) {
  InitLogging("test", LogLevel::kWarn, LogFormat::kText);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  LogLevel l;
  EXPECT_TRUE(ParseLogLevel("WARNING", &l));
  EXPECT_EQ(l, LogLevel::kWarn);
  EXPECT_FALSE(ParseLogLevel("loud", &l));
}

}  // namespace
}  // namespace bridge
