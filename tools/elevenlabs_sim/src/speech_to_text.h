// elevenlabs-sim's POST /v1/speech-to-text (PROTOCOLS.md B4): a multipart
// form with `file` (the recording) and `model_id`, the key in `xi-api-key`.
// The "transcript" is the same description of what it heard that the agent's
// voice turns get ("[audio 3.00s, speech 2.98s, peak 440 Hz]"), empty for a
// recording without speech, so tests can tell which audio reached it.
#pragma once

#include <string>
#include <utility>

#include "nlohmann/json.hpp"

namespace bridge::elevenlabs_sim {

struct SttRequest {
  std::string content_type;  // multipart/form-data; boundary=...
  std::string body;
};

// The HTTP status and JSON body to answer with: 200 {text, language_code,
// language_probability, words}, 400 for a form without `file` or audio that
// cannot be read, 422 without `model_id`. `record` gets what was asked.
std::pair<int, nlohmann::json> Transcribe(const SttRequest& request, nlohmann::json* record);

}  // namespace bridge::elevenlabs_sim
