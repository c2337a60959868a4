#include "audio/resampler.h"

#include <speex/speex_resampler.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace bridge::audio {
namespace {

bool ValidRate(int rate) { return rate >= 1000 && rate <= 384000; }

}  // namespace

void Resampler::StateDeleter::operator()(SpeexResamplerState_* st) const {
  speex_resampler_destroy(st);
}

Resampler::Resampler(int in_rate, int out_rate, SpeexResamplerState_* st)
    : in_rate_(in_rate), out_rate_(out_rate), st_(st) {}

Resampler::~Resampler() = default;

absl::StatusOr<std::unique_ptr<Resampler>> Resampler::Create(int in_rate,
                                                             int out_rate,
                                                             int quality) {
  if (!ValidRate(in_rate) || !ValidRate(out_rate) || quality < 0 ||
      quality > 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad resampler settings: ", in_rate, " Hz -> ", out_rate,
                     " Hz, quality ", quality));
  }
  SpeexResamplerState* st = nullptr;
  if (in_rate != out_rate) {
    int err = 0;
    st = speex_resampler_init(1, in_rate, out_rate, quality, &err);
    if (st == nullptr) {
      return absl::InternalError(absl::StrCat("speex_resampler_init: ",
                                              speex_resampler_strerror(err)));
    }
    // Drop the filter's leading delay so output sample k lines up with input
    // time k / out_rate; Flush() feeds zeros to push the tail out instead.
    speex_resampler_skip_zeros(st);
  }
  return std::unique_ptr<Resampler>(new Resampler(in_rate, out_rate, st));
}

void Resampler::Run(const int16_t* in, int64_t n, std::vector<int16_t>* out) {
  while (n > 0) {
    // Bounded steps keep the lengths inside spx_uint32_t and the scratch small.
    spx_uint32_t in_len = spx_uint32_t(std::min<int64_t>(n, 1 << 16));
    spx_uint32_t out_len =
        spx_uint32_t(int64_t(in_len) * out_rate_ / in_rate_ + 16);
    const size_t base = out->size();
    out->resize(base + out_len);
    speex_resampler_process_int(st_.get(), 0, in, &in_len, out->data() + base,
                                &out_len);
    out->resize(base + out_len);
    if (in_len == 0 && out_len == 0) break;  // cannot happen; never spin
    out_total_ += out_len;
    in += in_len;
    n -= in_len;
  }
}

void Resampler::Process(absl::Span<const int16_t> in,
                        std::vector<int16_t>* out) {
  in_total_ += int64_t(in.size());
  if (!st_) {
    out->insert(out->end(), in.begin(), in.end());
    out_total_ += int64_t(in.size());
    return;
  }
  Run(in.data(), int64_t(in.size()), out);
}

void Resampler::Flush(std::vector<int16_t>* out) {
  if (!st_) return;
  const int64_t target =
      (in_total_ * out_rate_ + in_rate_ / 2) / in_rate_;  // rounded
  const std::vector<int16_t> zeros(
      speex_resampler_get_input_latency(st_.get()) + 64, 0);
  // A few rounds of zeros always suffice; the bound only guards the loop.
  for (int round = 0; round < 16 && out_total_ < target; ++round) {
    Run(zeros.data(), int64_t(zeros.size()), out);
  }
  if (out_total_ > target) {
    out->resize(out->size() - size_t(std::min<int64_t>(out_total_ - target,
                                                       int64_t(out->size()))));
  }
  out_total_ = target;
}

}  // namespace bridge::audio
