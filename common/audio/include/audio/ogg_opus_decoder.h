// Streaming Ogg/Opus (RFC 7845) decoder: push file bytes as they arrive, pull
// mono s16 PCM at the rate the consumer wants.
//
// What it honours: OpusHead (channel count: stereo is downmixed; pre-skip;
// output gain), granule positions (exact length, end trimming from the EOS
// page), Opus frames of 2.5..120 ms, lost or damaged pages (libogg drops a
// page that fails its CRC; the gap, known from the next page's granule
// position, is filled by packet loss concealment so the length stays right),
// chained or multiplexed files (the first Opus stream is decoded, the rest is
// skipped with a warning). A file cut short (no EOS page) keeps all the audio
// it holds, including whole packets of an unfinished last page.
//
// Output length: round((EOS granule - first granule - pre-skip) * rate /
// 48000).
#ifndef BRIDGE_AUDIO_OGG_OPUS_DECODER_H_
#define BRIDGE_AUDIO_OGG_OPUS_DECODER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace bridge::audio {

// What is wrong with an input; carried by the decoder's error statuses.
enum class DecodeProblem {
  kNone,
  kNotOgg,       // no Ogg page at all (empty, random bytes, another format)
  kNotOpus,      // Ogg, but the stream holds another codec (Vorbis, ...)
  kBadHeader,    // OpusHead / OpusTags missing or malformed
  kTruncated,    // no end-of-stream page; the audio before the cut is kept
  kCorrupt,      // damaged beyond repair (undecodable audio, wild granules)
  kUnsupported,  // valid but not handled (e.g. surround channel mapping)
};

// "none", "not_ogg", "not_opus", "bad_header", "truncated", "corrupt",
// "unsupported".
absl::string_view DecodeProblemName(DecodeProblem problem);
// The problem a decoder error carries; kNone for OK and for statuses that do
// not come from judging the input (bad arguments, misuse).
DecodeProblem ProblemOf(const absl::Status& status);

// From OpusHead and OpusTags.
struct StreamInfo {
  int channels = 0;            // coded channels; output is always mono
  uint32_t input_rate = 0;     // the original rate (informational; 0 unknown)
  uint16_t pre_skip = 0;       // 48 kHz samples dropped at the start
  int16_t output_gain_q8 = 0;  // dB in Q7.8
  int mapping_family = 0;
  std::string vendor;  // empty until OpusTags is read
};

// Output rates: 8000, 16000, 24000, 48000 (decoded natively by libopus) and
// 22050, 44100 (decoded at 48 kHz, then resampled).
bool IsSupportedPcmRate(int rate);

// Not thread-safe. Never crashes, hangs or grows without bound on bad input:
// leading garbage is given up on after 64 KiB; concealment is capped.
class OggOpusDecoder {
 public:
  static absl::StatusOr<std::unique_ptr<OggOpusDecoder>> Create(
      int output_rate);
  virtual ~OggOpusDecoder() = default;

  // Feeds the next bytes of the file (any size, including 0). Decoded audio
  // accumulates until Pull(). An error is final and is also returned by
  // every later call; audio decoded before it stays pullable.
  virtual absl::Status Push(absl::Span<const uint8_t> bytes) = 0;
  // End of input. OK for a complete stream (perhaps with warnings); kTruncated
  // when the end-of-stream page never came, and so on.
  virtual absl::Status Finish() = 0;
  // Moves the decoded PCM so far to the end of *out; returns the count.
  virtual size_t Pull(std::vector<int16_t>* out) = 0;

  // Once OpusHead has been read.
  virtual std::optional<StreamInfo> info() const = 0;
  // Non-fatal damage and skipped content, one line each (capped at 32).
  virtual const std::vector<std::string>& warnings() const = 0;
  // Ogg pages of the decoded Opus stream read so far.
  virtual uint64_t pages() const = 0;
  // Samples produced so far (pulled or not).
  virtual uint64_t samples() const = 0;
  virtual DecodeProblem problem() const = 0;
  virtual int output_rate() const = 0;
};

// Decodes a whole file held in memory. Any problem, truncation included, is an
// error; use OggOpusDecoder to keep the audio of a truncated file.
absl::StatusOr<std::vector<int16_t>> DecodeOggOpus(
    absl::Span<const uint8_t> file, int output_rate);

}  // namespace bridge::audio

#endif  // BRIDGE_AUDIO_OGG_OPUS_DECODER_H_
