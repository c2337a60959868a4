// The gateway's webhook parsing and signature check over Meta-shaped fixtures.
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "webhook_parser.h"
#include "common/hub_signature.h"

namespace bridge::gateway {
namespace {

using ::bridge::SignatureCheck;
using ::bridge::SignBody;
using ::bridge::VerifySignature;

namespace v1 = ::bridge::v1;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  std::ifstream in(absl::StrCat(BRIDGE_FIXTURES_DIR, "/webhooks/", name), std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

v1::DeliverRequest Parse(const std::string& name) {
  auto r = ParseWebhook(Fixture(name));
  EXPECT_TRUE(r.ok()) << name << ": " << r.status();
  return r.ok() ? *r : v1::DeliverRequest();
}

TEST(WebhookSignatureTest, PublishedTestVector) {
  EXPECT_EQ(SignBody("secret", "test"),
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914");
}

TEST(WebhookSignatureTest, EveryFixtureSignatureVerifiesOverTheRawBytes) {
  std::istringstream tsv(Fixture("signatures.tsv"));
  std::string line;
  int checked = 0;
  while (std::getline(tsv, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols = absl::StrSplit(line, '\t');
    ASSERT_EQ(cols.size(), 2u) << line;
    const std::string body = Fixture(cols[0]);
    EXPECT_EQ(VerifySignature("fixture-app-secret", body, cols[1]), SignatureCheck::kValid)
        << cols[0];
    EXPECT_EQ(VerifySignature("other-secret", body, cols[1]), SignatureCheck::kMismatch);
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(WebhookSignatureTest, MissingMalformedAndTamperedSignatures) {
  const std::string body = Fixture("text.json");
  const std::string good = SignBody("k", body);
  EXPECT_EQ(VerifySignature("k", body, good), SignatureCheck::kValid);
  EXPECT_EQ(VerifySignature("k", body, ""), SignatureCheck::kMissing);
  EXPECT_EQ(VerifySignature("k", body, "sha1=abc"), SignatureCheck::kMalformed);
  EXPECT_EQ(VerifySignature("k", body, good.substr(0, good.size() - 1)), SignatureCheck::kMalformed);
  std::string upper = good;
  upper[10] = upper[10] == 'a' ? 'b' : 'a';
  EXPECT_EQ(VerifySignature("k", body, upper), SignatureCheck::kMismatch);
  EXPECT_EQ(VerifySignature("k", body + " ", good), SignatureCheck::kMismatch);
}

TEST(WebhookParserTest, TextMessageWithContact) {
  v1::DeliverRequest r = Parse("text.json");
  ASSERT_EQ(r.events_size(), 1);
  const v1::InboundMessage& m = r.events(0).message();
  EXPECT_EQ(m.type(), v1::MESSAGE_TYPE_TEXT);
  EXPECT_FALSE(m.text().empty());
  EXPECT_EQ(m.phone_number_id(), "106540352242922");
  EXPECT_FALSE(m.from().wa_id().empty());
  EXPECT_FALSE(m.from().profile_name().empty());
  EXPECT_GT(m.timestamp(), 1600000000);
  EXPECT_THAT(m.message_id(), HasSubstr("wamid."));
}

TEST(WebhookParserTest, UnicodeTextIsDecoded) {
  v1::DeliverRequest r = Parse("text_unicode.json");
  ASSERT_EQ(r.events_size(), 1);
  const std::string want = "\u00bfHay mesa libre ma\u00f1ana? \U0001F35D Danke sch\u00f6n \u2014 \u8c22\u8c22";
  EXPECT_EQ(r.events(0).message().text(), want);
  // Meta escapes non-ASCII as \uXXXX (emoji as surrogate pairs) and / as \/.
  auto escaped = ParseWebhook(
      R"({"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",)"
      R"("value":{"metadata":{"phone_number_id":"1"},"messages":[{"id":"w","type":"text",)"
      R"("text":{"body":"\u00bfHay mesa libre ma\u00f1ana? \ud83c\udf5d Danke sch\u00f6n \u2014 \u8c22\u8c22"}}]}}]}]})");
  ASSERT_TRUE(escaped.ok()) << escaped.status();
  EXPECT_EQ(escaped->events(0).message().text(), want);
  auto slash = ParseWebhook(
      R"({"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",)"
      R"("value":{"messages":[{"id":"w","type":"text","text":{"body":"a\/b"}}]}}]}]})");
  ASSERT_TRUE(slash.ok());
  EXPECT_EQ(slash->events(0).message().text(), "a/b");
}

TEST(WebhookParserTest, VoiceNotesWithAndWithoutUrl) {
  const v1::InboundMessage m = Parse("voice_note.json").events(0).message();
  EXPECT_EQ(m.type(), v1::MESSAGE_TYPE_AUDIO);
  EXPECT_EQ(m.media().media_id(), "fixture-media-voice-note-hello");
  EXPECT_TRUE(m.media().voice());
  EXPECT_THAT(m.media().url(), HasSubstr("https://"));
  EXPECT_THAT(m.media().mime_type(), HasSubstr("audio/ogg"));
  EXPECT_FALSE(m.media().sha256_b64().empty());
  const v1::InboundMessage n = Parse("voice_note_no_url.json").events(0).message();
  EXPECT_TRUE(n.media().url().empty());
  EXPECT_FALSE(n.media().media_id().empty());
  const v1::InboundMessage f = Parse("audio_file_mp3.json").events(0).message();
  EXPECT_FALSE(f.media().voice());
  EXPECT_EQ(f.media().mime_type(), "audio/mpeg");
}

TEST(WebhookParserTest, OtherTypesAreKeptWithTheirRawJson) {
  struct Case {
    const char* file;
    v1::MessageType type;
  } cases[] = {{"image.json", v1::MESSAGE_TYPE_IMAGE},
               {"reaction.json", v1::MESSAGE_TYPE_REACTION},
               {"location.json", v1::MESSAGE_TYPE_LOCATION},
               {"interactive_button_reply.json", v1::MESSAGE_TYPE_INTERACTIVE},
               {"unsupported.json", v1::MESSAGE_TYPE_UNSUPPORTED}};
  for (const Case& c : cases) {
    v1::DeliverRequest r = Parse(c.file);
    ASSERT_EQ(r.events_size(), 1) << c.file;
    EXPECT_EQ(r.events(0).message().type(), c.type) << c.file;
    EXPECT_FALSE(r.events(0).message().raw_json().empty());
  }
  EXPECT_EQ(Parse("unsupported.json").events(0).message().errors(0).code(), 131051);
  EXPECT_FALSE(Parse("interactive_button_reply.json").events(0).message().text().empty());
}

TEST(WebhookParserTest, StatusesInEveryState) {
  for (const char* s : {"sent", "delivered", "read", "played", "failed"}) {
    v1::DeliverRequest r = Parse(absl::StrCat("status_", s, ".json"));
    ASSERT_EQ(r.events_size(), 1) << s;
    const v1::StatusUpdate& st = r.events(0).status();
    EXPECT_EQ(st.status_name(), s);
    EXPECT_NE(st.status(), v1::DELIVERY_STATUS_UNSPECIFIED);
    EXPECT_FALSE(st.message_id().empty());
    EXPECT_GT(st.timestamp(), 0);
  }
  EXPECT_GT(Parse("status_failed.json").events(0).status().errors_size(), 0);
}

TEST(WebhookParserTest, SystemErrorsBecomeOtherEvents) {
  v1::DeliverRequest r = Parse("system_error.json");
  ASSERT_EQ(r.events_size(), 1);
  EXPECT_EQ(r.events(0).other().errors(0).code(), 131000);
}

TEST(WebhookParserTest, BatchOfTwoBusinessNumbers) {
  v1::DeliverRequest r = Parse("batch.json");
  ASSERT_EQ(r.events_size(), 4);
  EXPECT_EQ(r.events(0).message().from().profile_name(), "Sheena Nelson");
  EXPECT_EQ(r.events(1).message().from().profile_name(), "Zoë Ångström");
  EXPECT_EQ(r.events(1).message().type(), v1::MESSAGE_TYPE_AUDIO);
  EXPECT_EQ(r.events(2).message().text(), "Second message");
  EXPECT_EQ(r.events(3).status().phone_number_id(), "207654321098765");
}

TEST(WebhookParserTest, UsernameUsersWithEmptyWaIdAndUnknownTypes) {
  const std::string body = R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
    {"field":"messages","value":{"messaging_product":"whatsapp",
     "metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
     "contacts":[{"profile":{"name":"Neo"},"wa_id":"","user_id":"US.13491208655302741918"}],
     "messages":[{"from":"","from_user_id":"US.13491208655302741918","id":"wamid.X",
       "timestamp":1750000000,"type":"edit","edit":{"new":1},"future_field":true}]}},
    {"field":"calls","value":{"calls":[{"id":"c1","event":"connect"}]}}]}]})";
  auto r = ParseWebhook(body);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->events_size(), 2);
  const v1::InboundMessage& m = r->events(0).message();
  EXPECT_EQ(m.from().user_id(), "US.13491208655302741918");
  EXPECT_EQ(m.from().profile_name(), "Neo");
  EXPECT_EQ(m.type(), v1::MESSAGE_TYPE_UNKNOWN);
  EXPECT_EQ(m.type_name(), "edit");
  EXPECT_EQ(m.timestamp(), 1750000000);  // a number where Meta usually sends a string
  EXPECT_EQ(r->events(1).other().field(), "calls");
}

TEST(WebhookParserTest, MalformedBodiesSayWhatIsWrong) {
  struct Case {
    const char* file;
    const char* says;
  } cases[] = {{"malformed_not_json.json", "not valid JSON"},
               {"malformed_truncated.json", "not valid JSON"},
               {"malformed_wrong_object.json", "'page'"},
               {"malformed_missing_changes.json", "entry[0].changes: missing"},
               {"malformed_wrong_types.json", "entry[0].changes[0].value.metadata"}};
  for (const Case& c : cases) {
    auto r = ParseWebhook(Fixture(c.file));
    ASSERT_FALSE(r.ok()) << c.file;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.says)) << c.file;
  }
  EXPECT_FALSE(ParseWebhook("").ok());
  EXPECT_FALSE(ParseWebhook("[]").ok());
}

}  // namespace
}  // namespace bridge::gateway
