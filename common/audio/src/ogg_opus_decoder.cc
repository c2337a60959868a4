#include "audio/ogg_opus_decoder.h"

#include <ogg/ogg.h>
#include <opus/opus.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "audio/opus_packet.h"
#include "audio/resampler.h"
#include "opus_header.h"

namespace bridge::audio {
namespace {

using internal::ProblemStatus;

constexpr int64_t kRate48 = 48000;
// Input is handed to libogg in slices this big, so its buffer stays small
// however large the caller's chunks are.
constexpr size_t kSliceBytes = 64 * 1024;
// Garbage before the first page: any real Ogg file starts with one at byte 0,
// so 64 KiB without a page means this is not Ogg at all.
constexpr int64_t kMaxLeadingGarbage = 64 * 1024;
// Garbage between pages: more than any page (65307 bytes) can explain.
constexpr int64_t kMaxGarbageRun = 1 << 20;
// Concealment limits: a 28-byte page must not be able to ask for hours of PLC.
constexpr int64_t kMaxGap48 = 10 * kRate48;
constexpr int64_t kMaxConcealed48 = 60 * kRate48;
// Undecodable packets in a row before the audio is judged garbage.
constexpr int kMaxBadPacketRun = 50;
constexpr size_t kMaxWarnings = 32;
// PLC works in multiples of 2.5 ms.
constexpr int64_t kPlcStep48 = 120;

int64_t Scale(int64_t samples48, int64_t rate) {
  return (samples48 * rate + kRate48 / 2) / kRate48;  // rounded
}

std::string Seconds(int64_t samples48) {
  return absl::StrFormat("%.3f s", double(samples48) / kRate48);
}

absl::Span<const uint8_t> PacketBytes(const ogg_packet& p) {
  return {p.packet, size_t(p.bytes)};
}

absl::Span<const uint8_t> FirstPacketOf(const ogg_page& page) {
  return {page.body, size_t(page.body_len)};
}

class OggOpusDecoderImpl final : public OggOpusDecoder {
 public:
  explicit OggOpusDecoderImpl(int output_rate)
      : output_rate_(output_rate),
        decode_rate_(IsOpusRate(output_rate) ? output_rate : int(kRate48)) {
    ogg_sync_init(&sync_);
    ogg_stream_init(&stream_, 0);
  }
  ~OggOpusDecoderImpl() override {
    ogg_sync_clear(&sync_);
    ogg_stream_clear(&stream_);
  }

  absl::Status Init() {
    if (decode_rate_ == output_rate_) return absl::OkStatus();
    auto resampler = Resampler::Create(decode_rate_, output_rate_);
    if (!resampler.ok()) return resampler.status();
    resampler_ = *std::move(resampler);
    return absl::OkStatus();
  }

  absl::Status Push(absl::Span<const uint8_t> bytes) override;
  absl::Status Finish() override;
  size_t Pull(std::vector<int16_t>* out) override {
    const size_t n = pcm_.size();
    if (out->empty()) {
      out->swap(pcm_);
    } else {
      out->insert(out->end(), pcm_.begin(), pcm_.end());
    }
    pcm_.clear();
    return n;
  }
  std::optional<StreamInfo> info() const override { return info_; }
  const std::vector<std::string>& warnings() const override {
    return warnings_;
  }
  uint64_t pages() const override { return pages_; }
  uint64_t samples() const override { return samples_; }
  DecodeProblem problem() const override { return ProblemOf(status_); }
  int output_rate() const override { return output_rate_; }

 private:
  enum class Phase { kSeeking, kHeaders, kAudio, kEnded, kIgnoring, kFailed };

  absl::Status Fail(DecodeProblem problem, absl::string_view message);
  absl::Status FailWith(absl::Status status);
  void Warn(std::string message);
  absl::Status DrainPages();
  absl::Status OnSkipped(int64_t bytes);
  absl::Status OnPage(ogg_page& page);
  absl::Status OnFirstPages(ogg_page& page);
  absl::Status OnStreamPage(ogg_page& page);
  absl::Status OnHeaderPacket(const ogg_packet& packet);
  absl::Status OnAudioPage(int64_t granule, bool eos);
  absl::Status PlaceFirstPage(int64_t page_start, bool eos, bool hole);
  absl::Status CheckGap(int64_t page_start, bool eos, bool hole);
  absl::Status DecodePacket(const ogg_packet& packet);
  absl::Status Conceal(int64_t samples48);
  void Emit();
  void SalvageUnfinishedPage();
  void FlushResampler();

  const int output_rate_;
  const int decode_rate_;  // libopus runs here; resampled when != output
  ogg_sync_state sync_;
  ogg_stream_state stream_;
  std::unique_ptr<OpusPacketDecoder> opus_;
  std::unique_ptr<Resampler> resampler_;

  Phase phase_ = Phase::kSeeking;
  absl::Status status_;  // sticky
  bool finished_ = false;
  std::vector<std::string> other_codecs_;  // BOS pages seen before Opus
  int header_packets_ = 0;
  std::optional<StreamInfo> info_;
  std::vector<std::string> warnings_;

  // Byte accounting (for messages and the garbage limits).
  int64_t bytes_in_ = 0;
  int64_t offset_ = 0;       // bytes of input libogg has consumed
  int64_t garbage_run_ = 0;  // bytes skipped since the last good page
  bool seen_page_ = false;
  uint64_t pages_ = 0;  // whole pages of the Opus stream

  // Timeline. Positions are granule positions (48 kHz); indexes count
  // samples at decode_rate_ from the first decoded sample.
  bool started_ = false;
  int64_t start48_ = 0;     // granule position of the first decoded sample
  int64_t pos48_ = 0;       // granule position where the next packet starts
  int64_t index_ = 0;       // decoded samples so far (with concealment)
  int64_t keep_begin_ = 0;  // pre-skip, as an index
  int64_t keep_end_ = std::numeric_limits<int64_t>::max();  // EOS trim
  int64_t concealed48_ = 0;
  int64_t last_duration48_ = 960;  // stands in for undecodable packets
  int bad_packet_run_ = 0;
  // Pages went missing; judged at the next page where a packet ends.
  bool hole_ = false;

  std::vector<ogg_packet> packets_;  // of the current page
  std::vector<int16_t> scratch_;     // decoded, before trimming
  std::vector<int16_t> pcm_;         // ready to pull
  uint64_t samples_ = 0;
};

absl::Status OggOpusDecoderImpl::Fail(DecodeProblem problem,
                                      absl::string_view message) {
  return FailWith(ProblemStatus(problem, message));
}

absl::Status OggOpusDecoderImpl::FailWith(absl::Status status) {
  phase_ = Phase::kFailed;
  status_ = std::move(status);
  return status_;
}

void OggOpusDecoderImpl::Warn(std::string message) {
  if (warnings_.size() < kMaxWarnings) {
    warnings_.push_back(std::move(message));
  } else if (warnings_.size() == kMaxWarnings) {
    warnings_.push_back("further warnings suppressed");
  }
}

absl::Status OggOpusDecoderImpl::Push(absl::Span<const uint8_t> bytes) {
  if (finished_) return absl::FailedPreconditionError("Push after Finish");
  while (!bytes.empty() && phase_ != Phase::kFailed &&
         phase_ != Phase::kIgnoring) {
    const size_t n = std::min(bytes.size(), kSliceBytes);
    char* buffer = ogg_sync_buffer(&sync_, long(n));
    if (buffer == nullptr) {
      return FailWith(absl::ResourceExhaustedError("ogg_sync_buffer failed"));
    }
    std::memcpy(buffer, bytes.data(), n);
    ogg_sync_wrote(&sync_, long(n));
    bytes_in_ += int64_t(n);
    bytes.remove_prefix(n);
    if (absl::Status s = DrainPages(); !s.ok()) return s;
  }
  return status_;
}

absl::Status OggOpusDecoderImpl::DrainPages() {
  while (phase_ != Phase::kFailed && phase_ != Phase::kIgnoring) {
    ogg_page page;
    const long r = ogg_sync_pageseek(&sync_, &page);
    if (r == 0) break;  // needs more bytes
    if (r < 0) {
      if (absl::Status s = OnSkipped(-r); !s.ok()) return s;
      continue;
    }
    if (garbage_run_ > 0 && seen_page_) {
      Warn(absl::StrCat("skipped ", garbage_run_, " damaged bytes before byte ",
                        offset_, " (a page failed its CRC check)"));
    } else if (garbage_run_ > 0) {
      Warn(absl::StrCat("skipped ", garbage_run_,
                        " bytes before the first page"));
    }
    garbage_run_ = 0;
    offset_ += r;
    seen_page_ = true;
    if (absl::Status s = OnPage(page); !s.ok()) return s;
  }
  return status_;
}

absl::Status OggOpusDecoderImpl::OnSkipped(int64_t bytes) {
  offset_ += bytes;
  garbage_run_ += bytes;
  if (!seen_page_ && garbage_run_ > kMaxLeadingGarbage) {
    return Fail(DecodeProblem::kNotOgg,
                absl::StrCat("not an Ogg/Opus voice note: no Ogg page in the "
                             "first ",
                             garbage_run_, " bytes"));
  }
  if (seen_page_ && garbage_run_ > kMaxGarbageRun) {
    return Fail(DecodeProblem::kCorrupt,
                absl::StrCat("corrupt Ogg: ", garbage_run_,
                             " bytes without a valid page after byte ",
                             offset_ - garbage_run_));
  }
  return absl::OkStatus();
}

absl::Status OggOpusDecoderImpl::OnPage(ogg_page& page) {
  switch (phase_) {
    case Phase::kSeeking:
      return OnFirstPages(page);
    case Phase::kHeaders:
    case Phase::kAudio:
      if (ogg_page_serialno(&page) == stream_.serialno) {
        ++pages_;
        return OnStreamPage(page);
      }
      if (ogg_page_bos(&page)) {
        Warn(absl::StrCat(
            "ignored a multiplexed ", internal::CodecName(FirstPacketOf(page)),
            " stream (serial ", uint32_t(ogg_page_serialno(&page)), ")"));
      }
      return absl::OkStatus();
    case Phase::kEnded:
      // Only the first Opus stream is decoded; say once what follows it.
      Warn(ogg_page_bos(&page)
               ? absl::StrCat("ignored a chained ",
                              internal::CodecName(FirstPacketOf(page)),
                              " stream after the end of the Opus stream")
               : std::string("ignored data after the end of the Opus stream"));
      phase_ = Phase::kIgnoring;
      return absl::OkStatus();
    default:
      return status_;
  }
}

// The group of BOS pages that starts every Ogg file names its streams' codecs.
absl::Status OggOpusDecoderImpl::OnFirstPages(ogg_page& page) {
  if (!ogg_page_bos(&page)) {
    if (other_codecs_.empty()) {
      return Fail(DecodeProblem::kBadHeader,
                  "bad Opus header: the first Ogg page does not begin a stream "
                  "(OpusHead missing)");
    }
    return Fail(DecodeProblem::kNotOpus,
                absl::StrCat("not an Ogg/Opus voice note: the Ogg file holds ",
                             other_codecs_.front(), ", not Opus"));
  }
  const absl::string_view codec = internal::CodecName(FirstPacketOf(page));
  if (codec != "Opus") {
    other_codecs_.emplace_back(codec);
    Warn(absl::StrCat("ignored a ", codec, " stream (serial ",
                      uint32_t(ogg_page_serialno(&page)), ")"));
    return absl::OkStatus();
  }
  ogg_stream_reset_serialno(&stream_, ogg_page_serialno(&page));
  phase_ = Phase::kHeaders;
  ++pages_;
  return OnStreamPage(page);
}

absl::Status OggOpusDecoderImpl::OnStreamPage(ogg_page& page) {
  if (ogg_stream_pagein(&stream_, &page) != 0) {
    Warn(absl::StrCat("ignored an unreadable page before byte ", offset_));
    return absl::OkStatus();
  }
  // libogg returns -1 once where pages went missing (sequence number gap).
  packets_.clear();
  ogg_packet packet;
  for (int r; (r = ogg_stream_packetout(&stream_, &packet)) != 0;) {
    if (r < 0) {
      hole_ = true;
    } else if (phase_ == Phase::kHeaders) {
      if (absl::Status s = OnHeaderPacket(packet); !s.ok()) return s;
    } else {
      packets_.push_back(packet);  // valid until the next pagein
    }
  }
  const bool eos = ogg_page_eos(&page);
  if (phase_ == Phase::kAudio && (!packets_.empty() || eos)) {
    if (absl::Status s = OnAudioPage(ogg_page_granulepos(&page), eos);
        !s.ok()) {
      return s;
    }
  }
  if (eos) {
    if (phase_ == Phase::kHeaders) {
      return Fail(DecodeProblem::kBadHeader,
                  "bad Opus header: the stream ends inside its headers");
    }
    phase_ = Phase::kEnded;
  }
  return absl::OkStatus();
}

absl::Status OggOpusDecoderImpl::OnHeaderPacket(const ogg_packet& packet) {
  if (header_packets_ == 0) {
    absl::StatusOr<StreamInfo> head =
        internal::ParseOpusHead(PacketBytes(packet));
    if (!head.ok()) return FailWith(head.status());
    auto opus = OpusPacketDecoder::Create(decode_rate_, head->output_gain_q8);
    if (!opus.ok()) return FailWith(opus.status());
    opus_ = *std::move(opus);
    info_ = *head;
    keep_begin_ = Scale(info_->pre_skip, decode_rate_);
  } else {
    absl::StatusOr<std::string> vendor =
        internal::ParseOpusTagsVendor(PacketBytes(packet));
    if (!vendor.ok()) return FailWith(vendor.status());
    info_->vendor = *std::move(vendor);
    phase_ = Phase::kAudio;
  }
  ++header_packets_;
  return absl::OkStatus();
}

// A page's granule position is where its last packet ends; subtracting the
// packets' durations gives where the page starts, which shows lost audio.
absl::Status OggOpusDecoderImpl::OnAudioPage(int64_t granule, bool eos) {
  int64_t duration48 = 0;
  for (const ogg_packet& p : packets_) {
    const int n =
        opus_packet_get_nb_samples(p.packet, opus_int32(p.bytes), int(kRate48));
    duration48 += n > 0 ? n : last_duration48_;
  }
  const bool has_granule = granule >= 0 && !packets_.empty();
  const int64_t page_start = has_granule ? granule - duration48 : -1;
  const bool hole = std::exchange(hole_, false);
  if (absl::Status s = started_ ? CheckGap(page_start, eos, hole)
                                : PlaceFirstPage(page_start, eos, hole);
      !s.ok()) {
    return s;
  }
  if (eos && has_granule) {
    // End trimming: the EOS granule says where the real audio stops.
    const int64_t length48 = std::clamp<int64_t>(
        granule - start48_ - info_->pre_skip, 0, int64_t{1} << 40);
    keep_end_ = keep_begin_ + Scale(length48, decode_rate_);
    if (granule > pos48_ + duration48) {
      Warn("the final granule position is beyond the end of the audio");
    }
  }
  for (const ogg_packet& p : packets_) {
    if (absl::Status s = DecodePacket(p); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// RFC 7845 4.5: the first page may start after granule 0 (a stream cut from a
// longer one); then playback starts there. But when libogg saw pages go
// missing, the offset is lost audio: the stream starts at 0. Starting before 0
// is only legal with end trimming on a single-page stream.
absl::Status OggOpusDecoderImpl::PlaceFirstPage(int64_t page_start, bool eos,
                                                bool hole) {
  started_ = true;
  if (page_start < 0 && !eos && !packets_.empty()) {
    Warn("the first audio page's granule position is smaller than its audio");
  }
  if (!hole) {
    start48_ = pos48_ = std::max<int64_t>(page_start, 0);
    return absl::OkStatus();
  }
  start48_ = pos48_ = 0;
  return CheckGap(page_start, eos, hole);
}

absl::Status OggOpusDecoderImpl::CheckGap(int64_t page_start, bool eos,
                                          bool hole) {
  if (page_start < 0) {  // no granule to judge by
    if (hole)
      Warn(absl::StrCat("lost audio before byte ", offset_,
                        " could not be measured"));
    return absl::OkStatus();
  }
  const int64_t gap = page_start - pos48_;
  if (gap > kMaxGap48) {
    return Fail(DecodeProblem::kCorrupt,
                absl::StrCat("corrupt Ogg/Opus: the granule position jumps ",
                             Seconds(gap), " ahead at byte ", offset_));
  }
  if (gap > 0) {
    Warn(absl::StrCat("concealed ", Seconds(gap), " of lost audio at ",
                      Seconds(pos48_)));
    return Conceal(gap);
  }
  if (gap < 0 && !eos) {
    Warn(absl::StrCat("the granule position goes back ", Seconds(-gap),
                      " at byte ", offset_));
  } else if (hole) {
    Warn(absl::StrCat("a page was lost before byte ", offset_));
  }
  return absl::OkStatus();
}

absl::Status OggOpusDecoderImpl::DecodePacket(const ogg_packet& packet) {
  scratch_.clear();
  absl::StatusOr<int> n = opus_->Decode(PacketBytes(packet), &scratch_);
  if (!n.ok()) {
    if (++bad_packet_run_ >= kMaxBadPacketRun) {
      return Fail(DecodeProblem::kCorrupt,
                  absl::StrCat("corrupt Opus audio: ", bad_packet_run_,
                               " undecodable packets in a row"));
    }
    Warn(absl::StrCat("concealed an undecodable packet at ", Seconds(pos48_),
                      ": ", n.status().message()));
    return Conceal(last_duration48_);
  }
  bad_packet_run_ = 0;
  last_duration48_ = int64_t(*n) * kRate48 / decode_rate_;
  pos48_ += last_duration48_;
  Emit();
  return absl::OkStatus();
}

absl::Status OggOpusDecoderImpl::Conceal(int64_t samples48) {
  samples48 = (samples48 + kPlcStep48 - 1) / kPlcStep48 * kPlcStep48;
  concealed48_ += samples48;
  if (concealed48_ > kMaxConcealed48) {
    return Fail(DecodeProblem::kCorrupt,
                absl::StrCat("corrupt Ogg/Opus: more than ",
                             Seconds(kMaxConcealed48), " of audio lost"));
  }
  scratch_.clear();
  absl::StatusOr<int> n =
      opus_->Conceal(int(samples48 * decode_rate_ / kRate48), &scratch_);
  if (!n.ok()) return FailWith(n.status());
  pos48_ += samples48;
  Emit();
  return absl::OkStatus();
}

// Moves the part of scratch_ inside [keep_begin_, keep_end_) to the output.
void OggOpusDecoderImpl::Emit() {
  const int64_t begin = index_;
  index_ += int64_t(scratch_.size());
  const int64_t lo = std::max(begin, keep_begin_);
  const int64_t hi = std::min(index_, keep_end_);
  if (lo >= hi) return;
  const absl::Span<const int16_t> kept(scratch_.data() + (lo - begin),
                                       size_t(hi - lo));
  const size_t before = pcm_.size();
  if (resampler_) {
    resampler_->Process(kept, &pcm_);
  } else {
    pcm_.insert(pcm_.end(), kept.begin(), kept.end());
  }
  samples_ += pcm_.size() - before;
}

void OggOpusDecoderImpl::FlushResampler() {
  if (!resampler_) return;
  const size_t before = pcm_.size();
  resampler_->Flush(&pcm_);
  samples_ += pcm_.size() - before;
}

absl::Status OggOpusDecoderImpl::Finish() {
  if (finished_) return status_;
  finished_ = true;
  switch (phase_) {
    case Phase::kFailed:
      return status_;
    case Phase::kSeeking:
      if (!other_codecs_.empty()) {
        return Fail(DecodeProblem::kNotOpus,
                    absl::StrCat("not an Ogg/Opus voice note: the Ogg file "
                                 "holds ",
                                 other_codecs_.front(), ", not Opus"));
      }
      return Fail(DecodeProblem::kNotOgg,
                  bytes_in_ == 0
                      ? "not an Ogg/Opus voice note: the input is empty"
                      : absl::StrCat("not an Ogg/Opus voice note: no Ogg page "
                                     "in ",
                                     bytes_in_, " bytes"));
    case Phase::kHeaders:
      return Fail(DecodeProblem::kBadHeader,
                  "bad Opus header: the input ends inside the Opus headers");
    case Phase::kAudio:
      SalvageUnfinishedPage();
      if (phase_ == Phase::kFailed) return status_;
      FlushResampler();
      return Fail(
          DecodeProblem::kTruncated,
          absl::StrCat("truncated Ogg/Opus: no end-of-stream page; ",
                       "kept the first ",
                       Seconds(int64_t(samples_) * kRate48 / output_rate_),
                       " of audio"));
    default:
      FlushResampler();
      return status_;
  }
}

// A download cut short leaves the start of a page that libogg can neither
// check nor packetise. Its whole packets are almost surely intact, so rebuild
// the page header to cover just them and let libogg packetise that.
void OggOpusDecoderImpl::SalvageUnfinishedPage() {
  const unsigned char* p = sync_.data + sync_.returned;
  const long avail = sync_.fill - sync_.returned;
  if (avail < 27 || std::memcmp(p, "OggS", 4) != 0 || p[4] != 0) return;
  const int segments = p[26];
  if (avail < 27 + segments) return;
  std::vector<unsigned char> header(p, p + 27 + segments);
  ogg_page page = {header.data(), long(header.size()),
                   sync_.data + sync_.returned + 27 + segments, 0};
  if (ogg_page_serialno(&page) != stream_.serialno) return;
  const long body_avail = avail - 27 - segments;
  long body = 0;
  int whole_segments = 0;
  for (int i = 0; i < segments && body + p[27 + i] <= body_avail; ++i) {
    body += p[27 + i];
    if (p[27 + i] < 255) {  // a packet ends here
      whole_segments = i + 1;
      page.body_len = body;
    }
  }
  if (whole_segments == 0) return;
  header[26] = static_cast<unsigned char>(whole_segments);
  header[5] &= 0x01;                 // keep "continued"; no BOS/EOS
  std::memset(&header[6], 0xff, 8);  // granule -1: its end is unknown
  page.header_len = 27 + whole_segments;
  const uint64_t samples_before = samples_;
  if (!OnStreamPage(page).ok()) return;
  Warn(absl::StrCat(
      "kept ", packets_.size(), " packets (",
      Seconds(int64_t(samples_ - samples_before) * kRate48 / output_rate_),
      ") from the unfinished last page"));
}

}  // namespace

bool IsSupportedPcmRate(int rate) {
  return rate == 8000 || rate == 16000 || rate == 22050 || rate == 24000 ||
         rate == 44100 || rate == 48000;
}

absl::StatusOr<std::unique_ptr<OggOpusDecoder>> OggOpusDecoder::Create(
    int output_rate) {
  if (!IsSupportedPcmRate(output_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported PCM rate ", output_rate,
                     " Hz (use 8000, 16000, 22050, 24000, 44100 or 48000)"));
  }
  auto decoder = std::make_unique<OggOpusDecoderImpl>(output_rate);
  if (absl::Status s = decoder->Init(); !s.ok()) return s;
  return std::unique_ptr<OggOpusDecoder>(std::move(decoder));
}

absl::StatusOr<std::vector<int16_t>> DecodeOggOpus(
    absl::Span<const uint8_t> file, int output_rate) {
  absl::StatusOr<std::unique_ptr<OggOpusDecoder>> decoder =
      OggOpusDecoder::Create(output_rate);
  if (!decoder.ok()) return decoder.status();
  if (absl::Status s = (*decoder)->Push(file); !s.ok()) return s;
  if (absl::Status s = (*decoder)->Finish(); !s.ok()) return s;
  std::vector<int16_t> pcm;
  (*decoder)->Pull(&pcm);
  return pcm;
}

}  // namespace bridge::audio
