// Independent oracles from opus-tools: opusdec's decoding, opusinfo's checks.
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

using testing::RunCommand;
using testing::TempFile;

#define REQUIRE_PROGRAM(name)                                           \
  if (!testing::HaveProgram(name)) {                                    \
    GTEST_SKIP() << name " not installed (apt-get install opus-tools)"; \
  }

// opusdec output as mono (it keeps stereo streams stereo).
std::vector<int16_t> OpusdecMono(const std::string& ogg_path, int channels) {
  TempFile raw(".raw");
  const testing::CommandResult r =
      RunCommand("opusdec --quiet --rate 48000 --no-dither '" + ogg_path +
                 "' '" + raw.path() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<int16_t> pcm = testing::ReadPcm(raw.path());
  if (channels == 2) {
    for (size_t i = 0; i < pcm.size() / 2; ++i) {
      pcm[i] = int16_t((pcm[2 * i] + pcm[2 * i + 1]) / 2);
    }
    pcm.resize(pcm.size() / 2);
  }
  return pcm;
}

TEST(OracleTest, DecodingMatchesOpusdec) {
  REQUIRE_PROGRAM("opusdec");
  for (const std::string& name : testing::GoodNotes()) {
    SCOPED_TRACE(name);
    const testing::DecodeResult ours =
        testing::DecodeWith(testing::Fixture(name), 48000);
    ASSERT_TRUE(ours.status.ok()) << ours.status;
    const std::vector<int16_t> theirs =
        OpusdecMono(testing::FixturePath(name), ours.info->channels);
    EXPECT_EQ(ours.pcm.size(), theirs.size());
    if (name == "voice_note_silence.ogg") {
      EXPECT_LT(testing::Rms(ours.pcm), 4);
      EXPECT_LT(testing::Rms(theirs), 4);
    } else {
      EXPECT_GT(testing::SnrDb(theirs, ours.pcm), 30);
    }
  }
}

// opusdec stops at the last complete page; we keep more, but the same start.
TEST(OracleTest, TruncatedNoteStartsLikeOpusdec) {
  REQUIRE_PROGRAM("opusdec");
  const testing::DecodeResult ours =
      testing::DecodeWith(testing::Fixture("broken_truncated.ogg"), 48000);
  const std::vector<int16_t> theirs =
      OpusdecMono(testing::FixturePath("broken_truncated.ogg"), 1);
  EXPECT_EQ(theirs.size(), 96000u - 312u);
  ASSERT_GT(ours.pcm.size(), theirs.size());
  EXPECT_GT(testing::SnrDb(theirs, ours.pcm), 30);
}

TEST(OracleTest, OpusinfoAndOpusdecAcceptOurNotes) {
  REQUIRE_PROGRAM("opusinfo");
  REQUIRE_PROGRAM("opusdec");
  for (int rate : testing::AllRates()) {
    SCOPED_TRACE(rate);
    std::vector<int16_t> in = testing::Sine(rate, 440, 2.345, 0.4);
    EncoderOptions options;
    options.input_rate = rate;
    absl::StatusOr<std::string> ogg = EncodeOggOpus(in, options);
    ASSERT_TRUE(ogg.ok()) << ogg.status();
    TempFile file(".ogg");
    testing::WriteBytes(file.path(), testing::ToBytes(*ogg));

    const testing::CommandResult info =
        RunCommand("opusinfo '" + file.path() + "'");
    EXPECT_EQ(info.exit_code, 0) << info.output;
    EXPECT_EQ(info.output.find("WARNING"), std::string::npos) << info.output;
    EXPECT_EQ(info.output.find("ERROR"), std::string::npos) << info.output;
    EXPECT_NE(info.output.find("Playback length: 0m:02.34"), std::string::npos)
        << info.output;

    const std::vector<int16_t> decoded = OpusdecMono(file.path(), 1);
    const absl::StatusOr<std::vector<int16_t>> ours =
        DecodeOggOpus(testing::ToBytes(*ogg), 48000);
    ASSERT_TRUE(ours.ok()) << ours.status();
    EXPECT_EQ(decoded.size(), ours->size());
    EXPECT_GT(testing::SnrDb(decoded, *ours), 30);
  }
}

}  // namespace
}  // namespace bridge::audio
