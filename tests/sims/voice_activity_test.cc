// The simulated agent's VAD and pitch estimate, on synthetic signals.
#include "voice_activity.h"

#include <cmath>

#include "gtest/gtest.h"

namespace bridge::elevenlabs_sim {
namespace {

std::vector<int16_t> Tone(int hz, double seconds, int rate, double amplitude = 8000) {
  std::vector<int16_t> out(static_cast<size_t>(seconds * rate));
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<int16_t>(amplitude * std::sin(2 * M_PI * hz * i / rate));
  }
  return out;
}

void Append(std::vector<int16_t>* a, const std::vector<int16_t>& b) {
  a->insert(a->end(), b.begin(), b.end());
}

TEST(DominantFrequencyTest, FindsTonesAtEveryRate) {
  for (int rate : {8000, 16000, 24000, 48000}) {
    EXPECT_EQ(DominantFrequency(Tone(440, 0.5, rate), rate), 440) << rate;
    EXPECT_EQ(DominantFrequency(Tone(1234, 0.5, rate), rate), 1235) << rate;  // 5 Hz grid
  }
  EXPECT_EQ(DominantFrequency({}, 16000), 0);
}

TEST(VoiceActivityTest, TurnEndsAfterTheConfiguredSilence) {
  VoiceActivity vad(16000, 600);
  std::vector<int16_t> pcm = Tone(440, 2.0, 16000);
  pcm.resize(pcm.size() + 16000 * 59 / 100, 0);  // 590 ms: not yet
  EXPECT_TRUE(vad.Push(pcm).empty());
  EXPECT_TRUE(vad.in_turn());
  std::vector<int16_t> more(16000 / 50, 0);  // 20 ms more: 610 ms of silence
  auto turns = vad.Push(more);
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_NEAR(turns[0].duration_s, 2.0, 0.021);
  EXPECT_NEAR(turns[0].speech_s, 2.0, 0.021);
  EXPECT_EQ(turns[0].peak_hz, 440);
  EXPECT_FALSE(vad.in_turn());
}

TEST(VoiceActivityTest, ShortPausesStayInsideOneTurnAndCountAsDuration) {
  VoiceActivity vad(16000, 600);
  std::vector<int16_t> pcm = Tone(300, 1.0, 16000);
  pcm.resize(pcm.size() + 16000 * 4 / 10, 0);  // 400 ms pause
  Append(&pcm, Tone(300, 1.0, 16000));
  pcm.resize(pcm.size() + 16000, 0);
  auto turns = vad.Push(pcm);
  ASSERT_EQ(turns.size(), 1u);
  EXPECT_NEAR(turns[0].duration_s, 2.4, 0.021);
  EXPECT_NEAR(turns[0].speech_s, 2.0, 0.021);
}

TEST(VoiceActivityTest, SilenceAndWhisperAreNoTurn) {
  VoiceActivity vad(16000, 600);
  std::vector<int16_t> pcm(16000 * 3, 0);
  Append(&pcm, Tone(440, 1.0, 16000, /*amplitude=*/100));
  EXPECT_TRUE(vad.Push(pcm).empty());
  EXPECT_FALSE(vad.in_turn());
  EXPECT_EQ(vad.samples_received(), static_cast<int64_t>(pcm.size()));
}

TEST(VoiceActivityTest, ChunkSizeDoesNotMatter) {
  std::vector<int16_t> pcm = Tone(440, 1.0, 16000);
  pcm.resize(pcm.size() + 16000, 0);
  VoiceActivity whole(16000, 600), pieces(16000, 600);
  auto a = whole.Push(pcm);
  std::vector<TurnSummary> b;
  for (size_t off = 0; off < pcm.size(); off += 7) {
    auto t = pieces.Push(absl::MakeConstSpan(pcm).subspan(off, std::min<size_t>(7, pcm.size() - off)));
    b.insert(b.end(), t.begin(), t.end());
  }
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].Describe(), b[0].Describe());
}

}  // namespace
}  // namespace bridge::elevenlabs_sim
