#include "agent_protocol.h"

#include <bit>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "ws/websocket.h"

extern "C" {
#include <spandsp/telephony.h>
#include <spandsp/bit_operations.h>
#include <spandsp/g711.h>
}

namespace bridge::media_worker::agent_internal {
namespace {

using nlohmann::json;

// The wire is little-endian s16; so is every host we build for.
static_assert(std::endian::native == std::endian::little, "PCM is copied as is");

// Invalid UTF-8 from a caller must not throw out of a send.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

absl::StatusOr<AudioFormat> ParseAudioFormat(const std::string& format) {
  if (format == "ulaw_8000") return AudioFormat{8000, true};
  absl::string_view f = format;
  int rate = 0;
  if (absl::ConsumePrefix(&f, "pcm_") && absl::SimpleAtoi(f, &rate)) {
    for (int ok : {8000, 16000, 22050, 24000, 44100, 48000}) {
      if (rate == ok) return AudioFormat{rate, false};
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "agent audio format '", format, "' is not supported (pcm_8000..pcm_48000, ulaw_8000)"));
}

bool RetryableCloseCode(int code) { return code != ws::kClosePolicyViolation; }

bool RetryableConnectFailure(int status) {
  if (status == 0) return true;  // network, TLS, timeout: may pass
  if (status == 408 || status == 429) return true;
  return status < 400 || status >= 500;
}

absl::StatusOr<std::string> NormalizeBaseUrl(const std::string& base_url) {
  std::string base(absl::StripAsciiWhitespace(base_url));
  while (!base.empty() && base.back() == '/') base.pop_back();
  for (absl::string_view scheme : {"http://", "https://", "ws://", "wss://"}) {
    if (absl::StartsWithIgnoreCase(base, scheme) && base.size() > scheme.size()) return base;
  }
  return absl::InvalidArgumentError(
      "ELEVENLABS_BASE_URL must be an http:// or https:// URL with a host");
}

std::string PublicAgentUrl(const std::string& normalized_base, const std::string& agent_id) {
  std::string base = normalized_base;
  if (absl::StartsWithIgnoreCase(base, "https://")) {
    base = absl::StrCat("wss://", base.substr(8));
  } else if (absl::StartsWithIgnoreCase(base, "http://")) {
    base = absl::StrCat("ws://", base.substr(7));
  }
  return absl::StrCat(base, "/v1/convai/conversation?agent_id=", UrlEncode(agent_id));
}



std::string InitiationMessage(const std::string& user_id,
                              const std::map<std::string, std::string>& dynamic_variables) {
  // No conversation_config_override: agents refuse overrides unless each
  // field is allowed (close 1008 override_error), so nothing depends on one.
  json msg = {{"type", "conversation_initiation_client_data"}};
  if (!user_id.empty()) msg["user_id"] = user_id;
  json vars = json::object();
  for (const auto& [name, value] : dynamic_variables) vars[name] = value;
  if (!vars.empty()) msg["dynamic_variables"] = std::move(vars);
  return Dump(msg);
}

std::string AudioMessage(absl::Span<const int16_t> pcm, bool ulaw) {
  std::string encoded;
  absl::string_view bytes(reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2);
  if (ulaw) {
    encoded.resize(pcm.size());
    for (size_t i = 0; i < pcm.size(); ++i) encoded[i] = static_cast<char>(linear_to_ulaw(pcm[i]));
    bytes = encoded;
  }
  // Built by hand: base64 needs no escaping, and this is the hot path.
  return absl::StrCat("{\"user_audio_chunk\":\"", absl::Base64Escape(bytes), "\"}");
}

std::string UserMessage(const std::string& text) {
  return Dump({{"type", "user_message"}, {"text", text}});
}

std::string ContextualUpdateMessage(const std::string& text) {
  return Dump({{"type", "contextual_update"}, {"text", text}});
}

std::string UserActivityMessage() { return R"({"type":"user_activity"})"; }

std::string PongMessage(int64_t event_id) {
  return absl::StrCat(R"({"type":"pong","event_id":)", event_id, "}");
}

std::string ToolResultMessage(const std::string& tool_call_id, const std::string& result,
                              bool is_error) {
  return Dump({{"type", "client_tool_result"},
               {"tool_call_id", tool_call_id},
               {"result", result},
               {"is_error", is_error}});
}

std::optional<std::vector<int16_t>> DecodeAudio(const std::string& base64, bool ulaw) {
  std::string bytes;
  if (!absl::Base64Unescape(base64, &bytes)) return std::nullopt;
  if (ulaw) {
    std::vector<int16_t> pcm(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
      pcm[i] = ulaw_to_linear(static_cast<uint8_t>(bytes[i]));
    }
    return pcm;
  }
  std::vector<int16_t> pcm(bytes.size() / 2);
  if (!pcm.empty()) std::memcpy(pcm.data(), bytes.data(), pcm.size() * 2);
  return pcm;
}

}  // namespace bridge::media_worker::agent_internal
