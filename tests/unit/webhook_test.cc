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
      R"("value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1","id":"w","type":"text",)"
      R"("text":{"body":"\u00bfHay mesa libre ma\u00f1ana? \ud83c\udf5d Danke sch\u00f6n \u2014 \u8c22\u8c22"}}]}}]}]})");
  ASSERT_TRUE(escaped.ok()) << escaped.status();
  ASSERT_EQ(escaped->events_size(), 1);
  EXPECT_EQ(escaped->events(0).message().text(), want);
  auto slash = ParseWebhook(
      R"({"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages",)"
      R"("value":{"messages":[{"from":"1","id":"w","type":"text","text":{"body":"a\/b"}}]}}]}]})");
  ASSERT_TRUE(slash.ok());
  ASSERT_EQ(slash->events_size(), 1);
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
     "contacts":[{"profile":{"name":"Neo","username":"@neo"},"wa_id":"",
                  "user_id":"US.13491208655302741918","parent_user_id":"US.ENT.99"}],
     "messages":[{"from":"","from_user_id":"US.13491208655302741918","id":"wamid.X",
       "timestamp":1750000000,"type":"poll","poll":{"new":1},"future_field":true}]}},
    {"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]}]})";
  auto r = ParseWebhook(body);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->events_size(), 2);
  const v1::InboundMessage& m = r->events(0).message();
  EXPECT_EQ(m.from().user_id(), "US.13491208655302741918");
  EXPECT_EQ(m.from().wa_id(), "");
  EXPECT_EQ(m.from().profile_name(), "Neo");
  EXPECT_EQ(m.from().username(), "@neo");
  EXPECT_EQ(m.from().parent_user_id(), "US.ENT.99");
  EXPECT_EQ(m.type(), v1::MESSAGE_TYPE_UNKNOWN);
  EXPECT_EQ(m.type_name(), "poll");
  EXPECT_EQ(m.timestamp(), 1750000000);  // a number where Meta usually sends a string
  EXPECT_EQ(r->events(1).other().field(), "account_update");
}

// One change of the messages field with `messages` (and contacts) as given.
std::string Webhook(const std::string& messages, const std::string& contacts =
                        R"([{"profile":{"name":"Ana"},"wa_id":"16505551234"}])") {
  return absl::StrCat(
      R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",)",
      R"("value":{"metadata":{"phone_number_id":"106540352242922"},"contacts":)", contacts,
      R"(,"messages":)", messages, "}}]}]}");
}

v1::InboundMessage One(const std::string& message) {
  auto r = ParseWebhook(Webhook(absl::StrCat("[", message, "]")));
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r.ok() ? r->events_size() : 0, 1) << message;
  return r.ok() && r->events_size() == 1 ? r->events(0).message() : v1::InboundMessage();
}

TEST(WebhookParserTest, PhoneAndBsuidTogether) {
  auto r = ParseWebhook(Webhook(
      R"([{"from":"16505551234","from_user_id":"US.1","id":"w1","type":"text","text":{"body":"x"}}])",
      R"([{"profile":{"name":"Ana","username":"ana"},"wa_id":"16505551234","user_id":"US.1"}])"));
  ASSERT_TRUE(r.ok());
  const v1::UserRef& from = r->events(0).message().from();
  EXPECT_EQ(from.wa_id(), "16505551234");
  EXPECT_EQ(from.user_id(), "US.1");
  EXPECT_EQ(from.username(), "ana");
}

TEST(WebhookParserTest, ReactionsEditsAndRevokesNameTheirTarget) {
  const v1::InboundMessage reaction = Parse("reaction.json").events(0).message();
  EXPECT_EQ(reaction.target_message_id(), "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTc00900RkZBRUUwMzgxMDE0NEYA");
  EXPECT_EQ(reaction.text(), "\u2764\ufe0f");
  const v1::InboundMessage edit = One(
      R"({"from":"16505551234","id":"w2","timestamp":"1","type":"edit","edit":{)"
      R"("original_message_id":"wamid.orig","message":{"type":"text","text":{"body":"fixed"}}}})");
  EXPECT_EQ(edit.type(), v1::MESSAGE_TYPE_EDIT);
  EXPECT_EQ(edit.target_message_id(), "wamid.orig");
  EXPECT_EQ(edit.text(), "fixed");
  const v1::InboundMessage caption = One(
      R"({"from":"16505551234","id":"w3","type":"edit","edit":{"original_message_id":"wamid.img",)"
      R"("message":{"type":"image","image":{"id":"m1","caption":"new caption"}}}})");
  EXPECT_EQ(caption.text(), "new caption");
  EXPECT_EQ(caption.target_message_id(), "wamid.img");
  const v1::InboundMessage revoke = One(
      R"({"from":"16505551234","id":"w4","type":"revoke","revoke":{"original_message_id":"wamid.gone"}})");
  EXPECT_EQ(revoke.type(), v1::MESSAGE_TYPE_REVOKE);
  EXPECT_EQ(revoke.target_message_id(), "wamid.gone");
}

TEST(WebhookParserTest, SystemWelcomeLocationContactsOrderAndMedia) {
  const v1::InboundMessage sys = One(
      R"({"from":"16505551234","id":"s","type":"system","system":{"body":"User A changed from )"
      R"(16505551234 to 16505559999","type":"user_changed_number","new_wa_id":"16505559999"}})");
  EXPECT_EQ(sys.type(), v1::MESSAGE_TYPE_SYSTEM);
  EXPECT_EQ(sys.system_type(), "user_changed_number");
  EXPECT_EQ(sys.new_wa_id(), "16505559999");
  EXPECT_THAT(sys.text(), HasSubstr("changed from"));
  EXPECT_EQ(One(R"({"from":"16505551234","id":"rw","type":"request_welcome"})").type(),
            v1::MESSAGE_TYPE_REQUEST_WELCOME);
  const v1::InboundMessage loc = Parse("location.json").events(0).message();
  EXPECT_NEAR(loc.location().latitude(), 37.4422, 1e-3);
  EXPECT_NEAR(loc.location().longitude(), -122.1616, 1e-3);
  EXPECT_EQ(loc.location().name(), "Philz Coffee");
  EXPECT_THAT(loc.location().address(), HasSubstr("Palo Alto"));
  const v1::InboundMessage contacts = One(
      R"({"from":"16505551234","id":"c","type":"contacts","contacts":[{"name":{"formatted_name":)"
      R"("Bo Li"},"phones":[{"phone":"+1 555"}]},{"phones":[{"phone":"+44 20"}]}]})");
  EXPECT_THAT(contacts.contact_names(), ::testing::ElementsAre("Bo Li", "+44 20"));
  const v1::InboundMessage order = One(
      R"({"from":"16505551234","id":"o","type":"order","order":{"catalog_id":"1","text":"two please",)"
      R"("product_items":[]}})");
  EXPECT_EQ(order.type(), v1::MESSAGE_TYPE_ORDER);
  EXPECT_EQ(order.text(), "two please");
  EXPECT_EQ(Parse("image.json").events(0).message().text(), "Is this the place?");
  const v1::InboundMessage doc = One(
      R"({"from":"16505551234","id":"d","type":"document","document":{"id":"m2",)"
      R"("filename":"menu.pdf","mime_type":"application/pdf"}})");
  EXPECT_EQ(doc.media().filename(), "menu.pdf");
  const v1::InboundMessage sticker = One(
      R"({"from":"16505551234","id":"st","type":"sticker","sticker":{"id":"m3","mime_type":"image/webp"}})");
  EXPECT_EQ(sticker.type(), v1::MESSAGE_TYPE_STICKER);
  EXPECT_EQ(sticker.media().media_id(), "m3");
}

TEST(WebhookParserTest, StatusesNameTheRecipientsBsuid) {
  auto r = ParseWebhook(
      R"({"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{)"
      R"("metadata":{"phone_number_id":"1"},"statuses":[{"id":"wamid.s","status":"failed",)"
      R"("timestamp":"5","recipient_id":"","recipient_user_id":"US.1","errors":[{"code":131053,)"
      R"("title":"Media upload error"}]}]}}]}]})");
  ASSERT_TRUE(r.ok());
  const v1::StatusUpdate& st = r->events(0).status();
  EXPECT_EQ(st.recipient_user_id(), "US.1");
  EXPECT_EQ(st.status(), v1::DELIVERY_STATUS_FAILED);
  EXPECT_EQ(st.errors(0).code(), 131053);
}

TEST(WebhookParserTest, OneBadPartDoesNotSpoilTheBatch) {
  const std::string body = R"({"object":"whatsapp_business_account","entry":[
    {"id":"1","changes":[
      {"field":"messages","value":{"metadata":"not an object","messages":[]}},
      {"field":"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[
        7, {"id":"wamid.noone","type":"text"},
        {"from":"16505551234","id":"wamid.ok","type":"text","text":{"body":"still here"}}],
       "statuses":["bad", {"id":"wamid.s","status":"read"}]}}]},
    "not an entry", {"id":"2"}]})";
  std::vector<std::string> problems;
  auto r = ParseWebhook(body, &problems);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->events_size(), 2);
  EXPECT_EQ(r->events(0).message().text(), "still here");
  EXPECT_EQ(r->events(1).status().message_id(), "wamid.s");
  EXPECT_THAT(problems, ::testing::UnorderedElementsAre(
                            HasSubstr("entry[0].changes[0].value.metadata: expected an object"),
                            HasSubstr("entry[0].changes[1].value.messages[0]: expected an object"),
                            HasSubstr("entry[0].changes[1].value.messages[1]: no sender"),
                            HasSubstr("entry[0].changes[1].value.statuses[0]"),
                            HasSubstr("entry[1]: expected an object"),
                            HasSubstr("entry[2].changes: missing")));
}

TEST(WebhookParserTest, OnlyABodyThatIsNoWebhookAtAllIsRefused) {
  struct Case {
    const char* file;
    const char* says;
  } cases[] = {{"malformed_not_json.json", "not valid JSON"},
               {"malformed_truncated.json", "not valid JSON"},
               {"malformed_wrong_object.json", "'page'"}};
  for (const Case& c : cases) {
    auto r = ParseWebhook(Fixture(c.file));
    ASSERT_FALSE(r.ok()) << c.file;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.says)) << c.file;
  }
  EXPECT_FALSE(ParseWebhook("").ok());
  EXPECT_FALSE(ParseWebhook("[]").ok());
  EXPECT_FALSE(ParseWebhook(R"({"object":"whatsapp_business_account"})").ok());
  EXPECT_FALSE(ParseWebhook(R"({"object":"whatsapp_business_account","entry":{}})").ok());
  // A webhook whose parts are all bad is still a webhook: acknowledged, each
  // part named, so that Meta stops retrying what will never parse.
  struct Part {
    const char* file;
    const char* says;
  } parts[] = {{"malformed_missing_changes.json", "entry[0].changes: missing"},
               {"malformed_wrong_types.json", "entry[0].changes[0].value.metadata"}};
  for (const Part& p : parts) {
    std::vector<std::string> problems;
    auto r = ParseWebhook(Fixture(p.file), &problems);
    ASSERT_TRUE(r.ok()) << p.file;
    EXPECT_EQ(r->events_size(), 0);
    EXPECT_THAT(problems, ::testing::ElementsAre(HasSubstr(p.says))) << p.file;
  }
}

// `calls` webhooks (PROTOCOLS.md A6) become typed events: a connect with its
// offer, a terminate with how it ended; an entry that cannot be answered is
// skipped with its path, and the rest of the batch still counts.
TEST(WebhookParserTest, CallsBecomeCallEvents) {
  const std::string body = R"({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
    {"field":"calls","value":{"messaging_product":"whatsapp",
      "metadata":{"display_phone_number":"15550001111","phone_number_id":"106540352242922"},
      "contacts":[{"profile":{"name":"Ana"},"wa_id":"15551230020"}],
      "calls":[
        {"id":"wacid.A","from":"15551230020","to":"15550001111","event":"connect","timestamp":"1744116163",
         "session":{"sdp_type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}},
        {"id":"wacid.B","from":"15551230020","event":"terminate","timestamp":"1744116200",
         "status":"COMPLETED","duration":37},
        {"id":"wacid.C","from":"15551230020","event":"connect"},
        {"id":"wacid.D","from":"15551230020","event":"ring"}]}}]}]})";
  std::vector<std::string> problems;
  auto r = ParseWebhook(body, &problems);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->events_size(), 2);
  const v1::CallEvent& connect = r->events(0).call();
  EXPECT_EQ(connect.type(), v1::CALL_EVENT_TYPE_CONNECT);
  EXPECT_EQ(connect.call_id(), "wacid.A");
  EXPECT_EQ(connect.phone_number_id(), "106540352242922");
  EXPECT_EQ(connect.from().wa_id(), "15551230020");
  EXPECT_EQ(connect.from().profile_name(), "Ana");
  EXPECT_EQ(connect.timestamp(), 1744116163);
  EXPECT_THAT(connect.sdp(), ::testing::StartsWith("v=0\r\n"));
  const v1::CallEvent& end = r->events(1).call();
  EXPECT_EQ(end.type(), v1::CALL_EVENT_TYPE_TERMINATE);
  EXPECT_EQ(end.status(), "COMPLETED");
  EXPECT_EQ(end.duration_s(), 37);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_THAT(problems[0], HasSubstr("calls[2].session: a connect needs {sdp_type: offer, sdp}"));
  EXPECT_THAT(problems[1], HasSubstr("calls[3].event: 'ring' is not connect or terminate"));
}

}  // namespace
}  // namespace bridge::gateway
