#include "audio/ogg_opus_encoder.h"

#include <ogg/ogg.h>
#include <opus/opus.h>

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/opus_packet.h"
#include "audio/resampler.h"
#include "opus_header.h"

namespace bridge::audio {
namespace {

constexpr int64_t kRate48 = 48000;
// Flush a page at least this often (48 kHz units) so uploads can stream.
constexpr int64_t kMaxPageDuration48 = kRate48;

// 22.05 and 44.1 kHz are not Opus rates: encode at the next one up.
int EncodeRateFor(int input_rate) {
  if (input_rate == 22050) return 24000;
  if (input_rate == 44100) return 48000;
  return input_rate;
}

class OggOpusEncoderImpl final : public OggOpusEncoder {
 public:
  OggOpusEncoderImpl(const EncoderOptions& options,
                     std::unique_ptr<OpusPacketEncoder> opus,
                     std::unique_ptr<Resampler> resampler, uint32_t serial)
      : input_rate_(options.input_rate),
        opus_(std::move(opus)),
        resampler_(std::move(resampler)),
        samples48_per_frame_(kRate48 / 50),
        scale48_(kRate48 / opus_->sample_rate()),
        pre_skip_(uint16_t(opus_->lookahead() * scale48_)) {
    ogg_stream_init(&stream_, int(serial));
  }
  ~OggOpusEncoderImpl() override { ogg_stream_clear(&stream_); }

  void WriteHeaders();
  absl::Status Write(absl::Span<const int16_t> pcm) override;
  absl::Status Finish() override;
  std::string TakeBytes() override { return std::exchange(out_, {}); }
  uint16_t pre_skip() const override { return pre_skip_; }
  uint64_t samples_written() const override { return samples_written_; }

 private:
  absl::Status EncodeFrames(absl::Span<const int16_t> pcm);
  absl::Status EncodeFrame(absl::Span<const int16_t> frame, int64_t granule,
                           bool eos);
  void AppendPages(bool flush);

  const int input_rate_;
  std::unique_ptr<OpusPacketEncoder> opus_;
  std::unique_ptr<Resampler> resampler_;  // null when the rate is native
  const int64_t samples48_per_frame_;
  const int64_t scale48_;  // 48 kHz samples per encoder-rate sample
  const uint16_t pre_skip_;
  ogg_stream_state stream_;

  bool finished_ = false;
  uint64_t samples_written_ = 0;
  int64_t encoded_samples_ = 0;  // at the encoder rate, before padding
  int64_t frames_ = 0;
  int64_t last_page_granule_ = 0;  // of the last page written
  std::vector<int16_t> pending_;   // less than one frame, at the encoder rate
  std::vector<int16_t> resampled_;
  std::vector<uint8_t> packet_;
  std::string out_;
};

void OggOpusEncoderImpl::WriteHeaders() {
  StreamInfo head;
  head.channels = 1;
  head.pre_skip = pre_skip_;
  head.input_rate = uint32_t(input_rate_);
  std::string id = internal::BuildOpusHead(head);
  std::string tags = internal::BuildOpusTags(
      absl::StrCat("whatsapp-elevenlabs-bridge ", opus_get_version_string()));
  // RFC 7845: each header packet alone on its page, so flush after each.
  ogg_packet p = {};
  p.packet = reinterpret_cast<unsigned char*>(id.data());
  p.bytes = long(id.size());
  p.b_o_s = 1;
  ogg_stream_packetin(&stream_, &p);
  AppendPages(/*flush=*/true);
  p = {};
  p.packet = reinterpret_cast<unsigned char*>(tags.data());
  p.bytes = long(tags.size());
  p.packetno = 1;
  ogg_stream_packetin(&stream_, &p);
  AppendPages(/*flush=*/true);
}

absl::Status OggOpusEncoderImpl::Write(absl::Span<const int16_t> pcm) {
  if (finished_) return absl::FailedPreconditionError("Write after Finish");
  samples_written_ += pcm.size();
  if (!resampler_) return EncodeFrames(pcm);
  resampled_.clear();
  resampler_->Process(pcm, &resampled_);
  return EncodeFrames(resampled_);
}

// Cuts the stream into 20 ms frames; the remainder waits in pending_.
absl::Status OggOpusEncoderImpl::EncodeFrames(absl::Span<const int16_t> pcm) {
  encoded_samples_ += int64_t(pcm.size());
  const size_t frame = size_t(opus_->frame_samples());
  if (!pending_.empty()) {
    const size_t take = std::min(frame - pending_.size(), pcm.size());
    pending_.insert(pending_.end(), pcm.begin(), pcm.begin() + take);
    pcm.remove_prefix(take);
    if (pending_.size() < frame) return absl::OkStatus();
    if (absl::Status s = EncodeFrame(pending_, -1, false); !s.ok()) return s;
    pending_.clear();
  }
  for (; pcm.size() >= frame; pcm.remove_prefix(frame)) {
    if (absl::Status s = EncodeFrame(pcm.first(frame), -1, false); !s.ok()) {
      return s;
    }
  }
  pending_.assign(pcm.begin(), pcm.end());
  return absl::OkStatus();
}

// granule < 0: the frame's nominal end. Pages go out as they fill, and at
// least every kMaxPageDuration48.
absl::Status OggOpusEncoderImpl::EncodeFrame(absl::Span<const int16_t> frame,
                                             int64_t granule, bool eos) {
  if (absl::Status s = opus_->Encode(frame, &packet_); !s.ok()) return s;
  ++frames_;
  ogg_packet p = {};
  p.packet = packet_.data();
  p.bytes = long(packet_.size());
  p.e_o_s = eos;
  p.granulepos = granule >= 0 ? granule : frames_ * samples48_per_frame_;
  p.packetno = frames_ + 1;
  ogg_stream_packetin(&stream_, &p);
  AppendPages(eos || p.granulepos - last_page_granule_ >= kMaxPageDuration48);
  return absl::OkStatus();
}

void OggOpusEncoderImpl::AppendPages(bool flush) {
  ogg_page page;
  while (flush ? ogg_stream_flush(&stream_, &page)
               : ogg_stream_pageout(&stream_, &page)) {
    out_.append(reinterpret_cast<const char*>(page.header),
                size_t(page.header_len));
    out_.append(reinterpret_cast<const char*>(page.body),
                size_t(page.body_len));
    last_page_granule_ =
        std::max<int64_t>(last_page_granule_, ogg_page_granulepos(&page));
  }
}

// The decoder drops pre_skip samples of encoder delay, so the input must be
// padded with silence until the frames cover input + delay; the EOS granule
// then trims the padding off again.
absl::Status OggOpusEncoderImpl::Finish() {
  if (finished_) return absl::FailedPreconditionError("Finish called twice");
  finished_ = true;
  if (resampler_) {
    resampled_.clear();
    resampler_->Flush(&resampled_);
    if (absl::Status s = EncodeFrames(resampled_); !s.ok()) return s;
  }
  const int64_t frame = opus_->frame_samples();
  const int64_t needed = encoded_samples_ + opus_->lookahead();
  const int64_t total_frames =
      std::max((needed + frame - 1) / frame, frames_ + 1);
  const int64_t final_granule = pre_skip_ + encoded_samples_ * scale48_;
  pending_.resize(size_t(frame), 0);
  while (frames_ < total_frames) {
    const bool last = frames_ + 1 == total_frames;
    if (absl::Status s = EncodeFrame(pending_, last ? final_granule : -1, last);
        !s.ok()) {
      return s;
    }
    std::fill(pending_.begin(), pending_.end(), 0);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OggOpusEncoder>> OggOpusEncoder::Create(
    const EncoderOptions& options) {
  if (!IsSupportedPcmRate(options.input_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported PCM rate ", options.input_rate,
                     " Hz (use 8000, 16000, 22050, 24000, 44100 or 48000)"));
  }
  const int encode_rate = EncodeRateFor(options.input_rate);
  absl::StatusOr<std::unique_ptr<OpusPacketEncoder>> opus =
      OpusPacketEncoder::Create(encode_rate, options.bitrate_bps,
                                options.complexity);
  if (!opus.ok()) return opus.status();
  std::unique_ptr<Resampler> resampler;
  if (encode_rate != options.input_rate) {
    auto r = Resampler::Create(options.input_rate, encode_rate);
    if (!r.ok()) return r.status();
    resampler = *std::move(r);
  }
  const uint32_t serial =
      options.serial ? *options.serial : std::random_device()();
  auto encoder = std::make_unique<OggOpusEncoderImpl>(
      options, *std::move(opus), std::move(resampler), serial);
  encoder->WriteHeaders();
  return std::unique_ptr<OggOpusEncoder>(std::move(encoder));
}

absl::StatusOr<std::string> EncodeOggOpus(absl::Span<const int16_t> pcm,
                                          const EncoderOptions& options) {
  absl::StatusOr<std::unique_ptr<OggOpusEncoder>> encoder =
      OggOpusEncoder::Create(options);
  if (!encoder.ok()) return encoder.status();
  if (absl::Status s = (*encoder)->Write(pcm); !s.ok()) return s;
  if (absl::Status s = (*encoder)->Finish(); !s.ok()) return s;
  return (*encoder)->TakeBytes();
}

}  // namespace bridge::audio
