// Pure pieces of the worker's turn pipeline.
#include "session_runner.h"

#include "message_description.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bridge::media_worker {
namespace {

using ::testing::SizeIs;

TEST(SplitForWhatsAppTest, ShortTextIsOneMessage) {
  EXPECT_THAT(SplitForWhatsApp("hello"), ::testing::ElementsAre("hello"));
  EXPECT_TRUE(SplitForWhatsApp("").empty());
}

TEST(SplitForWhatsAppTest, LongTextSplitsAtSentencesWithinTheLimit) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "This is sentence number " + std::to_string(i) + ". ";
  auto parts = SplitForWhatsApp(text, 4096);
  ASSERT_GT(parts.size(), 1u);
  std::string joined;
  for (const auto& p : parts) {
    EXPECT_LE(p.size(), 4096u);
    joined += p;
  }
  EXPECT_EQ(joined, text);  // nothing lost or duplicated
  EXPECT_EQ(parts[0].back(), ' ');  // cut after ". "
}

TEST(SplitForWhatsAppTest, NeverCutsInsideAUtf8Character) {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "ñ";  // 2 bytes each, no spaces
  for (const auto& p : SplitForWhatsApp(text, 101)) {
    EXPECT_NE(static_cast<unsigned char>(p[0]) & 0xC0, 0x80u) << "starts mid-character";
    EXPECT_LE(p.size(), 101u);
  }
}

TEST(DeriveUserIdTest, StableDerivedAndNeverTheWaId) {
  const std::string a = DeriveUserId("salt", "106540352242922", "16505551234");
  EXPECT_EQ(a, DeriveUserId("salt", "106540352242922", "16505551234"));
  EXPECT_NE(a, DeriveUserId("other", "106540352242922", "16505551234"));
  EXPECT_NE(a, DeriveUserId("salt", "106540352242922", "16505551235"));
  EXPECT_EQ(a.find("16505551234"), std::string::npos);
  EXPECT_THAT(a, SizeIs(3 + 24));
}

// What the agent is told about content that is neither text nor a voice note.
TEST(DescribeForAgentTest, ContentIsDescribedNotRefused) {
  namespace v1 = ::bridge::v1;
  v1::InboundMessage m;
  m.set_type(v1::MESSAGE_TYPE_IMAGE);
  m.mutable_media()->set_caption("my broken screen");
  EXPECT_EQ(DescribeForAgent(m),
            "[The user sent an image with the caption: \"my broken screen\". You cannot see it.]");
  m.Clear();
  m.set_type(v1::MESSAGE_TYPE_DOCUMENT);
  m.mutable_media()->set_filename("invoice.pdf");
  EXPECT_EQ(DescribeForAgent(m),
            "[The user sent a document named \"invoice.pdf\" without a caption. You cannot see it.]");
  m.Clear();
  m.set_type(v1::MESSAGE_TYPE_LOCATION);
  m.mutable_location()->set_latitude(52.52);
  m.mutable_location()->set_longitude(13.405);
  m.mutable_location()->set_name("Alexanderplatz");
  EXPECT_EQ(DescribeForAgent(m), "[The user shared a location: Alexanderplatz (52.52000, 13.40500).]");
  m.Clear();
  m.set_type(v1::MESSAGE_TYPE_INTERACTIVE);
  m.set_text("Yes, book it");
  EXPECT_EQ(DescribeForAgent(m), "Yes, book it");  // the button title is the user's words
  m.Clear();
  m.set_type(v1::MESSAGE_TYPE_CONTACTS);
  m.add_contact_names("Ana");
  m.add_contact_names("Luis");
  EXPECT_EQ(DescribeForAgent(m), "[The user shared contact cards: Ana, Luis.]");
  m.Clear();
  m.set_type(v1::MESSAGE_TYPE_UNSUPPORTED);
  EXPECT_EQ(DescribeForAgent(m), "");  // truly unrepresentable: the fixed polite text
}

TEST(DescribeForAgentTest, NonTurnsBecomeContext) {
  namespace v1 = ::bridge::v1;
  v1::InboundMessage m;
  m.set_type(v1::MESSAGE_TYPE_REACTION);
  m.set_text("\xF0\x9F\x91\x8D");
  EXPECT_EQ(ContextForAgent(m), "The user reacted with \xF0\x9F\x91\x8D to one of your messages.");
  m.set_text("");
  EXPECT_THAT(ContextForAgent(m), ::testing::HasSubstr("removed their reaction"));
  m.set_type(v1::MESSAGE_TYPE_EDIT);
  m.set_text("Tuesday, not Monday");
  EXPECT_THAT(ContextForAgent(m), ::testing::HasSubstr("\"Tuesday, not Monday\""));
  m.set_type(v1::MESSAGE_TYPE_REVOKE);
  EXPECT_THAT(ContextForAgent(m), ::testing::HasSubstr("deleted"));
}

}  // namespace
}  // namespace bridge::media_worker
