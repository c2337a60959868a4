// The streaming Ogg/Opus decoder (common/audio/include/audio/ogg_opus_decoder.h)
// on arbitrary files cut into arbitrary chunks, as a voice note arrives over
// HTTP. The first bytes choose the output rate and the cut points; the rest is
// the file. Checked: no crash, no leak (ASan), no UB (UBSan), and the promises
// of the header — an error is final, Pull hands over exactly samples(), and a
// whole-buffer decode agrees with the streamed one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/types/span.h"
#include "audio/ogg_opus_decoder.h"
#include <fuzzer/FuzzedDataProvider.h>

namespace {

constexpr int kRates[] = {8000, 16000, 24000, 48000, 22050, 44100};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int rate = kRates[data[0] % 6];
  // data[1]: how the file is cut. 0: whole; else chunks of 1..(4 * data[1])
  // bytes, their sizes drawn from the last bytes of the input.
  const size_t max_chunk = 4 * static_cast<size_t>(data[1]);
  FuzzedDataProvider cuts(data + 2, size - 2);
  absl::Span<const uint8_t> file(data + 2, size - 2);

  auto decoder = bridge::audio::OggOpusDecoder::Create(rate);
  if (!decoder.ok()) abort();
  std::vector<int16_t> pcm;
  absl::Status first_error;
  size_t off = 0;
  while (off < file.size()) {
    size_t n = file.size() - off;
    if (max_chunk > 0) n = std::min(n, cuts.ConsumeIntegralInRange<size_t>(1, max_chunk));
    absl::Status s = (*decoder)->Push(file.subspan(off, n));
    off += n;
    if (!first_error.ok() && s.ok()) abort();  // an error is final
    if (first_error.ok() && !s.ok()) first_error = s;
    (*decoder)->Pull(&pcm);
  }
  absl::Status finish = (*decoder)->Finish();
  if (!first_error.ok() && finish.ok()) abort();
  (*decoder)->Pull(&pcm);
  if (pcm.size() != (*decoder)->samples()) abort();
  if ((*decoder)->output_rate() != rate) abort();
  if (finish.ok() && (*decoder)->problem() != bridge::audio::DecodeProblem::kNone) abort();

  // Chunking must not change the result.
  absl::StatusOr<std::vector<int16_t>> whole = bridge::audio::DecodeOggOpus(file, rate);
  if (whole.ok() != finish.ok()) abort();
  if (whole.ok() && *whole != pcm) abort();
  return 0;
}
