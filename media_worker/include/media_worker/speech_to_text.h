// ElevenLabs Speech-to-Text (PROTOCOLS.md B4): a whole recorded voice note in
// one call, `POST {base}/v1/speech-to-text` with `xi-api-key`, multipart
// `file` (the Ogg/Opus note as WhatsApp sent it) and `model_id`. The worker's
// default voice input (--voice_input=transcribe): the transcript goes to the
// conversation as a user_message, which does not depend on how fast audio is
// streamed or on the agent's turn detection — what ElevenLabs' own WhatsApp
// channel does. One real implementation (cpp-httplib), tested against
// elevenlabs-sim; a fake in tests/.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bridge::media_worker {

struct SpeechToTextOptions {
  std::string base_url = "https://api.elevenlabs.io";  // ELEVENLABS_BASE_URL
  std::string api_key;                                 // ELEVENLABS_API_KEY (required)
  std::string model_id = "scribe_v2";                  // --stt_model
  std::string language_code;  // empty: detected
  std::string ca_file;        // PEM bundle for TLS; empty: the system store
  absl::Duration timeout = absl::Seconds(60);
};

struct Transcript {
  std::string text;
  std::string language_code;
};

class SpeechToText {
 public:
  virtual ~SpeechToText() = default;
  // Errors: Unavailable when asking again can help (network, timeout, 408,
  // 429, 5xx), FailedPrecondition when it cannot (401/403 key, other 4xx).
  // Messages name the host only, never the key.
  virtual absl::StatusOr<Transcript> Transcribe(const std::string& bytes,
                                                const std::string& mime_type,
                                                const std::string& filename) = 0;
};

// InvalidArgument without an API key or with a base URL that is not http(s).
absl::StatusOr<std::unique_ptr<SpeechToText>> NewSpeechToText(const SpeechToTextOptions& options);

}  // namespace bridge::media_worker
