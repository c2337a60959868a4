// Voice notes the way a WhatsApp phone records them: Ogg/Opus, mono, 16 kHz
// input rate (what real notes' OpusHead says, ../shared/fixtures), made from
// the phone page's microphone PCM with the product's own codec path.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bridge::whatsapp_sim {

// `pcm`: s16le mono samples at `rate` Hz.
absl::StatusOr<std::string> EncodeVoiceNote(absl::string_view pcm, int rate);

}  // namespace bridge::whatsapp_sim
