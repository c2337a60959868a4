// Raw Opus packets without Ogg framing: thin wrappers over libopus for mono
// s16 PCM. Used by the Ogg/Opus encoder and decoder, and for streams that carry
// bare 20 ms packets on a 48 kHz clock (Media.Converse AUDIO_FORMAT_OPUS).
#ifndef BRIDGE_AUDIO_OPUS_PACKET_H_
#define BRIDGE_AUDIO_OPUS_PACKET_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

struct OpusEncoder;  // opus/opus.h
struct OpusDecoder;

namespace bridge::audio {

// True for the rates libopus encodes and decodes natively.
bool IsOpusRate(int rate);

// Encodes 20 ms mono frames with OPUS_APPLICATION_VOIP.
class OpusPacketEncoder {
 public:
  // sample_rate: 8000/16000/24000/48000 (12000 works too). bitrate
  // 6000..510000. complexity 0..10.
  static absl::StatusOr<std::unique_ptr<OpusPacketEncoder>> Create(
      int sample_rate, int bitrate_bps, int complexity);
  ~OpusPacketEncoder();
  OpusPacketEncoder(const OpusPacketEncoder&) = delete;
  OpusPacketEncoder& operator=(const OpusPacketEncoder&) = delete;

  int sample_rate() const { return sample_rate_; }
  int frame_samples() const { return sample_rate_ / 50; }  // 20 ms
  // Encoder delay in samples at sample_rate (the Ogg pre-skip, unscaled).
  int lookahead() const { return lookahead_; }

  // In-band FEC (LBRR): each packet also carries a coarse copy of the one
  // before it, sized for this loss rate (0..100). Costs bitrate, saves
  // speech on lossy mobile links; a call asks for it (useinbandfec=1).
  absl::Status EnableFec(int expected_loss_percent);
  // Encodes exactly frame_samples() samples; replaces *packet with the packet.
  absl::Status Encode(absl::Span<const int16_t> frame,
                      std::vector<uint8_t>* packet);

 private:
  OpusPacketEncoder(OpusEncoder* enc, int sample_rate, int lookahead);
  OpusEncoder* enc_;
  int sample_rate_;
  int lookahead_;
};

// Decodes packets of any Opus frame size (2.5..120 ms), mono or stereo, to
// mono (libopus downmixes when the decoder has one channel).
class OpusPacketDecoder {
 public:
  // sample_rate: 8000/12000/16000/24000/48000. gain_q8: OpusHead output gain
  // (dB in Q7.8), applied by libopus.
  static absl::StatusOr<std::unique_ptr<OpusPacketDecoder>> Create(
      int sample_rate, int gain_q8 = 0);
  ~OpusPacketDecoder();
  OpusPacketDecoder(const OpusPacketDecoder&) = delete;
  OpusPacketDecoder& operator=(const OpusPacketDecoder&) = delete;

  int sample_rate() const { return sample_rate_; }

  // Appends the packet's samples to *pcm; returns how many. An empty or
  // malformed packet is an error and appends nothing.
  absl::StatusOr<int> Decode(absl::Span<const uint8_t> packet,
                             std::vector<int16_t>* pcm);
  // Packet loss concealment: appends `samples` samples (rounded up to a
  // multiple of 2.5 ms) predicted from the audio so far; returns how many.
  absl::StatusOr<int> Conceal(int samples, std::vector<int16_t>* pcm);
  // A lost packet rebuilt from the in-band FEC of `next_packet` (the one
  // after it): appends `samples` samples (the lost packet's duration). A
  // packet without FEC data gives concealment instead.
  absl::StatusOr<int> DecodeFec(absl::Span<const uint8_t> next_packet, int samples,
                                std::vector<int16_t>* pcm);

 private:
  OpusPacketDecoder(OpusDecoder* dec, int sample_rate);
  OpusDecoder* dec_;
  int sample_rate_;
};

}  // namespace bridge::audio

#endif  // BRIDGE_AUDIO_OPUS_PACKET_H_
