// Private to agent_session: the pure parts of the ElevenLabs agent protocol
// (PROTOCOLS.md B) — URLs, audio formats, close-code policy and the client
// messages — kept apart from the socket plumbing so they are easy to test.
#pragma once

#include "common/url.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bridge::media_worker::agent_internal {

// Close code for "we cannot use what the agent sends" (RFC 6455: 1003).
inline constexpr int kCloseUnsupportedData = 1003;

// An agent audio format (PROTOCOLS.md B2): PCM s16le at a rate, or G.711
// μ-law at 8 kHz (telephony agents).
struct AudioFormat {
  int rate = 16000;
  bool ulaw = false;
};

// "pcm_16000" -> {16000, PCM}; "ulaw_8000" -> {8000, μ-law}; anything else
// is an error.
absl::StatusOr<AudioFormat> ParseAudioFormat(const std::string& format);

// Whether reconnecting can help after the server closed with `code`: not
// after 1008 (bad input, override_error), which would only repeat.
bool RetryableCloseCode(int code);

// Whether reconnecting can help after the WebSocket never opened. `error` is
// A failed connect, by the HTTP status of the refused handshake (0: no HTTP
// answer): refusals that a retry repeats (401, 403, 404, other 4xx but 408
// and 429) are final; network trouble, timeouts, 429 and 5xx are not.
bool RetryableConnectFailure(int http_status);

// base_url without a trailing '/', checked to be http(s):// (ws(s):// is
// accepted too, for a base that only speaks WebSocket).
absl::StatusOr<std::string> NormalizeBaseUrl(const std::string& base_url);

// wss://host/v1/convai/conversation?agent_id=ID for https://host (ws for http).
std::string PublicAgentUrl(const std::string& normalized_base, const std::string& agent_id);

// URL helpers live in common/url.h (HostOf: what logs may name).
using ::bridge::HostOf;
using ::bridge::UrlEncode;

// Client messages (PROTOCOLS.md B2), serialized.
std::string InitiationMessage(const std::string& user_id,
                              const std::map<std::string, std::string>& dynamic_variables);
// Linear PCM in, in the agent's input encoding on the wire.
std::string AudioMessage(absl::Span<const int16_t> pcm, bool ulaw);
std::string UserMessage(const std::string& text);
std::string ContextualUpdateMessage(const std::string& text);
std::string UserActivityMessage();
std::string PongMessage(int64_t event_id);
std::string ToolResultMessage(const std::string& tool_call_id, const std::string& result,
                              bool is_error);

// Base64 of s16le mono (or of μ-law bytes) -> linear samples; nullopt if it
// is not base64. A trailing odd PCM byte is dropped (half a sample).
std::optional<std::vector<int16_t>> DecodeAudio(const std::string& base64, bool ulaw);

}  // namespace bridge::media_worker::agent_internal
