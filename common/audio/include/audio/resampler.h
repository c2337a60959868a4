// Streaming sample-rate conversion of mono s16 PCM (speexdsp underneath).
//
// The output is aligned with the input (the filter delay is compensated) and,
// after Flush(), holds exactly round(total_in * out_rate / in_rate) samples, so
// lengths computed from granule positions stay exact across a rate change.
#ifndef BRIDGE_AUDIO_RESAMPLER_H_
#define BRIDGE_AUDIO_RESAMPLER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

struct SpeexResamplerState_;  // speex/speex_resampler.h

namespace bridge::audio {

class Resampler {
 public:
  // speexdsp quality 0..10. 3 is speexdsp's VOIP setting: clean for speech, and
  // at 48 -> 44.1 kHz it costs half of what 5 does (docs/benchmarks.md).
  static constexpr int kDefaultQuality = 3;

  // Rates in Hz, 1000..384000. Equal rates give a copying passthrough.
  static absl::StatusOr<std::unique_ptr<Resampler>> Create(
      int in_rate, int out_rate, int quality = kDefaultQuality);
  ~Resampler();

  // Appends the resampled form of `in` to *out (any chunk size, even 0).
  void Process(absl::Span<const int16_t> in, std::vector<int16_t>* out);
  // End of input: appends the tail held in the filter. Call once.
  void Flush(std::vector<int16_t>* out);

  int in_rate() const { return in_rate_; }
  int out_rate() const { return out_rate_; }

 private:
  struct StateDeleter {
    void operator()(SpeexResamplerState_* st) const;
  };
  Resampler(int in_rate, int out_rate, SpeexResamplerState_* st);
  void Run(const int16_t* in, int64_t n, std::vector<int16_t>* out);

  int in_rate_;
  int out_rate_;
  std::unique_ptr<SpeexResamplerState_, StateDeleter> st_;  // null: passthrough
  int64_t in_total_ = 0;
  int64_t out_total_ = 0;
};

}  // namespace bridge::audio

#endif  // BRIDGE_AUDIO_RESAMPLER_H_
