// The encoder: RFC 7845 framing checked with plain libogg, exact round-trip
// lengths at every rate, streaming output, WhatsApp's size limit.
#include <opus/opus.h>

#include <random>

#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

using testing::PageInfo;

uint32_t Le32(const std::string& s, size_t at) {
  return uint8_t(s[at]) | uint8_t(s[at + 1]) << 8 | uint8_t(s[at + 2]) << 16 |
         uint32_t(uint8_t(s[at + 3])) << 24;
}

// A tone with a little noise: speech-like enough to exercise the encoder.
std::vector<int16_t> TestSignal(int rate, double seconds) {
  std::vector<int16_t> pcm = testing::Sine(rate, 440, seconds, 0.4);
  std::mt19937 rng(5);
  for (int16_t& s : pcm) s = int16_t(s + int(rng() % 601) - 300);
  return pcm;
}

std::string EncodeInChunks(const std::vector<int16_t>& pcm,
                           const EncoderOptions& options, uint32_t seed) {
  auto enc = OggOpusEncoder::Create(options);
  EXPECT_TRUE(enc.ok()) << enc.status();
  std::mt19937 rng(seed);
  std::string out;
  for (size_t pos = 0; pos < pcm.size();) {
    const size_t n = std::min<size_t>(pcm.size() - pos, rng() % 5000);
    EXPECT_TRUE((*enc)->Write(absl::MakeConstSpan(pcm).subspan(pos, n)).ok());
    out += (*enc)->TakeBytes();
    pos += n;
  }
  EXPECT_TRUE((*enc)->Finish().ok());
  return out + (*enc)->TakeBytes();
}

// The 48 kHz length the EOS granule must give for n input samples.
int64_t Length48(int64_t n, int rate) {
  if (rate == 22050) return 2 * ((n * 24000 + rate / 2) / rate);  // via 24 kHz
  if (rate == 44100) return (n * 48000 + rate / 2) / rate;        // via 48 kHz
  return n * 48000 / rate;
}

TEST(EncoderTest, StreamFollowsRfc7845AtEveryRate) {
  for (int rate : testing::AllRates()) {
    SCOPED_TRACE(rate);
    const std::vector<int16_t> in = TestSignal(rate, 3.7);
    EncoderOptions options;
    options.input_rate = rate;
    const std::string ogg = EncodeInChunks(in, options, 1);
    const std::vector<PageInfo> pages =
        testing::ReadPages(testing::ToBytes(ogg));
    ASSERT_GE(pages.size(), 4u);

    // OpusHead alone on the BOS page, then OpusTags alone on the next.
    ASSERT_TRUE(pages[0].bos);
    ASSERT_EQ(pages[0].packet_data.size(), 1u);
    const std::string& head = pages[0].packet_data[0];
    ASSERT_EQ(head.size(), 19u);
    EXPECT_EQ(head.substr(0, 8), "OpusHead");
    EXPECT_EQ(head[8], 1);  // version
    EXPECT_EQ(head[9], 1);  // channels
    const int pre_skip = uint8_t(head[10]) | uint8_t(head[11]) << 8;
    EXPECT_GT(pre_skip, 0);
    EXPECT_EQ(Le32(head, 12), uint32_t(rate));  // the real input rate
    EXPECT_EQ(head[16], 0);                     // gain
    EXPECT_EQ(head[17], 0);
    EXPECT_EQ(head[18], 0);  // mapping family
    ASSERT_EQ(pages[1].packet_data.size(), 1u);
    EXPECT_EQ(pages[1].packet_data[0].substr(0, 8), "OpusTags");
    EXPECT_NE(
        pages[1].packet_data[0].find("whatsapp-elevenlabs-bridge libopus"),
        std::string::npos);
    EXPECT_EQ(pages[0].granule, 0);
    EXPECT_EQ(pages[1].granule, 0);

    // Audio pages: 20 ms packets, granules rising, at most ~1 s apart.
    int64_t previous = 0;
    for (size_t i = 2; i < pages.size(); ++i) {
      EXPECT_FALSE(pages[i].bos);
      EXPECT_EQ(pages[i].eos, i + 1 == pages.size());
      EXPECT_GT(pages[i].granule, previous);
      EXPECT_LE(pages[i].granule - previous, 48000);
      for (const std::string& p : pages[i].packet_data) {
        EXPECT_EQ(opus_packet_get_nb_samples(
                      reinterpret_cast<const unsigned char*>(p.data()),
                      int(p.size()), 48000),
                  960);
      }
      previous = pages[i].granule;
    }
    EXPECT_EQ(pages.back().granule,
              pre_skip + Length48(int64_t(in.size()), rate));

    // Decoded at the input rate: exactly as long as the input.
    absl::StatusOr<std::vector<int16_t>> out =
        DecodeOggOpus(testing::ToBytes(ogg), rate);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->size(), in.size());
    EXPECT_NEAR(testing::ZeroCrossingFrequency(testing::Middle(*out), rate),
                440, 2);
  }
}

TEST(EncoderTest, ChunkingDoesNotChangeTheBytes) {
  for (const char* name : {"agent_reply_16k.s16le", "agent_reply_24k.s16le",
                           "agent_reply_44k1.s16le"}) {
    SCOPED_TRACE(name);
    const std::vector<int16_t> in =
        testing::ReadPcm(testing::FixturePath(name));
    EncoderOptions options;
    options.input_rate =
        std::string(name).find("44k1") != std::string::npos  ? 44100
        : std::string(name).find("24k") != std::string::npos ? 24000
                                                             : 16000;
    options.serial = 1234;
    absl::StatusOr<std::string> whole = EncodeOggOpus(in, options);
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_EQ(EncodeInChunks(in, options, 2), *whole);
    absl::StatusOr<std::vector<int16_t>> out =
        DecodeOggOpus(testing::ToBytes(*whole), options.input_rate);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->size(), in.size());
    EXPECT_NEAR(double(in.size()) / options.input_rate, 5.75, 0.01);
  }
}

TEST(EncoderTest, ToneSurvivesDecodeEncodeDecode) {
  absl::StatusOr<std::vector<int16_t>> first =
      DecodeOggOpus(testing::Fixture("voice_note_tone_440hz.ogg"), 16000);
  ASSERT_TRUE(first.ok()) << first.status();
  EncoderOptions options;
  absl::StatusOr<std::string> ogg = EncodeOggOpus(*first, options);
  ASSERT_TRUE(ogg.ok()) << ogg.status();
  absl::StatusOr<std::vector<int16_t>> second =
      DecodeOggOpus(testing::ToBytes(*ogg), 16000);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->size(), first->size());
  const std::vector<int16_t> mid = testing::Middle(*second);
  EXPECT_NEAR(testing::ZeroCrossingFrequency(mid, 16000), 440, 1);
  EXPECT_NEAR(testing::RmsDbfs(mid), testing::RmsDbfs(testing::Middle(*first)),
              1.0);
}

// WhatsApp plays voice notes inline only under 512 KB.
TEST(EncoderTest, TwoMinutesOfSpeechFitWhatsAppsInlineLimit) {
  for (int rate : {16000, 48000}) {
    SCOPED_TRACE(rate);
    absl::StatusOr<std::vector<int16_t>> speech =
        DecodeOggOpus(testing::Fixture("voice_note_long.ogg"), rate);
    ASSERT_TRUE(speech.ok()) << speech.status();
    std::vector<int16_t> two_minutes;
    while (two_minutes.size() < size_t(120 * rate)) {
      two_minutes.insert(two_minutes.end(), speech->begin(), speech->end());
    }
    two_minutes.resize(size_t(120 * rate));
    EncoderOptions options;
    options.input_rate = rate;
    absl::StatusOr<std::string> ogg = EncodeOggOpus(two_minutes, options);
    ASSERT_TRUE(ogg.ok()) << ogg.status();
    EXPECT_LT(ogg->size(), 512u * 1024u);
  }
}

// An upload can start before the reply ends: pages come out as audio goes in.
TEST(EncoderTest, PagesAreReadyWhileStreaming) {
  EncoderOptions options;
  auto enc = OggOpusEncoder::Create(options);
  ASSERT_TRUE(enc.ok());
  const std::vector<PageInfo> headers =
      testing::ReadPages(testing::ToBytes((*enc)->TakeBytes()));
  ASSERT_EQ(headers.size(), 2u);
  const std::vector<int16_t> in = TestSignal(16000, 1.5);
  ASSERT_TRUE((*enc)->Write(in).ok());
  const std::vector<PageInfo> early =
      testing::ReadPages(testing::ToBytes((*enc)->TakeBytes()));
  ASSERT_EQ(early.size(), 1u);
  EXPECT_EQ(early[0].granule, 48000);
  EXPECT_FALSE(early[0].eos);
  EXPECT_EQ((*enc)->samples_written(), in.size());
  ASSERT_TRUE((*enc)->Finish().ok());
  EXPECT_FALSE((*enc)->Finish().ok());
  EXPECT_FALSE((*enc)->Write(in).ok());
}

TEST(EncoderTest, EmptyInputMakesAnEmptyNote) {
  EncoderOptions options;
  absl::StatusOr<std::string> ogg = EncodeOggOpus({}, options);
  ASSERT_TRUE(ogg.ok()) << ogg.status();
  const testing::DecodeResult r =
      testing::DecodeWith(testing::ToBytes(*ogg), 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(r.pcm.empty());
}

TEST(EncoderTest, RejectsBadOptions) {
  EncoderOptions options;
  options.input_rate = 11025;
  EXPECT_FALSE(OggOpusEncoder::Create(options).ok());
  options.input_rate = 16000;
  options.bitrate_bps = 100;
  EXPECT_FALSE(OggOpusEncoder::Create(options).ok());
  options.bitrate_bps = 24000;
  options.complexity = 11;
  EXPECT_FALSE(OggOpusEncoder::Create(options).ok());
}

}  // namespace
}  // namespace bridge::audio
