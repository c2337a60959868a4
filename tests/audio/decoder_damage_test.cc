// The decoder on broken, odd and hand-made streams: every problem is typed,
// audio before the damage is kept, lost audio is concealed to the right length.
#include <opus/opus.h>

#include <random>

#include "audio/ogg_opus_decoder.h"
#include "audio_test_util.h"
#include "gtest/gtest.h"

namespace bridge::audio {
namespace {

using testing::DecodeWith;
using testing::Fixture;
using testing::PageInfo;
using testing::ReadPages;

std::vector<int16_t> Hello(int rate) {
  return DecodeWith(Fixture("voice_note_hello.ogg"), rate).pcm;
}

bool AnyContains(const std::vector<std::string>& lines, const std::string& s) {
  for (const std::string& line : lines) {
    if (line.find(s) != std::string::npos) return true;
  }
  return false;
}

bool IsPrefixOf(const std::vector<int16_t>& a, const std::vector<int16_t>& b) {
  return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

TEST(DecoderDamageTest, TruncatedNoteKeepsTheAudioItHolds) {
  const std::vector<uint8_t> file = Fixture("broken_truncated.ogg");
  for (int rate : {16000, 48000, 44100}) {
    SCOPED_TRACE(rate);
    const testing::DecodeResult r = DecodeWith(file, rate, 4096);
    EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kTruncated) << r.status;
    EXPECT_NE(r.status.message().find("truncated"), std::string::npos);
    // Two whole pages (2 s) plus the whole packets of the cut third page.
    EXPECT_GT(r.pcm.size(), size_t(2.5 * rate));
    EXPECT_LT(r.pcm.size(), size_t(3.0 * rate));
    EXPECT_TRUE(AnyContains(r.warnings, "unfinished last page"));
    // Same packets, same decoder: the very samples of the complete note.
    if (rate != 44100) {  // the resampler's tail differs at the cut
      EXPECT_TRUE(IsPrefixOf(r.pcm, Hello(rate)));
    }
  }
  EXPECT_EQ(ProblemOf(DecodeOggOpus(file, 16000).status()),
            DecodeProblem::kTruncated);
}

TEST(DecoderDamageTest, BitflipIsConcealedToTheRightLength) {
  const std::vector<uint8_t> file = Fixture("broken_bitflip.ogg");
  for (int rate : testing::AllRates()) {
    SCOPED_TRACE(rate);
    const testing::DecodeResult r = DecodeWith(file, rate);
    ASSERT_TRUE(r.status.ok()) << r.status;
    const std::vector<int16_t> hello = Hello(rate);
    EXPECT_EQ(r.pcm.size(), hello.size());
    EXPECT_TRUE(AnyContains(r.warnings, "CRC"));
    EXPECT_TRUE(AnyContains(r.warnings, "concealed 1.000 s"));
    // The page holding 2..3 s was lost; before it the audio is untouched.
    const size_t intact = size_t(1.9 * rate);
    EXPECT_TRUE(
        std::equal(r.pcm.begin(), r.pcm.begin() + intact, hello.begin()));
  }
}

TEST(DecoderDamageTest, RandomAndEmptyInputAreNotOgg) {
  for (const char* name : {"broken_random.ogg", "broken_empty.ogg"}) {
    SCOPED_TRACE(name);
    const testing::DecodeResult r = DecodeWith(Fixture(name), 16000);
    EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kNotOgg) << r.status;
    EXPECT_NE(r.status.message().find("not an Ogg/Opus voice note"),
              std::string::npos);
    EXPECT_TRUE(r.pcm.empty());
    EXPECT_FALSE(r.info.has_value());
  }
}

TEST(DecoderDamageTest, GivesUpOnGarbageEarly) {
  auto d = OggOpusDecoder::Create(16000);
  ASSERT_TRUE(d.ok());
  std::mt19937 rng(3);
  std::vector<uint8_t> chunk(4096);
  int pushed = 0;
  absl::Status status;
  while (status.ok() && pushed < 4096) {  // up to 16 MiB
    for (uint8_t& b : chunk) b = uint8_t(rng());
    status = (*d)->Push(chunk);
    ++pushed;
  }
  EXPECT_EQ(ProblemOf(status), DecodeProblem::kNotOgg);
  EXPECT_LE(pushed, 17);  // 64 KiB
}

// A hand-made Ogg stream whose BOS packet is Vorbis.
TEST(DecoderDamageTest, OtherCodecIsNotOpus) {
  testing::OggWriter w(42);
  w.Packet(std::string("\x01vorbis\0\0\0\0\x01\x44\xac\0\0", 16), 0, true);
  w.FlushPage();
  w.Packet("comments", 0);
  w.Packet("setup", 0);
  w.FlushPage();
  const testing::DecodeResult r = DecodeWith(w.bytes(), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kNotOpus) << r.status;
  EXPECT_NE(r.status.message().find("Vorbis"), std::string::npos);
}

std::vector<uint8_t> HeadersThen(const std::string& head,
                                 const std::string& second) {
  testing::OggWriter w(7);
  w.Packet(head, 0, true);
  w.FlushPage();
  w.Packet(second, 0);
  w.FlushPage();
  w.Packet(std::string("\xf8\xff\xfe", 3), 1272, false, true);
  w.FlushPage();
  return w.bytes();
}

TEST(DecoderDamageTest, BadHeadersAreTyped) {
  const std::string tags = testing::OpusTagsPacket();
  struct Case {
    const char* what;
    std::vector<uint8_t> file;
    DecodeProblem problem;
  } cases[] = {
      {"zero channels", HeadersThen(testing::OpusHeadPacket(0, 312), tags),
       DecodeProblem::kBadHeader},
      {"short OpusHead", HeadersThen("OpusHead\x01\x01", tags),
       DecodeProblem::kBadHeader},
      {"OpusTags missing",
       HeadersThen(testing::OpusHeadPacket(1, 312), "\xf8\xff\xfe"),
       DecodeProblem::kBadHeader},
      {"surround mapping",
       HeadersThen(testing::OpusHeadPacket(1, 312, 0, 1), tags),
       DecodeProblem::kUnsupported},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const testing::DecodeResult r = DecodeWith(c.file, 16000);
    EXPECT_EQ(ProblemOf(r.status), c.problem) << r.status;
  }

  std::vector<PageInfo> pages = ReadPages(Fixture("voice_note_hello.ogg"));
  std::vector<PageInfo> no_head(pages.begin() + 1, pages.end());
  testing::DecodeResult r = DecodeWith(testing::JoinPages(no_head), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kBadHeader) << r.status;
  EXPECT_NE(r.status.message().find("OpusHead"), std::string::npos);

  std::vector<PageInfo> only_head(pages.begin(), pages.begin() + 1);
  r = DecodeWith(testing::JoinPages(only_head), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kBadHeader) << r.status;

  std::string& head = pages[0].raw;
  head[28 + 8] = 16;  // OpusHead version 16: a new major version
  testing::FixCrc(&head);
  r = DecodeWith(testing::JoinPages(pages), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kUnsupported) << r.status;
}

TEST(DecoderDamageTest, ChainedStreamAfterTheFirstIsSkipped) {
  std::vector<uint8_t> file = Fixture("voice_note_hello.ogg");
  const std::vector<uint8_t> tone = Fixture("voice_note_tone_440hz.ogg");
  file.insert(file.end(), tone.begin(), tone.end());
  const testing::DecodeResult r = DecodeWith(file, 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.pcm, Hello(16000));
  EXPECT_TRUE(AnyContains(r.warnings, "chained Opus stream"));
}

TEST(DecoderDamageTest, MultiplexedStreamDecodesTheFirstOpus) {
  const std::vector<PageInfo> a = ReadPages(Fixture("voice_note_hello.ogg"));
  const std::vector<PageInfo> b =
      ReadPages(Fixture("voice_note_tone_440hz.ogg"));
  // Both BOS pages first (RFC 3533 grouping), then the rest interleaved.
  std::vector<PageInfo> mux = {a[0], b[0]};
  for (size_t i = 1; i < std::max(a.size(), b.size()); ++i) {
    if (i < a.size()) mux.push_back(a[i]);
    if (i < b.size()) mux.push_back(b[i]);
  }
  const testing::DecodeResult r = DecodeWith(testing::JoinPages(mux), 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.pcm, Hello(16000));
  EXPECT_TRUE(AnyContains(r.warnings, "multiplexed Opus stream"));
}

TEST(DecoderDamageTest, OutputGainIsApplied) {
  std::vector<PageInfo> pages = ReadPages(Fixture("voice_note_tone_440hz.ogg"));
  std::string& head = pages[0].raw;
  const int gain_q8 = 1541;  // +6.02 dB: twice the amplitude
  head[28 + 16] = char(gain_q8 & 0xff);
  head[28 + 17] = char(gain_q8 >> 8);
  testing::FixCrc(&head);
  const testing::DecodeResult louder =
      DecodeWith(testing::JoinPages(pages), 16000);
  ASSERT_TRUE(louder.status.ok()) << louder.status;
  EXPECT_EQ(louder.info->output_gain_q8, gain_q8);
  const testing::DecodeResult plain =
      DecodeWith(Fixture("voice_note_tone_440hz.ogg"), 16000);
  EXPECT_NEAR(testing::Rms(testing::Middle(louder.pcm)) /
                  testing::Rms(testing::Middle(plain.pcm)),
              2.0, 0.05);
}

TEST(DecoderDamageTest, LostPagesAreConcealed) {
  const std::vector<PageInfo> pages = ReadPages(Fixture("voice_note_long.ogg"));
  const testing::DecodeResult whole =
      DecodeWith(Fixture("voice_note_long.ogg"), 16000);
  for (size_t lost : {size_t(2), size_t(10), pages.size() - 2}) {
    SCOPED_TRACE(lost);
    std::vector<PageInfo> damaged = pages;
    damaged.erase(damaged.begin() + long(lost));
    const testing::DecodeResult r =
        DecodeWith(testing::JoinPages(damaged), 16000);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.pcm.size(), whole.pcm.size());
    EXPECT_TRUE(AnyContains(r.warnings, "concealed"));
  }
}

// Real Opus packets of every frame size, made with libopus directly.
std::vector<std::pair<std::string, int>> TonePackets(
    const std::vector<int>& frame_samples48) {
  int err = 0;
  OpusEncoder* enc =
      opus_encoder_create(48000, 1, OPUS_APPLICATION_AUDIO, &err);
  std::vector<std::pair<std::string, int>> packets;
  size_t pos = 0;
  const std::vector<int16_t> tone = testing::Sine(48000, 440, 10, 0.5);
  for (int n : frame_samples48) {
    unsigned char buf[4000];
    const int bytes = opus_encode(enc, tone.data() + pos, n, buf, sizeof buf);
    EXPECT_GT(bytes, 0) << "frame of " << n;
    packets.emplace_back(
        std::string(reinterpret_cast<char*>(buf), size_t(bytes)), n);
    pos += size_t(n);
  }
  opus_encoder_destroy(enc);
  return packets;
}

// An Opus stream from packets: pre-skip 312, first granule `start`, the last
// `trim` samples cut by the EOS granule, `per_page` packets a page.
std::vector<uint8_t> BuildStream(
    const std::vector<std::pair<std::string, int>>& packets, int64_t start,
    int64_t trim, size_t per_page) {
  testing::OggWriter w(99);
  w.Packet(testing::OpusHeadPacket(1, 312), 0, true);
  w.FlushPage();
  w.Packet(testing::OpusTagsPacket(), 0);
  w.FlushPage();
  int64_t granule = start;
  for (size_t i = 0; i < packets.size(); ++i) {
    granule += packets[i].second;
    const bool last = i + 1 == packets.size();
    w.Packet(packets[i].first, last ? granule - trim : granule, false, last);
    if ((i + 1) % per_page == 0) w.FlushPage();
  }
  w.FlushPage();
  return w.bytes();
}

TEST(DecoderDamageTest, EveryOpusFrameSizeGivesTheExactLength) {
  // 2.5, 5, 10, 20, 40, 60, 80, 100, 120 ms, twice over.
  std::vector<int> sizes = {120, 240, 480, 960, 1920, 2880, 3840, 4800, 5760};
  sizes.insert(sizes.end(), sizes.begin(), sizes.end());
  const auto packets = TonePackets(sizes);
  int64_t total = 0;
  for (int n : sizes) total += n;
  for (int64_t start : {int64_t(0), int64_t(48000 * 3)}) {
    const std::vector<uint8_t> file = BuildStream(packets, start, 500, 4);
    for (int rate : testing::AllRates()) {
      SCOPED_TRACE(std::to_string(start) + " at " + std::to_string(rate));
      const testing::DecodeResult r = DecodeWith(file, rate);
      ASSERT_TRUE(r.status.ok()) << r.status;
      EXPECT_TRUE(r.warnings.empty()) << r.warnings.front();
      EXPECT_EQ(int64_t(r.pcm.size()),
                ((total - 500 - 312) * rate + 24000) / 48000);
    }
  }
}

TEST(DecoderDamageTest, UndecodablePacketsAreConcealedThenRejected) {
  auto packets = TonePackets(std::vector<int>(100, 960));
  for (int i = 20; i < 25; ++i)
    packets[size_t(i)].first = std::string("\x03\x00", 2);
  testing::DecodeResult r = DecodeWith(BuildStream(packets, 0, 0, 10), 16000);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.pcm.size(), size_t((100 * 960 - 312) / 3));
  EXPECT_TRUE(AnyContains(r.warnings, "undecodable packet"));

  for (auto& p : packets) p.first = std::string("\x03\x00", 2);
  r = DecodeWith(BuildStream(packets, 0, 0, 10), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kCorrupt) << r.status;
}

TEST(DecoderDamageTest, WildGranuleJumpIsCorrupt) {
  std::vector<PageInfo> pages = ReadPages(Fixture("voice_note_hello.ogg"));
  std::string& raw = pages[4].raw;
  const int64_t hour = int64_t(48000) * 3600;
  for (int i = 0; i < 8; ++i)
    raw[6 + size_t(i)] = char((hour >> (8 * i)) & 0xff);
  testing::FixCrc(&raw);
  const testing::DecodeResult r = DecodeWith(testing::JoinPages(pages), 16000);
  EXPECT_EQ(ProblemOf(r.status), DecodeProblem::kCorrupt) << r.status;
}

// A smoke test for the fuzzer to come: mangled notes never crash or hang, and
// what they decode to stays bounded.
TEST(DecoderDamageTest, MangledNotesNeverCrash) {
  const std::vector<uint8_t> hello = Fixture("voice_note_hello.ogg");
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> file = hello;
    const int edits = 1 + int(rng() % 20);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % file.size();
      switch (rng() % 3) {
        case 0:
          file[at] = uint8_t(rng());
          break;
        case 1:
          file.erase(
              file.begin() + long(at),
              file.begin() + long(std::min(file.size(), at + rng() % 64)));
          break;
        default:
          file.insert(file.begin() + long(at), rng() % 64, uint8_t(rng()));
          break;
      }
      if (file.empty()) file.push_back(0);
    }
    const testing::DecodeResult r = DecodeWith(file, 16000, -2000, uint32_t(i));
    EXPECT_EQ(r.status.ok(), ProblemOf(r.status) == DecodeProblem::kNone);
    EXPECT_LT(r.pcm.size(), size_t(16000 * 70));
  }
}

}  // namespace
}  // namespace bridge::audio
