#include "voice_activity.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace bridge::elevenlabs_sim {
namespace {
// About -36 dBFS: espeak speech and tones are far above, Opus-coded digital
// silence far below.
constexpr double kVoicedRms = 500.0;
constexpr int kFrameMs = 20;

double Rms(absl::Span<const int16_t> frame) {
  double sum = 0;
  for (int16_t s : frame) sum += static_cast<double>(s) * s;
  return frame.empty() ? 0 : std::sqrt(sum / static_cast<double>(frame.size()));
}
}  // namespace

std::string TurnSummary::Describe() const {
  return absl::StrFormat("[audio %.2fs, speech %.2fs, peak %d Hz]", duration_s, speech_s, peak_hz);
}

VoiceActivity::VoiceActivity(int sample_rate, int silence_ms)
    : rate_(sample_rate),
      frame_samples_(sample_rate * kFrameMs / 1000),
      silence_samples_(static_cast<int64_t>(sample_rate) * silence_ms / 1000) {}

std::vector<TurnSummary> VoiceActivity::Push(absl::Span<const int16_t> pcm) {
  std::vector<TurnSummary> ended;
  received_ += static_cast<int64_t>(pcm.size());
  size_t i = 0;
  if (!pending_.empty()) {
    size_t need = static_cast<size_t>(frame_samples_) - pending_.size();
    size_t take = std::min(need, pcm.size());
    pending_.insert(pending_.end(), pcm.begin(), pcm.begin() + static_cast<ptrdiff_t>(take));
    i = take;
    if (pending_.size() < static_cast<size_t>(frame_samples_)) return ended;
    Frame(pending_, &ended);
    pending_.clear();
  }
  for (; i + frame_samples_ <= pcm.size(); i += frame_samples_) {
    Frame(pcm.subspan(i, frame_samples_), &ended);
  }
  pending_.assign(pcm.begin() + static_cast<ptrdiff_t>(i), pcm.end());
  return ended;
}

void VoiceActivity::Frame(absl::Span<const int16_t> frame, std::vector<TurnSummary>* ended) {
  const int64_t n = static_cast<int64_t>(frame.size());
  const int64_t base = frames_start_;
  frames_start_ += n;
  for (int64_t i = 0; i < n; ++i) {
    if (frame[i] == 0) continue;
    if (audio_start_ < 0) audio_start_ = base + i;
    last_nonzero_ = base + i;
  }
  voiced_now_ = Rms(frame) >= kVoicedRms;
  if (!in_turn_) {
    if (!voiced_now_) return;
    in_turn_ = true;
    voiced_samples_ = silence_run_ = 0;
    pitch_window_.clear();
  }
  if (voiced_now_) {
    voiced_samples_ += n;
    silence_run_ = 0;
    if (pitch_window_.size() < static_cast<size_t>(rate_)) {
      pitch_window_.insert(pitch_window_.end(), frame.begin(), frame.end());
    }
    return;
  }
  silence_run_ += n;
  if (silence_run_ >= silence_samples_) {
    ended->push_back(Summarise());
    in_turn_ = false;
    audio_start_ = -1;
  }
}

TurnSummary VoiceActivity::Summarise() const {
  TurnSummary s;
  s.duration_s = static_cast<double>(last_nonzero_ - audio_start_ + 1) / rate_;
  s.speech_s = static_cast<double>(voiced_samples_) / rate_;
  s.peak_hz = DominantFrequency(pitch_window_, rate_);
  return s;
}

int DominantFrequency(absl::Span<const int16_t> pcm, int sample_rate) {
  // At most half a second keeps this cheap at 48 kHz (≈ 20 M multiply-adds).
  const size_t n = std::min(pcm.size(), static_cast<size_t>(sample_rate / 2));
  if (n < 64) return 0;
  double best_power = 0;
  int best_hz = 0;
  for (int hz = 60; hz <= 4000 && hz < sample_rate / 2; hz += 5) {
    const double coeff = 2.0 * std::cos(2.0 * M_PI * hz / sample_rate);
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; ++i) {
      double s0 = pcm[i] + coeff * s1 - s2;
      s2 = s1;
      s1 = s0;
    }
    double power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if (power > best_power) {
      best_power = power;
      best_hz = hz;
    }
  }
  return best_hz;
}

}  // namespace bridge::elevenlabs_sim
