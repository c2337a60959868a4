#include "conversation_eraser.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/url.h"
#include "httplib.h"

namespace bridge::controller {
namespace {

constexpr char kConversationsPath[] = "/v1/convai/conversations/";
constexpr size_t kMaxDetail = 200;

// ELEVENLABS_BASE_URL may name the WebSocket scheme; REST goes over HTTP(S).
std::string RestScheme(const std::string& base_url) {
  std::string url(absl::StripAsciiWhitespace(base_url));
  if (absl::StartsWithIgnoreCase(url, "wss://")) return absl::StrCat("https://", url.substr(6));
  if (absl::StartsWithIgnoreCase(url, "ws://")) return absl::StrCat("http://", url.substr(5));
  return url;
}

// What an error answer may show: short and redacted (a body may echo input).
std::string Detail(const std::string& body) {
  return Redact(body.size() > kMaxDetail ? body.substr(0, kMaxDetail) : body);
}

absl::Status StatusFor(int status, const std::string& what, const std::string& body) {
  if ((status >= 200 && status < 300) || status == 404) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, " answered HTTP ", status, ": ", Detail(body));
  if (status == 401 || status == 403) {
    return absl::PermissionDeniedError(
        absl::StrCat(message, " (ElevenLabs refused the key: check ELEVENLABS_API_KEY)"));
  }
  if (status == 408 || status == 429 || status >= 500) return absl::UnavailableError(message);
  return absl::FailedPreconditionError(message);
}

class ElevenLabsEraser final : public ConversationEraser {
 public:
  ElevenLabsEraser(HttpClient rest, std::string api_key)
      : client_(std::move(rest.client)),
        prefix_(std::move(rest.prefix)),
        host_(std::move(rest.host)),
        api_key_(std::move(api_key)) {}

  absl::Status Delete(const std::string& conversation_id) override {
    if (conversation_id.empty()) return absl::InvalidArgumentError("no conversation id");
    const std::string what =
        absl::StrCat("deleting ElevenLabs conversation ", conversation_id, " at ", host_);
    const std::string path = absl::StrCat(prefix_, kConversationsPath, UrlEncode(conversation_id));
    httplib::Result res = [&] {
      // httplib's client is not safe for concurrent requests.
      absl::MutexLock lock(&mu_);
      return client_->Delete(path, {{"xi-api-key", api_key_}});
    }();
    if (!res) {
      return absl::UnavailableError(absl::StrCat(what, " failed: ", httplib::to_string(res.error())));
    }
    absl::Status s = StatusFor(res->status, what, res->body);
    if (s.ok()) {
      LogInfo("ElevenLabs conversation erased",
              {{"conversation_id", conversation_id}, {"host", host_},
               {"already_gone", res->status == 404 ? "true" : "false"}});
    }
    return s;
  }

 private:
  absl::Mutex mu_;
  const std::unique_ptr<httplib::Client> client_ ABSL_PT_GUARDED_BY(mu_);
  const std::string prefix_;  // the base URL's path ("" or "/prefix")
  const std::string host_;    // what messages may name
  const std::string api_key_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ConversationEraser>> NewElevenLabsConversationEraser(
    const std::string& base_url, const std::string& api_key, absl::Duration timeout,
    const std::string& ca_file) {
  if (api_key.empty()) {
    return absl::InvalidArgumentError("erasing ElevenLabs conversations needs ELEVENLABS_API_KEY");
  }
  absl::StatusOr<HttpClient> rest = NewHttpClient(RestScheme(base_url), timeout, ca_file);
  if (!rest.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("ELEVENLABS_BASE_URL: ", rest.status().message()));
  }
  RegisterSecret(api_key);
  return std::make_unique<ElevenLabsEraser>(*std::move(rest), api_key);
}

}  // namespace bridge::controller
