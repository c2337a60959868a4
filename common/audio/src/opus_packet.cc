#include "audio/opus_packet.h"

#include <opus/opus.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bridge::audio {
namespace {

// The longest Opus packet: 120 ms.
constexpr int kMaxPacketMs = 120;
// Large enough for any 20 ms frame at 510 kb/s.
constexpr int kMaxPacketBytes = 1500;

absl::Status OpusError(const char* what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", opus_strerror(err)));
}

}  // namespace

bool IsOpusRate(int rate) {
  return rate == 8000 || rate == 12000 || rate == 16000 || rate == 24000 ||
         rate == 48000;
}

OpusPacketEncoder::OpusPacketEncoder(OpusEncoder* enc, int sample_rate,
                                     int lookahead)
    : enc_(enc), sample_rate_(sample_rate), lookahead_(lookahead) {}

OpusPacketEncoder::~OpusPacketEncoder() { opus_encoder_destroy(enc_); }

absl::StatusOr<std::unique_ptr<OpusPacketEncoder>> OpusPacketEncoder::Create(
    int sample_rate, int bitrate_bps, int complexity) {
  if (!IsOpusRate(sample_rate) || bitrate_bps < 6000 || bitrate_bps > 510000 ||
      complexity < 0 || complexity > 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad Opus encoder settings: ", sample_rate, " Hz, ",
                     bitrate_bps, " b/s, complexity ", complexity));
  }
  int err = OPUS_OK;
  OpusEncoder* enc =
      opus_encoder_create(sample_rate, 1, OPUS_APPLICATION_VOIP, &err);
  if (err != OPUS_OK) return OpusError("opus_encoder_create", err);
  int lookahead = 0;
  if ((err = opus_encoder_ctl(enc, OPUS_SET_BITRATE(bitrate_bps))) != OPUS_OK ||
      (err = opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(complexity))) !=
          OPUS_OK ||
      (err = opus_encoder_ctl(enc, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE))) !=
          OPUS_OK ||
      (err = opus_encoder_ctl(enc, OPUS_GET_LOOKAHEAD(&lookahead))) !=
          OPUS_OK) {
    opus_encoder_destroy(enc);
    return OpusError("opus_encoder_ctl", err);
  }
  return std::unique_ptr<OpusPacketEncoder>(
      new OpusPacketEncoder(enc, sample_rate, lookahead));
}

absl::Status OpusPacketEncoder::Encode(absl::Span<const int16_t> frame,
                                       std::vector<uint8_t>* packet) {
  if (int(frame.size()) != frame_samples()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Opus frame must be ", frame_samples(), " samples, got ",
                     frame.size()));
  }
  packet->resize(kMaxPacketBytes);
  const opus_int32 n = opus_encode(enc_, frame.data(), frame_samples(),
                                   packet->data(), kMaxPacketBytes);
  if (n < 0) return OpusError("opus_encode", n);
  packet->resize(size_t(n));
  return absl::OkStatus();
}

OpusPacketDecoder::OpusPacketDecoder(OpusDecoder* dec, int sample_rate)
    : dec_(dec), sample_rate_(sample_rate) {}

OpusPacketDecoder::~OpusPacketDecoder() { opus_decoder_destroy(dec_); }

absl::StatusOr<std::unique_ptr<OpusPacketDecoder>> OpusPacketDecoder::Create(
    int sample_rate, int gain_q8) {
  if (!IsOpusRate(sample_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Opus cannot decode at ", sample_rate, " Hz"));
  }
  int err = OPUS_OK;
  // One output channel: libopus downmixes stereo packets itself.
  OpusDecoder* dec = opus_decoder_create(sample_rate, 1, &err);
  if (err != OPUS_OK) return OpusError("opus_decoder_create", err);
  if ((err = opus_decoder_ctl(dec, OPUS_SET_GAIN(gain_q8))) != OPUS_OK) {
    opus_decoder_destroy(dec);
    return OpusError("OPUS_SET_GAIN", err);
  }
  return std::unique_ptr<OpusPacketDecoder>(
      new OpusPacketDecoder(dec, sample_rate));
}

absl::StatusOr<int> OpusPacketDecoder::Decode(absl::Span<const uint8_t> packet,
                                              std::vector<int16_t>* pcm) {
  // opus_decode() reads a zero-length packet as "lost": callers must say so
  // explicitly with Conceal().
  if (packet.empty()) return absl::InvalidArgumentError("empty Opus packet");
  const int max_samples = sample_rate_ / 1000 * kMaxPacketMs;
  const size_t base = pcm->size();
  pcm->resize(base + size_t(max_samples));
  const int n = opus_decode(dec_, packet.data(), opus_int32(packet.size()),
                            pcm->data() + base, max_samples, 0);
  pcm->resize(base + size_t(std::max(n, 0)));
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad Opus packet: ", opus_strerror(n)));
  }
  return n;
}

absl::StatusOr<int> OpusPacketDecoder::Conceal(int samples,
                                               std::vector<int16_t>* pcm) {
  const int step = sample_rate_ / 400;  // 2.5 ms
  const int max_chunk = sample_rate_ / 1000 * kMaxPacketMs;
  int left = (std::max(samples, 0) + step - 1) / step * step;
  const int total = left;
  while (left > 0) {
    const int chunk = std::min(left, max_chunk);
    const size_t base = pcm->size();
    pcm->resize(base + size_t(chunk));
    const int n = opus_decode(dec_, nullptr, 0, pcm->data() + base, chunk, 0);
    if (n != chunk) {
      pcm->resize(base);
      return OpusError("opus_decode (concealment)",
                       n < 0 ? n : OPUS_INTERNAL_ERROR);
    }
    left -= chunk;
  }
  return total;
}

absl::StatusOr<int> OpusPacketDecoder::DecodeFec(absl::Span<const uint8_t> next_packet,
                                                 int samples, std::vector<int16_t>* pcm) {
  if (next_packet.empty()) return absl::InvalidArgumentError("empty Opus packet");
  const int step = sample_rate_ / 400;
  const int n_want = (std::max(samples, step) + step - 1) / step * step;
  const size_t base = pcm->size();
  pcm->resize(base + size_t(n_want));
  // decode_fec=1: the packet's in-band redundancy for the frame before it;
  // without any, libopus conceals instead (same length either way).
  const int n = opus_decode(dec_, next_packet.data(), opus_int32(next_packet.size()),
                            pcm->data() + base, n_want, 1);
  if (n != n_want) {
    pcm->resize(base);
    return OpusError("opus_decode (fec)", n < 0 ? n : OPUS_INTERNAL_ERROR);
  }
  return n;
}

absl::Status OpusPacketEncoder::EnableFec(int expected_loss_percent) {
  int err;
  if ((err = opus_encoder_ctl(enc_, OPUS_SET_INBAND_FEC(1))) != OPUS_OK ||
      (err = opus_encoder_ctl(enc_, OPUS_SET_PACKET_LOSS_PERC(expected_loss_percent))) !=
          OPUS_OK) {
    return OpusError("opus_encoder_ctl (fec)", err);
  }
  return absl::OkStatus();
}

}  // namespace bridge::audio
