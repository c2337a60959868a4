#include "converse_transcode.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "audio/opus_packet.h"
#include "audio/resampler.h"

namespace bridge::media_worker {
namespace {

constexpr int kOpusRate = 48000;            // the raw-packet clock
constexpr int kOpusFrame = kOpusRate / 50;  // 20 ms
// Raw Opus output trades a little quality for CPU: a packet is encoded per
// 20 ms of every live stream, where a voice note is encoded once.
constexpr int kOpusComplexity = 8;

absl::Duration Samples(size_t n, int rate) {
  return absl::Seconds(static_cast<double>(n) / rate);
}

std::string Bytes(absl::Span<const int16_t> pcm) {
  return std::string(reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2);
}

// ---- input ----

class PcmInput final : public InputTranscoder {
 public:
  explicit PcmInput(std::unique_ptr<audio::Resampler> r) : resampler_(std::move(r)) {}
  absl::Status Push(const std::string& bytes, std::vector<int16_t>* pcm) override {
    std::string data = carry_ + bytes;
    carry_ = data.size() % 2 ? data.substr(data.size() - 1) : std::string();
    std::vector<int16_t> in(data.size() / 2);
    std::memcpy(in.data(), data.data(), in.size() * 2);  // s16le on a little-endian host
    resampler_->Process(in, pcm);
    return absl::OkStatus();
  }
  absl::Status Finish(std::vector<int16_t>* pcm) override {
    resampler_->Flush(pcm);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<audio::Resampler> resampler_;
  std::string carry_;
};

class OpusInput final : public InputTranscoder {
 public:
  OpusInput(std::unique_ptr<audio::OpusPacketDecoder> d, std::unique_ptr<audio::Resampler> r)
      : decoder_(std::move(d)), resampler_(std::move(r)) {}
  absl::Status Push(const std::string& bytes, std::vector<int16_t>* pcm) override {
    std::vector<int16_t> decoded;
    ++packets_;
    absl::StatusOr<int> n =
        bytes.empty()
            ? decoder_->Conceal(decoder_->sample_rate() / 50, &decoded)
            : decoder_->Decode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                               &decoded);
    if (!n.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("audio message ", packets_, " is not an Opus packet: ", n.status().message()));
    }
    resampler_->Process(decoded, pcm);
    return absl::OkStatus();
  }
  absl::Status Finish(std::vector<int16_t>* pcm) override {
    resampler_->Flush(pcm);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<audio::OpusPacketDecoder> decoder_;
  std::unique_ptr<audio::Resampler> resampler_;
  int64_t packets_ = 0;
};

absl::Status NotOggOpus(const absl::Status& s) {
  return absl::InvalidArgumentError(
      absl::StrCat("input is not playable Ogg/Opus (",
                   audio::DecodeProblemName(audio::ProblemOf(s)), "): ", s.message()));
}

class OggInput final : public InputTranscoder {
 public:
  explicit OggInput(std::unique_ptr<audio::OggOpusDecoder> d) : decoder_(std::move(d)) {}
  absl::Status Push(const std::string& bytes, std::vector<int16_t>* pcm) override {
    absl::Status s =
        decoder_->Push({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    decoder_->Pull(pcm);
    return s.ok() ? s : NotOggOpus(s);
  }
  absl::Status Finish(std::vector<int16_t>* pcm) override {
    absl::Status s = decoder_->Finish();
    decoder_->Pull(pcm);
    // A live stream may stop anywhere: what arrived is what the user said.
    if (s.ok() || audio::ProblemOf(s) == audio::DecodeProblem::kTruncated) {
      return absl::OkStatus();
    }
    return NotOggOpus(s);
  }

 private:
  std::unique_ptr<audio::OggOpusDecoder> decoder_;
};

// ---- output ----

class PcmOutput final : public OutputTranscoder {
 public:
  PcmOutput(int agent_rate, int rate) : agent_rate_(agent_rate), rate_(rate) {}
  absl::Status Init() { return Reset(); }
  absl::Status Push(absl::Span<const int16_t> pcm, std::vector<AudioChunk>* out) override {
    std::vector<int16_t> r;
    resampler_->Process(pcm, &r);
    Emit(r, out);
    return absl::OkStatus();
  }
  absl::Status EndReply(std::vector<AudioChunk>* out) override {
    std::vector<int16_t> r;
    resampler_->Flush(&r);  // exact reply length: round(in * rate / agent_rate)
    Emit(r, out);
    return Reset();
  }
  absl::Status Interrupt(std::vector<AudioChunk>*) override { return Reset(); }

 private:
  absl::Status Reset() {
    auto r = audio::Resampler::Create(agent_rate_, rate_);
    if (!r.ok()) return r.status();
    resampler_ = *std::move(r);
    return absl::OkStatus();
  }
  void Emit(const std::vector<int16_t>& pcm, std::vector<AudioChunk>* out) {
    if (!pcm.empty()) out->push_back({Bytes(pcm), Samples(pcm.size(), rate_)});
  }
  const int agent_rate_, rate_;
  std::unique_ptr<audio::Resampler> resampler_;
};

class OpusOutput final : public OutputTranscoder {
 public:
  OpusOutput(int agent_rate, std::unique_ptr<audio::OpusPacketEncoder> e)
      : agent_rate_(agent_rate), encoder_(std::move(e)) {}
  absl::Status Init() { return Reset(); }
  absl::Status Push(absl::Span<const int16_t> pcm, std::vector<AudioChunk>* out) override {
    resampler_->Process(pcm, &pending_);
    return EncodeFrames(out);
  }
  absl::Status EndReply(std::vector<AudioChunk>* out) override {
    resampler_->Flush(&pending_);
    if (const size_t part = pending_.size() % kOpusFrame; part > 0) {
      pending_.resize(pending_.size() + kOpusFrame - part, 0);  // pad the last packet
    }
    if (absl::Status s = EncodeFrames(out); !s.ok()) return s;
    return Reset();
  }
  // The encoder keeps its state: the packet stream stays continuous.
  absl::Status Interrupt(std::vector<AudioChunk>*) override { return Reset(); }

 private:
  absl::Status Reset() {
    pending_.clear();
    auto r = audio::Resampler::Create(agent_rate_, kOpusRate);
    if (!r.ok()) return r.status();
    resampler_ = *std::move(r);
    return absl::OkStatus();
  }
  absl::Status EncodeFrames(std::vector<AudioChunk>* out) {
    size_t off = 0;
    std::vector<uint8_t> packet;
    for (; off + kOpusFrame <= pending_.size(); off += kOpusFrame) {
      absl::Status s =
          encoder_->Encode(absl::MakeConstSpan(pending_).subspan(off, kOpusFrame), &packet);
      if (!s.ok()) return s;
      out->push_back({std::string(packet.begin(), packet.end()), absl::Milliseconds(20)});
    }
    pending_.erase(pending_.begin(), pending_.begin() + off);  // < 20 ms carried over
    return absl::OkStatus();
  }
  const int agent_rate_;
  std::unique_ptr<audio::OpusPacketEncoder> encoder_;
  std::unique_ptr<audio::Resampler> resampler_;
  std::vector<int16_t> pending_;  // 48 kHz samples not yet in a packet
};

class OggOutput final : public OutputTranscoder {
 public:
  OggOutput(int agent_rate, int bitrate) : agent_rate_(agent_rate), bitrate_(bitrate) {}
  absl::Status Push(absl::Span<const int16_t> pcm, std::vector<AudioChunk>* out) override {
    if (!encoder_) {
      audio::EncoderOptions eo;
      eo.input_rate = agent_rate_;
      eo.bitrate_bps = bitrate_;
      auto e = audio::OggOpusEncoder::Create(eo);
      if (!e.ok()) return e.status();
      encoder_ = *std::move(e);
      out->push_back({encoder_->TakeBytes(), absl::ZeroDuration(), /*droppable=*/false});
    }
    if (absl::Status s = encoder_->Write(pcm); !s.ok()) return s;
    unsent_ += pcm.size();
    std::string bytes = encoder_->TakeBytes();
    if (!bytes.empty()) {
      out->push_back({std::move(bytes), Samples(unsent_, agent_rate_)});
      unsent_ = 0;
    }
    return absl::OkStatus();
  }
  absl::Status EndReply(std::vector<AudioChunk>* out) override {
    if (!encoder_) return absl::OkStatus();
    absl::Status s = encoder_->Finish();
    if (s.ok()) out->push_back({encoder_->TakeBytes(), Samples(unsent_, agent_rate_), false});
    encoder_.reset();  // the next reply is a new (chained) Ogg stream
    unsent_ = 0;
    return s;
  }
  // The reply's Ogg stream still gets its end page, so what the client kept
  // of it stays a valid file.
  absl::Status Interrupt(std::vector<AudioChunk>* out) override { return EndReply(out); }

 private:
  const int agent_rate_, bitrate_;
  std::unique_ptr<audio::OggOpusEncoder> encoder_;
  size_t unsent_ = 0;  // agent samples written but not yet in a page
};

}  // namespace

int PcmRateOf(v1::AudioFormat format) {
  switch (format) {
    case v1::AUDIO_FORMAT_PCM_16000: return 16000;
    case v1::AUDIO_FORMAT_PCM_24000: return 24000;
    case v1::AUDIO_FORMAT_PCM_48000: return 48000;
    default: return 0;
  }
}

bool IsConverseFormat(v1::AudioFormat format) {
  return PcmRateOf(format) > 0 || format == v1::AUDIO_FORMAT_OPUS ||
         format == v1::AUDIO_FORMAT_OGG_OPUS;
}

absl::StatusOr<std::unique_ptr<InputTranscoder>> InputTranscoder::Create(v1::AudioFormat format,
                                                                         int agent_rate) {
  if (const int rate = PcmRateOf(format); rate > 0) {
    auto r = audio::Resampler::Create(rate, agent_rate);
    if (!r.ok()) return r.status();
    return std::make_unique<PcmInput>(*std::move(r));
  }
  if (format == v1::AUDIO_FORMAT_OPUS) {
    const int decode_rate = audio::IsOpusRate(agent_rate) ? agent_rate : kOpusRate;
    auto d = audio::OpusPacketDecoder::Create(decode_rate);
    if (!d.ok()) return d.status();
    auto r = audio::Resampler::Create(decode_rate, agent_rate);
    if (!r.ok()) return r.status();
    return std::make_unique<OpusInput>(*std::move(d), *std::move(r));
  }
  if (format == v1::AUDIO_FORMAT_OGG_OPUS) {
    auto d = audio::OggOpusDecoder::Create(agent_rate);
    if (!d.ok()) return d.status();
    return std::make_unique<OggInput>(*std::move(d));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported input_format ", v1::AudioFormat_Name(format)));
}

absl::StatusOr<std::unique_ptr<OutputTranscoder>> OutputTranscoder::Create(v1::AudioFormat format,
                                                                           int agent_rate,
                                                                           int bitrate_bps) {
  if (const int rate = PcmRateOf(format); rate > 0) {
    auto t = std::make_unique<PcmOutput>(agent_rate, rate);
    if (absl::Status s = t->Init(); !s.ok()) return s;
    return std::unique_ptr<OutputTranscoder>(std::move(t));
  }
  if (format == v1::AUDIO_FORMAT_OPUS) {
    auto e = audio::OpusPacketEncoder::Create(kOpusRate, bitrate_bps, kOpusComplexity);
    if (!e.ok()) return e.status();
    auto t = std::make_unique<OpusOutput>(agent_rate, *std::move(e));
    if (absl::Status s = t->Init(); !s.ok()) return s;
    return std::unique_ptr<OutputTranscoder>(std::move(t));
  }
  if (format == v1::AUDIO_FORMAT_OGG_OPUS) {
    return std::make_unique<OggOutput>(agent_rate, bitrate_bps);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported output_format ", v1::AudioFormat_Name(format)));
}

}  // namespace bridge::media_worker
