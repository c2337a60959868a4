#include "audio/opus_packet.h"

#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

// The raw-packet path (Media.Converse OPUS: 20 ms packets, 48 kHz clock).
TEST(OpusPacketTest, RoundTripKeepsThePitch) {
  auto enc = OpusPacketEncoder::Create(48000, 32000, 10);
  ASSERT_TRUE(enc.ok()) << enc.status();
  auto dec = OpusPacketDecoder::Create(48000);
  ASSERT_TRUE(dec.ok()) << dec.status();
  EXPECT_EQ((*enc)->frame_samples(), 960);
  EXPECT_GT((*enc)->lookahead(), 0);

  const std::vector<int16_t> in = testing::Sine(48000, 440, 1.0, 0.5);
  std::vector<uint8_t> packet;
  std::vector<int16_t> out;
  for (size_t pos = 0; pos + 960 <= in.size(); pos += 960) {
    ASSERT_TRUE((*enc)
                    ->Encode(absl::MakeConstSpan(in).subspan(pos, 960), &packet)
                    .ok());
    absl::StatusOr<int> n = (*dec)->Decode(packet, &out);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 960);
  }
  ASSERT_EQ(out.size(), in.size());
  EXPECT_NEAR(testing::ZeroCrossingFrequency(testing::Middle(out), 48000), 440,
              2);
}

TEST(OpusPacketTest, ConcealRoundsUpTo2_5ms) {
  auto dec = OpusPacketDecoder::Create(16000);
  ASSERT_TRUE(dec.ok());
  std::vector<int16_t> out;
  absl::StatusOr<int> n = (*dec)->Conceal(50, &out);  // 2.5 ms = 40 samples
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 80);
  n = (*dec)->Conceal(16000 / 2, &out);  // 500 ms: more than one PLC call
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(out.size(), 80u + 8000u);
}

TEST(OpusPacketTest, RejectsBadInput) {
  EXPECT_FALSE(OpusPacketEncoder::Create(44100, 24000, 10).ok());
  EXPECT_FALSE(OpusPacketEncoder::Create(48000, 100, 10).ok());
  EXPECT_FALSE(OpusPacketDecoder::Create(22050).ok());
  auto enc = OpusPacketEncoder::Create(16000, 24000, 10);
  ASSERT_TRUE(enc.ok());
  std::vector<uint8_t> packet;
  EXPECT_FALSE((*enc)->Encode(std::vector<int16_t>(100), &packet).ok());
  auto dec = OpusPacketDecoder::Create(16000);
  ASSERT_TRUE(dec.ok());
  std::vector<int16_t> out;
  EXPECT_FALSE((*dec)->Decode({}, &out).ok());
  // TOC code 3 with a frame count of 0 is malformed.
  const std::vector<uint8_t> bad = {0x03, 0x00};
  EXPECT_FALSE((*dec)->Decode(bad, &out).ok());
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace bridge::audio
