// Erasure on ElevenLabs' side: when a user asks to be forgotten, the
// conversations the agent had with them (transcripts, audio, analysis that
// ElevenLabs keeps) are deleted there too, with
// DELETE {base}/v1/convai/conversations/{id} and the `xi-api-key` header.
// An interface, so that the controller's erasure logic is tested without the
// network; the real implementation is NewElevenLabsConversationEraser.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bridge::controller {

class ConversationEraser {
 public:
  virtual ~ConversationEraser() = default;

  // Deletes one conversation. OK when deleted or already gone (404: erasure
  // is idempotent). PermissionDenied when the key is refused (401/403):
  // asking again cannot help. Unavailable when asking again can (network,
  // timeout, 408, 429, 5xx). FailedPrecondition for any other answer.
  // Messages name the host, never the key. Safe to call from many threads.
  virtual absl::Status Delete(const std::string& conversation_id) = 0;
};

// Over cpp-httplib; HTTPS (OpenSSL, certificates verified against the system
// store, or `ca_file` when set) when `base_url` is https:// (or wss://, as
// ELEVENLABS_BASE_URL may be given for the worker). `base_url` and `api_key`
// are what the worker reads from ELEVENLABS_BASE_URL and ELEVENLABS_API_KEY;
// the key is registered as a secret (redacted from every log line).
// InvalidArgument for a malformed URL or an empty key.
absl::StatusOr<std::unique_ptr<ConversationEraser>> NewElevenLabsConversationEraser(
    const std::string& base_url, const std::string& api_key,
    absl::Duration timeout = absl::Seconds(10), const std::string& ca_file = "");

}  // namespace bridge::controller
