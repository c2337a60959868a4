// Private to agent_session: the ElevenLabs REST calls — the signed URL for
// private agents (PROTOCOLS.md B1) here, speech-to-text behind
// media_worker/speech_to_text.h. Their .cc is the only file that includes
// httplib.h for them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bridge::media_worker::agent_internal {

struct SignedUrlRequest {
  std::string base_url;  // normalized: http(s)://host[:port][/prefix]
  std::string agent_id;
  std::string api_key;
  std::string ca_file;   // empty: the system store
  absl::Duration timeout = absl::Seconds(10);
};

// GET {base}/v1/convai/conversation/get-signed-url?agent_id=ID with the key
// in `xi-api-key`; returns the ws(s):// signed URL (a secret: never log it).
// Errors say whether asking again can help: FailedPrecondition when it cannot
// (401/403 bad key, 404 unknown agent, other 4xx), Unavailable when it can
// (network, timeout, 408, 429, 5xx). Messages name the host only.
absl::StatusOr<std::string> FetchSignedUrl(const SignedUrlRequest& request);

}  // namespace bridge::media_worker::agent_internal
