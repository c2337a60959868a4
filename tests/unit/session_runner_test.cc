// Pure pieces of the worker's turn pipeline.
#include "session_runner.h"

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

}  // namespace
}  // namespace bridge::media_worker
