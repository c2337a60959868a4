// Incremental Ogg/Opus voice-note encoder (RFC 7845): mono s16 PCM in, in any
// chunk sizes as an agent streams it; Ogg bytes out as pages fill.
//
// The stream: OpusHead (1 channel, pre-skip = encoder lookahead, the real
// input rate, gain 0, family 0) and OpusTags each on their own page; 20 ms
// VOIP frames; granule positions on the 48 kHz clock; the EOS page's granule
// is pre-skip + the exact input length, so decoders trim the padding. A page
// is flushed at least every second of audio so an upload can start early.
#ifndef BRIDGE_AUDIO_OGG_OPUS_ENCODER_H_
#define BRIDGE_AUDIO_OGG_OPUS_ENCODER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bridge::audio {

struct EncoderOptions {
  // 8000, 16000, 24000, 48000 (encoded natively), 22050, 44100 (resampled to
  // 24000 / 48000 first).
  int input_rate = 16000;
  // 24 kb/s sounds clean for voice and keeps 2 minutes of speech well under
  // WhatsApp's 512 KB inline-play limit (measured: 290-350 KB).
  int bitrate_bps = 24000;
  // 10 is the best quality, and fast enough: 120 s of speech encodes in about
  // 1.2 s on one core (5 only halves that), so no reason to trade quality.
  int complexity = 10;
  // Ogg stream serial number; unset picks a random one.
  std::optional<uint32_t> serial;
};

// Not thread-safe.
class OggOpusEncoder {
 public:
  // The header pages are ready in TakeBytes() right away.
  static absl::StatusOr<std::unique_ptr<OggOpusEncoder>> Create(
      const EncoderOptions& options);
  virtual ~OggOpusEncoder() = default;

  // Appends input samples (any count, including 0).
  virtual absl::Status Write(absl::Span<const int16_t> pcm) = 0;
  // End of input: encodes the rest, writes the EOS page. Call once.
  virtual absl::Status Finish() = 0;
  // The Ogg bytes produced since the last call (whole pages only).
  virtual std::string TakeBytes() = 0;

  // 48 kHz samples the decoder drops at the start (OpusHead pre-skip).
  virtual uint16_t pre_skip() const = 0;
  // Input samples written so far.
  virtual uint64_t samples_written() const = 0;
};

// Encodes a whole buffer in memory.
absl::StatusOr<std::string> EncodeOggOpus(absl::Span<const int16_t> pcm,
                                          const EncoderOptions& options);

}  // namespace bridge::audio

#endif  // BRIDGE_AUDIO_OGG_OPUS_ENCODER_H_
