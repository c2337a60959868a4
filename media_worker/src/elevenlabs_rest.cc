#include "elevenlabs_rest.h"

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/http_client.h"
#include "common/log.h"
#include "agent_protocol.h"
#include "common/redact.h"
#include "event_counters.h"
#include "httplib.h"
#include "media_worker/speech_to_text.h"
#include "nlohmann/json.hpp"

namespace bridge::media_worker::agent_internal {
namespace {

using nlohmann::json;

constexpr size_t kMaxDetail = 200;

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

absl::Status HttpError(absl::string_view what, int status, const std::string& host,
                       const std::string& body) {
  std::string message = absl::StrCat(what, " request to ", host, " refused with HTTP ",
                                     status, ": ", ErrorDetail(body));
  if (status == 408 || status == 429 || status >= 500) return absl::UnavailableError(message);
  if (status == 401 || status == 403) {
    absl::StrAppend(&message, " (check ELEVENLABS_API_KEY)");
  } else if (status == 404) {
    absl::StrAppend(&message, " (check ELEVENLABS_AGENT_ID)");
  }
  return absl::FailedPreconditionError(message);
}

absl::Status NoAnswer(absl::string_view what, const std::string& host, httplib::Error error) {
  return absl::UnavailableError(
      absl::StrCat(what, " request to ", host, " failed: ", httplib::to_string(error)));
}

class SpeechToTextImpl final : public SpeechToText {
 public:
  SpeechToTextImpl(SpeechToTextOptions options, HttpClient rest)
      : options_(std::move(options)), rest_(std::move(rest)) {}

  absl::StatusOr<Transcript> Transcribe(const std::string& bytes, const std::string& mime_type,
                                        const std::string& filename) override {
    httplib::MultipartFormDataItems form = {
        {"file", bytes, filename, mime_type.empty() ? "application/octet-stream" : mime_type},
        {"model_id", options_.model_id, "", ""}};
    if (!options_.language_code.empty()) {
      form.push_back({"language_code", options_.language_code, "", ""});
    }
    // One client per worker, calls from many turn threads: httplib's client
    // is not safe for concurrent requests.
    absl::MutexLock lock(&mu_);
    httplib::Result res = rest_.client->Post(absl::StrCat(rest_.prefix, "/v1/speech-to-text"),
                                             {{"xi-api-key", options_.api_key}}, form);
    if (!res) return NoAnswer("speech-to-text", rest_.host, res.error());
    if (res->status != 200) return HttpError("speech-to-text", res->status, rest_.host, res->body);
    json j = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      return absl::UnavailableError(
          absl::StrCat("speech-to-text answer from ", rest_.host, " holds no text"));
    }
    Transcript t;
    t.text = j["text"].get<std::string>();
    if (j.contains("language_code") && j["language_code"].is_string()) {
      t.language_code = j["language_code"].get<std::string>();
    }
    return t;
  }

 private:
  const SpeechToTextOptions options_;
  absl::Mutex mu_;
  HttpClient rest_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::string> FetchSignedUrl(const SignedUrlRequest& request) {
  absl::StatusOr<HttpClient> rest = NewHttpClient(request.base_url, request.timeout, request.ca_file);
  if (!rest.ok()) return rest.status();
  const std::string& host = rest->host;
  const std::string path = absl::StrCat(rest->prefix,
                                        "/v1/convai/conversation/get-signed-url?agent_id=",
                                        UrlEncode(request.agent_id));
  httplib::Result res = rest->client->Get(path, {{"xi-api-key", request.api_key}});
  if (!res) return NoAnswer("signed URL", host, res.error());
  if (res->status != 200) {
    CountAgentRefusal(res->status);  // the concurrency limit may answer here, before the socket
    return HttpError("signed URL", res->status, host, res->body);
  }
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

namespace bridge::media_worker {

absl::StatusOr<std::unique_ptr<SpeechToText>> NewSpeechToText(const SpeechToTextOptions& options) {
  if (options.api_key.empty()) {
    return absl::InvalidArgumentError(
        "speech-to-text needs ELEVENLABS_API_KEY (or use --voice_input=stream)");
  }
  absl::StatusOr<std::string> base = agent_internal::NormalizeBaseUrl(options.base_url);
  if (!base.ok()) return base.status();
  if (!absl::StartsWithIgnoreCase(*base, "http")) {
    return absl::InvalidArgumentError("speech-to-text needs an http(s):// ELEVENLABS_BASE_URL");
  }
  RegisterSecret(options.api_key);
  auto rest = NewHttpClient(*base, options.timeout, options.ca_file);
  if (!rest.ok()) return rest.status();
  return std::unique_ptr<SpeechToText>(new agent_internal::SpeechToTextImpl(options, *std::move(rest)));
}

}  // namespace bridge::media_worker
