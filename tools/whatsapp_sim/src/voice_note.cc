#include "voice_note.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "audio/ogg_opus_encoder.h"
#include "audio/resampler.h"

namespace bridge::whatsapp_sim {

absl::StatusOr<std::string> EncodeVoiceNote(absl::string_view pcm, int rate) {
  constexpr int kPhoneRate = 16000;
  std::vector<int16_t> in(pcm.size() / 2);
  std::memcpy(in.data(), pcm.data(), in.size() * 2);  // little-endian host, as the page sends
  auto resampler = audio::Resampler::Create(rate, kPhoneRate);
  if (!resampler.ok()) return resampler.status();
  std::vector<int16_t> note;
  (*resampler)->Process(in, &note);
  (*resampler)->Flush(&note);
  audio::EncoderOptions o;
  o.input_rate = kPhoneRate;
  return audio::EncodeOggOpus(note, o);
}

}  // namespace bridge::whatsapp_sim
