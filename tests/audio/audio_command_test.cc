// `bridgectl audio info|decode|encode`, run in-process.
#include "bridgectl/audio_command.h"

#include <sstream>

#include "audio/ogg_opus_decoder.h"
#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::bridgectl {
namespace {

using audio::testing::Fixture;
using audio::testing::FixturePath;
using audio::testing::TempFile;

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

CliRun Audio(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = RunAudioCommand(args, out, err);
  return {code, out.str(), err.str()};
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(AudioCommandTest, InfoDescribesAGoodNote) {
  const CliRun r = Audio({"info", FixturePath("voice_note_hello.ogg")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "channels:     1\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "input rate:   16000 Hz\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "duration:     5.018 s")) << r.out;
  EXPECT_TRUE(Has(r.out, "pages:        8\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "pre-skip:     312 ")) << r.out;
  EXPECT_TRUE(Has(r.out, "output gain:  0.00 dB\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "problems:     none\n")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(AudioCommandTest, InfoJson) {
  CliRun r =
      Audio({"info", FixturePath("voice_note_stereo_48k.ogg"), "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "\"ok\":true,\"problem\":\"none\"")) << r.out;
  EXPECT_TRUE(
      Has(r.out, "\"channels\":2,\"input_rate\":48000,\"duration_s\":2.000"))
      << r.out;
  EXPECT_TRUE(Has(r.out, "\"warnings\":[]}")) << r.out;

  r = Audio({"info", "--json", FixturePath("broken_bitflip.ogg")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "\"warnings\":[\"skipped ")) << r.out;
}

TEST(AudioCommandTest, InfoOnBrokenFilesExitsOneWithAReason) {
  struct Case {
    const char* file;
    const char* reason;
  } cases[] = {{"broken_truncated.ogg", "truncated"},
               {"broken_random.ogg", "not an Ogg/Opus voice note"},
               {"broken_empty.ogg", "not an Ogg/Opus voice note"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const CliRun r = Audio({"info", FixturePath(c.file)});
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(Has(r.err, c.reason)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const CliRun r = Audio({"info", "/nonexistent/x.ogg"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Has(r.err, "cannot open")) << r.err;
}

TEST(AudioCommandTest, DecodeWritesWhatTheLibraryDecodes) {
  TempFile out(".s16le");
  const CliRun r = Audio({"decode", FixturePath("voice_note_hello.ogg"),
                          out.path(), "--rate", "22050"});
  EXPECT_EQ(r.code, 0) << r.err;
  absl::StatusOr<std::vector<int16_t>> expected =
      audio::DecodeOggOpus(Fixture("voice_note_hello.ogg"), 22050);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(audio::testing::ReadPcm(out.path()), *expected);
}

TEST(AudioCommandTest, DecodeOfATruncatedNoteKeepsItsAudio) {
  TempFile out(".s16le");
  const CliRun r = Audio({"decode", FixturePath("broken_truncated.ogg"),
                          out.path(), "--rate=16000"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Has(r.err, "truncated")) << r.err;
  EXPECT_GT(audio::testing::ReadPcm(out.path()).size(), 2u * 16000u);
}

TEST(AudioCommandTest, EncodeRoundTrips) {
  TempFile out(".ogg");
  const CliRun r =
      Audio({"encode", FixturePath("agent_reply_44k1.s16le"), out.path(),
             "--rate", "44100", "--bitrate", "32000", "--complexity", "5"});
  EXPECT_EQ(r.code, 0) << r.err;
  absl::StatusOr<std::vector<int16_t>> back =
      audio::DecodeOggOpus(audio::testing::ReadBytes(out.path()), 44100);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(
      back->size(),
      audio::testing::ReadPcm(FixturePath("agent_reply_44k1.s16le")).size());
}

TEST(AudioCommandTest, EncodeRejectsOddLengthPcm) {
  TempFile in(".s16le"), out(".ogg");
  audio::testing::WriteBytes(in.path(), std::vector<uint8_t>(4097, 0));
  const CliRun r = Audio({"encode", in.path(), out.path(), "--rate", "16000"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(Has(r.err, "odd byte count")) << r.err;
}

TEST(AudioCommandTest, BadUsageExitsTwo) {
  const std::string ogg = FixturePath("voice_note_hello.ogg");
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"play", ogg},
      {"info"},
      {"info", ogg, "--rate", "16000"},
      {"decode", ogg},
      {"decode", ogg, "x.s16le", "--rate", "11025"},
      {"decode", ogg, "x.s16le", "--rate"},
      {"encode", "x.s16le", "y.ogg"},
      {"encode", "x.s16le", "y.ogg", "--rate", "16000", "--complexity", "12"},
      {"encode", "x.s16le", "y.ogg", "--rate", "16000", "--bitrate", "fast"},
  };
  for (const auto& args : cases) {
    const CliRun r = Audio(args);
    EXPECT_EQ(r.code, 2) << (args.empty() ? "" : args[0]) << ": " << r.err;
    EXPECT_TRUE(Has(r.err, "usage:")) << r.err;
  }
}

}  // namespace
}  // namespace bridge::bridgectl
