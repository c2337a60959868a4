// The decoder on the good voice notes: exact lengths, headers, pitch, level,
// downmix, and streaming in any chunk sizes.
#include "audio/ogg_opus_decoder.h"
#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

using testing::AllRates;
using testing::DecodeWith;
using testing::Fixture;
using testing::GoodNotes;

TEST(DecoderTest, GoodNotesDecodeToTheGranuleLengthAtEveryRate) {
  for (const std::string& name : GoodNotes()) {
    const std::vector<uint8_t> file = Fixture(name);
    for (int rate : AllRates()) {
      SCOPED_TRACE(name + " at " + std::to_string(rate));
      const testing::DecodeResult r = DecodeWith(file, rate);
      ASSERT_TRUE(r.status.ok()) << r.status;
      EXPECT_EQ(int64_t(r.pcm.size()), testing::ExpectedLength(file, rate));
      EXPECT_TRUE(r.warnings.empty()) << r.warnings.front();
      EXPECT_EQ(r.pages, testing::ReadPages(file).size());
    }
  }
}

// Known values, as `opusinfo` prints them.
TEST(DecoderTest, ReportsTheHeaders) {
  testing::DecodeResult r = DecodeWith(Fixture("voice_note_hello.ogg"), 48000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_TRUE(r.info.has_value());
  EXPECT_EQ(r.info->channels, 1);
  EXPECT_EQ(r.info->input_rate, 16000u);
  EXPECT_EQ(r.info->pre_skip, 312);
  EXPECT_EQ(r.info->output_gain_q8, 0);
  EXPECT_EQ(r.info->mapping_family, 0);
  EXPECT_EQ(r.info->vendor, "libopus 1.3.1, libopusenc 0.2.1");
  EXPECT_EQ(r.pcm.size(), 241179u - 312u);  // 5.018 s
  EXPECT_EQ(r.pages, 8u);

  r = DecodeWith(Fixture("voice_note_stereo_48k.ogg"), 48000);
  ASSERT_TRUE(r.info.has_value());
  EXPECT_EQ(r.info->channels, 2);
  EXPECT_EQ(r.info->input_rate, 48000u);
  EXPECT_EQ(r.pcm.size(), 96000u);
}

// The fixture is a 0.5-amplitude sine (-9.03 dBFS RMS).
TEST(DecoderTest, ToneKeepsPitchAndLevelAtEveryRate) {
  const std::vector<uint8_t> file = Fixture("voice_note_tone_440hz.ogg");
  for (int rate : AllRates()) {
    SCOPED_TRACE(rate);
    const testing::DecodeResult r = DecodeWith(file, rate);
    ASSERT_TRUE(r.status.ok()) << r.status;
    const std::vector<int16_t> mid = testing::Middle(r.pcm);
    EXPECT_NEAR(testing::ZeroCrossingFrequency(mid, rate), 440, 1);
    EXPECT_NEAR(testing::RmsDbfs(mid), -9.03, 0.5);
  }
}

// 440 Hz left + 660 Hz right: a mono downmix holds both, equally loud.
TEST(DecoderTest, StereoIsDownmixedToMono) {
  const testing::DecodeResult r =
      DecodeWith(Fixture("voice_note_stereo_48k.ogg"), 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  const std::vector<int16_t> mid = testing::Middle(r.pcm);
  const double left = testing::ToneLevel(mid, 16000, 440);
  const double right = testing::ToneLevel(mid, 16000, 660);
  const double between = testing::ToneLevel(mid, 16000, 550);
  EXPECT_GT(left, 0.01);
  EXPECT_GT(right, 0.01);
  EXPECT_NEAR(10 * std::log10(left / right), 0, 3);
  EXPECT_LT(between, left / 100);
}

TEST(DecoderTest, SilenceStaysSilent) {
  const testing::DecodeResult r =
      DecodeWith(Fixture("voice_note_silence.ogg"), 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.pcm.size(), 48000u);
  for (int16_t s : r.pcm) ASSERT_LE(std::abs(s), 16);
}

// A download arrives in arbitrary pieces: the result must not depend on them.
TEST(DecoderTest, StreamingInAnyChunksGivesTheSamePcm) {
  std::vector<std::string> files = GoodNotes();
  files.insert(files.end(), {"broken_truncated.ogg", "broken_bitflip.ogg",
                             "broken_random.ogg", "broken_empty.ogg"});
  for (const std::string& name : files) {
    const std::vector<uint8_t> file = Fixture(name);
    for (int rate : {16000, 44100}) {
      SCOPED_TRACE(name + " at " + std::to_string(rate));
      const testing::DecodeResult whole = DecodeWith(file, rate);
      for (int chunk : {1, 4096, -1, -700, -70000}) {
        const testing::DecodeResult part = DecodeWith(file, rate, chunk, 7);
        EXPECT_EQ(part.pcm, whole.pcm) << "chunk " << chunk;
        EXPECT_EQ(part.status, whole.status) << "chunk " << chunk;
        EXPECT_EQ(part.warnings, whole.warnings) << "chunk " << chunk;
      }
    }
  }
}

TEST(DecoderTest, PullDrainsAndAppends) {
  auto d = OggOpusDecoder::Create(16000);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*d)->Push(Fixture("voice_note_hello.ogg")).ok());
  std::vector<int16_t> out = {1, 2, 3};
  const size_t n = (*d)->Pull(&out);
  EXPECT_GT(n, 0u);
  EXPECT_EQ(out.size(), n + 3);
  EXPECT_EQ((*d)->Pull(&out), 0u);
  ASSERT_TRUE((*d)->Finish().ok());
  EXPECT_FALSE((*d)->Push(Fixture("voice_note_hello.ogg")).ok());
}

TEST(DecoderTest, ConvenienceFunctionMatchesTheStreamingDecoder) {
  const std::vector<uint8_t> file = Fixture("voice_note_hello.ogg");
  absl::StatusOr<std::vector<int16_t>> pcm = DecodeOggOpus(file, 24000);
  ASSERT_TRUE(pcm.ok()) << pcm.status();
  EXPECT_EQ(*pcm, DecodeWith(file, 24000, 333).pcm);
}

TEST(DecoderTest, RejectsUnsupportedRates) {
  EXPECT_FALSE(OggOpusDecoder::Create(11025).ok());
  EXPECT_FALSE(OggOpusDecoder::Create(0).ok());
  EXPECT_EQ(ProblemOf(OggOpusDecoder::Create(0).status()),
            DecodeProblem::kNone);
}

}  // namespace
}  // namespace bridge::audio
