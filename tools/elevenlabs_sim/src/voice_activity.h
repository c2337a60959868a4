// The simulated agent's ears: an energy voice-activity detector that ends a
// user turn after a run of silence (as the real service's VAD does, so long
// pauses inside a note end the turn early), and a description of what a turn
// really contained: its length, voiced time and dominant frequency.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace bridge::elevenlabs_sim {

struct TurnSummary {
  // The audio the user sent: from the first to the last non-zero sample
  // around the utterance. Digital zeros are padding (a client's trailing
  // silence), so a recorded note reports its own length.
  double duration_s = 0;
  double speech_s = 0;    // voiced frames only
  int peak_hz = 0;        // dominant frequency of the voiced audio
  std::string Describe() const;  // "[audio 3.00s, speech 2.98s, peak 440 Hz]"
};

class VoiceActivity {
 public:
  VoiceActivity(int sample_rate, int silence_ms);

  // Feeds PCM; returns a summary for each turn that ended inside it.
  std::vector<TurnSummary> Push(absl::Span<const int16_t> pcm);
  // True while a turn is open (the user is speaking or pausing briefly).
  bool in_turn() const { return in_turn_; }
  // True if the last frame pushed was voiced (the user is talking right now).
  bool voiced_now() const { return voiced_now_; }
  int64_t samples_received() const { return received_; }

 private:
  void Frame(absl::Span<const int16_t> frame, std::vector<TurnSummary>* ended);
  TurnSummary Summarise() const;

  const int rate_;
  const int frame_samples_;
  const int64_t silence_samples_;
  std::vector<int16_t> pending_;  // less than one frame
  bool in_turn_ = false;
  bool voiced_now_ = false;
  int64_t received_ = 0;
  int64_t frames_start_ = 0;       // absolute index of the frame being judged
  int64_t audio_start_ = -1;       // first non-zero sample since the last turn
  int64_t last_nonzero_ = -1;      // last non-zero sample seen
  int64_t voiced_samples_ = 0;
  int64_t silence_run_ = 0;
  std::vector<int16_t> pitch_window_;  // up to 1 s of voiced audio
};

// Strongest frequency in [60, 4000] Hz at 5 Hz resolution (Goertzel).
int DominantFrequency(absl::Span<const int16_t> pcm, int sample_rate);

}  // namespace bridge::elevenlabs_sim
