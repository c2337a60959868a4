#include "agent_signed_url.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent_protocol.h"
#include "common/redact.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bridge::media_worker::agent_internal {
namespace {

using nlohmann::json;

constexpr size_t kMaxDetail = 200;

// "scheme://host:port" and the path prefix after it ("" or "/prefix").
std::pair<std::string, std::string> SplitOrigin(const std::string& base) {
  size_t scheme_end = base.find("://");
  size_t path = base.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  if (path == std::string::npos) return {base, ""};
  return {base.substr(0, path), base.substr(path)};
}

// ElevenLabs errors look like {"detail":{"status":"invalid_api_key","message":"..."}};
// anything else is quoted (shortened, redacted: a body may echo a secret).
std::string ErrorDetail(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string detail;
  if (j.is_object() && j.contains("detail")) {
    const json& d = j["detail"];
    if (d.is_object()) {
      detail = absl::StrCat(d.value("status", ""), d.contains("message") ? ": " : "",
                            d.value("message", ""));
    } else if (d.is_string()) {
      detail = d.get<std::string>();
    }
  }
  if (detail.empty()) detail = body;
  if (detail.size() > kMaxDetail) detail.resize(kMaxDetail);
  return Redact(detail);
}

absl::Status HttpError(int status, const std::string& host, const std::string& body) {
  std::string message = absl::StrCat("signed URL request to ", host, " refused with HTTP ",
                                     status, ": ", ErrorDetail(body));
  if (status == 408 || status == 429 || status >= 500) return absl::UnavailableError(message);
  if (status == 401 || status == 403) {
    absl::StrAppend(&message, " (check ELEVENLABS_API_KEY)");
  } else if (status == 404) {
    absl::StrAppend(&message, " (check ELEVENLABS_AGENT_ID)");
  }
  return absl::FailedPreconditionError(message);
}

}  // namespace

absl::StatusOr<std::string> FetchSignedUrl(const SignedUrlRequest& request) {
  const std::string host = HostOf(request.base_url);
  auto [origin, prefix] = SplitOrigin(request.base_url);
  httplib::Client client(origin);
  if (!client.is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot reach ", host, ": bad base URL"));
  }
  if (!request.ca_file.empty()) client.set_ca_cert_path(request.ca_file.c_str());
  client.enable_server_certificate_verification(true);
  const int64_t usec = absl::ToInt64Microseconds(request.timeout);
  client.set_connection_timeout(usec / 1000000, usec % 1000000);
  client.set_read_timeout(usec / 1000000, usec % 1000000);
  client.set_write_timeout(usec / 1000000, usec % 1000000);
  const std::string path = absl::StrCat(prefix, "/v1/convai/conversation/get-signed-url?agent_id=",
                                        UrlEncode(request.agent_id));
  httplib::Result res = client.Get(path, {{"xi-api-key", request.api_key}});
  if (!res) {
    return absl::UnavailableError(absl::StrCat("signed URL request to ", host, " failed: ",
                                               httplib::to_string(res.error())));
  }
  if (res->status != 200) return HttpError(res->status, host, res->body);
  json j = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  std::string url = j.is_object() ? j.value("signed_url", "") : "";
  if (!absl::StartsWith(url, "ws://") && !absl::StartsWith(url, "wss://")) {
    // Retryable: a garbled answer from a healthy service is a glitch.
    return absl::UnavailableError(
        absl::StrCat("signed URL answer from ", host, " holds no ws(s):// signed_url"));
  }
  return url;
}

}  // namespace bridge::media_worker::agent_internal
