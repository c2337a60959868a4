#include "audio/resampler.h"

#include <random>

#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

using testing::Sine;

std::vector<int16_t> ResampleInChunks(int in_rate, int out_rate,
                                      const std::vector<int16_t>& in,
                                      uint32_t seed) {
  auto r = Resampler::Create(in_rate, out_rate);
  EXPECT_TRUE(r.ok()) << r.status();
  std::mt19937 rng(seed);
  std::vector<int16_t> out;
  size_t pos = 0;
  while (pos < in.size()) {
    // seed 0: one call; otherwise random chunks of 0..3000 samples.
    const size_t n = seed == 0 ? in.size() : rng() % 3001;
    const size_t take = std::min(n, in.size() - pos);
    (*r)->Process(absl::MakeConstSpan(in).subspan(pos, take), &out);
    pos += take;
  }
  (*r)->Flush(&out);
  return out;
}

TEST(ResamplerTest, EqualRatesPassThrough) {
  const std::vector<int16_t> in = Sine(16000, 440, 0.5, 0.5);
  EXPECT_EQ(ResampleInChunks(16000, 16000, in, 0), in);
}

TEST(ResamplerTest, LengthIsExactAndChunkingDoesNotMatter) {
  const std::pair<int, int> pairs[] = {{22050, 24000}, {44100, 48000},
                                       {48000, 44100}, {48000, 22050},
                                       {16000, 48000}, {48000, 8000}};
  for (const auto& [in_rate, out_rate] : pairs) {
    SCOPED_TRACE(std::to_string(in_rate) + "->" + std::to_string(out_rate));
    const std::vector<int16_t> in = Sine(in_rate, 300, 1.2345, 0.5);
    const std::vector<int16_t> whole =
        ResampleInChunks(in_rate, out_rate, in, 0);
    const int64_t expected =
        (int64_t(in.size()) * out_rate + in_rate / 2) / in_rate;
    EXPECT_EQ(int64_t(whole.size()), expected);
    EXPECT_EQ(ResampleInChunks(in_rate, out_rate, in, 1), whole);
    EXPECT_EQ(ResampleInChunks(in_rate, out_rate, in, 2), whole);
  }
}

// The filter delay is compensated: the output lines up with an ideal sine at
// the new rate, not just sounds like one.
TEST(ResamplerTest, OutputIsTimeAligned) {
  const std::vector<int16_t> in = Sine(48000, 440, 1.0, 0.5);
  const std::vector<int16_t> out = ResampleInChunks(48000, 44100, in, 1);
  const std::vector<int16_t> ideal = Sine(44100, 440, 1.0, 0.5);
  ASSERT_EQ(out.size(), ideal.size());
  EXPECT_GT(testing::SnrDb(testing::Middle(ideal), testing::Middle(out)), 30);
}

TEST(ResamplerTest, EmptyInputGivesEmptyOutput) {
  EXPECT_TRUE(ResampleInChunks(22050, 24000, {}, 0).empty());
}

TEST(ResamplerTest, RejectsBadRates) {
  EXPECT_FALSE(Resampler::Create(0, 48000).ok());
  EXPECT_FALSE(Resampler::Create(48000, -1).ok());
  EXPECT_FALSE(Resampler::Create(48000, 44100, 11).ok());
}

}  // namespace
}  // namespace bridge::audio
