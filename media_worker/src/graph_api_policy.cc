#include "graph_api_policy.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/redact.h"
#include "nlohmann/json.hpp"

namespace bridge::media_worker {
namespace {

using json = nlohmann::json;

constexpr char kGraphErrorUrl[] = "type.googleapis.com/bridge.media_worker.GraphError";
constexpr size_t kSnippetMax = 200;

json Parse(absl::string_view body) {
  return json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
}

std::string StrMember(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

// Meta sends codes as numbers; be liberal and take numeric strings too. A
// float outside int64's range (1e49, NaN) is no number we can use: converting
// it would be undefined behaviour, so it counts as absent (0).
int64_t IntMember(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    const double d = it->get<double>();
    constexpr double kLimit = 9223372036854775808.0;  // 2^63
    return d >= -kLimit && d < kLimit ? static_cast<int64_t>(d) : 0;
  }
  int64_t v = 0;
  if (it->is_string() && absl::SimpleAtoi(it->get<std::string>(), &v)) return v;
  return 0;
}

// A Graph code or status: one that does not fit an int is none (0), rather
// than wrapping around to some real code (2^32 + 190 is not 190).
int IntCode(const json& obj, const char* key) {
  const int64_t v = IntMember(obj, key);
  return v >= INT_MIN && v <= INT_MAX ? static_cast<int>(v) : 0;
}

// "(#131047) Re-engagement message" -> "Re-engagement message": the code is
// printed once, by us.
std::string StripCodePrefix(absl::string_view message) {
  if (absl::StartsWith(message, "(#")) {
    size_t close = message.find(") ");
    if (close != absl::string_view::npos) message.remove_prefix(close + 2);
  }
  return std::string(message);
}

// The start of a non-Graph error body, when it is short readable text (not
// HTML, not binary), for the status message.
std::string BodySnippet(absl::string_view body) {
  body = absl::StripAsciiWhitespace(body);
  if (body.empty() || body.front() == '<') return "";
  std::string out(body.substr(0, kSnippetMax));
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    if (static_cast<unsigned char>(c) < 0x20) return "";
  }
  return out;
}

absl::StatusCode CodeForGraph(const graph_internal::DecodedError& e) {
  switch (e.error.code) {
    case 190:
      return absl::StatusCode::kUnauthenticated;
    case 10:
      return absl::StatusCode::kPermissionDenied;
    case 100:  // subcode 33: the object (media id, number) does not exist
      return e.error.subcode == 33 ? absl::StatusCode::kNotFound
                                   : absl::StatusCode::kInvalidArgument;
    case 131008: case 131009: case 131051: case 131052: case 131053:
      return absl::StatusCode::kInvalidArgument;
    case 131047: case 131026: case 131049: case 368: case 131031: case 131062:
      return absl::StatusCode::kFailedPrecondition;
    default:
      break;
  }
  if (e.error.code >= 200 && e.error.code <= 299) return absl::StatusCode::kPermissionDenied;
  return absl::StatusCode::kUnknown;
}

absl::StatusCode CodeForHttp(int http_status) {
  if (http_status == 0) return absl::StatusCode::kUnavailable;
  if (http_status == 400 || http_status == 413) return absl::StatusCode::kInvalidArgument;
  if (http_status == 401) return absl::StatusCode::kUnauthenticated;
  if (http_status == 403) return absl::StatusCode::kPermissionDenied;
  if (http_status == 404 || http_status == 410) return absl::StatusCode::kNotFound;
  if (http_status == 429) return absl::StatusCode::kResourceExhausted;
  if (http_status >= 500) return absl::StatusCode::kUnavailable;
  return absl::StatusCode::kUnknown;
}

absl::StatusCode CodeFor(const graph_internal::Reply& r,
                         const std::optional<graph_internal::DecodedError>& e, bool exhausted) {
  const int code = e ? e->error.code : 0;
  if (exhausted) {
    return graph_internal::IsThrottleCode(code) || r.http_status == 429
               ? absl::StatusCode::kResourceExhausted
               : absl::StatusCode::kUnavailable;
  }
  if (e) {
    absl::StatusCode c = CodeForGraph(*e);
    if (c != absl::StatusCode::kUnknown) return c;
  }
  return CodeForHttp(r.http_status);
}

}  // namespace

std::optional<GraphError> GraphErrorOf(const absl::Status& status) {
  auto payload = status.GetPayload(kGraphErrorUrl);  // absl::optional here, not std::
  if (!payload) return std::nullopt;
  json j = Parse(std::string(*payload));
  if (!j.is_object()) return std::nullopt;
  GraphError e;
  e.http_status = IntCode(j, "http_status");
  e.code = IntCode(j, "code");
  e.subcode = IntCode(j, "subcode");
  e.message = StrMember(j, "message");
  e.retryable = j.contains("retryable") && j["retryable"] == true;
  e.maybe_sent = j.contains("maybe_sent") && j["maybe_sent"] == true;
  return e;
}

namespace graph_internal {

void AttachGraphError(const GraphError& e, absl::Status* status) {
  json j = {{"http_status", e.http_status}, {"code", e.code},          {"subcode", e.subcode},
            {"message", e.message},         {"retryable", e.retryable},
            {"maybe_sent", e.maybe_sent}};
  status->SetPayload(kGraphErrorUrl,
                     absl::Cord(j.dump(-1, ' ', false, json::error_handler_t::replace)));
}

bool IsThrottleCode(int code) {
  return code == 4 || code == 80007 || code == 130429 || code == 131056;
}

bool IsRetryableCode(int code) {
  return IsThrottleCode(code) || code == 131057 || code == 131000 || code == 131016 ||
         code == 1 || code == 2;
}

bool IsPermanentCode(int code) {
  switch (code) {
    case 131047: case 131026: case 131049: case 131062: case 100: case 131008: case 131009:
    case 368: case 131031: case 190:
      return true;
    default:
      return false;
  }
}

std::optional<DecodedError> DecodeGraphError(int http_status, absl::string_view body) {
  json j = Parse(body);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return std::nullopt;
  const json& e = j["error"];
  DecodedError d;
  d.error.http_status = http_status;
  d.error.code = IntCode(e, "code");
  d.error.subcode = IntCode(e, "error_subcode");
  d.error.message = Redact(StripCodePrefix(StrMember(e, "message")));
  if (e.contains("error_data") && e["error_data"].is_object()) {
    d.details = Redact(StrMember(e["error_data"], "details"));
  }
  d.fbtrace_id = StrMember(e, "fbtrace_id");
  // The code decides; only an unknown code falls back on the HTTP status.
  const bool overloaded = http_status >= 500 || http_status == 429;
  d.error.retryable =
      IsRetryableCode(d.error.code) || (!IsPermanentCode(d.error.code) && overloaded);
  return d;
}

bool ShouldRetry(const Reply& reply, const std::optional<DecodedError>& error) {
  if (error) return error->error.retryable;
  if (reply.http_status == 0) return reply.transport_retryable;
  return reply.http_status >= 500 || reply.http_status == 429;
}

absl::Duration RetryDelay(const GraphApiOptions& options, int failed_attempt, int code,
                          std::optional<int64_t> retry_after_s) {
  const int n = std::clamp(failed_attempt, 1, 16);
  absl::Duration d = code == 131056 ? absl::Seconds(std::pow(4.0, n))  // ~1 msg / 6 s per user
                                    : options.initial_backoff * (int64_t{1} << (n - 1));
  if (retry_after_s && *retry_after_s > 0) d = std::max(d, absl::Seconds(*retry_after_s));
  return std::max(absl::ZeroDuration(), std::min(d, options.max_backoff));
}

absl::Status FailureStatus(absl::string_view what, const Reply& reply,
                           const std::optional<DecodedError>& error, int attempts,
                           bool exhausted) {
  std::string msg;
  if (error) {
    msg = absl::StrCat("graph error ", error->error.code, ": ", error->error.message);
    if (!error->details.empty() && error->details != error->error.message) {
      absl::StrAppend(&msg, " (", error->details, ")");
    }
  } else if (reply.http_status == 0) {
    msg = absl::StrCat("graph call failed: ", reply.transport_error);
  } else {
    msg = absl::StrCat("graph call failed: HTTP ", reply.http_status);
    if (std::string s = BodySnippet(reply.body); !s.empty()) absl::StrAppend(&msg, ": ", s);
  }
  absl::StrAppend(&msg, " [", what);
  if (reply.http_status != 0) absl::StrAppend(&msg, ", HTTP ", reply.http_status);
  if (error && !error->fbtrace_id.empty()) {
    absl::StrAppend(&msg, ", fbtrace_id ", error->fbtrace_id);
  }
  if (attempts > 1) absl::StrAppend(&msg, ", ", attempts, " attempts");
  msg += "]";
  absl::Status status(CodeFor(reply, error, exhausted), Redact(msg));
  if (error) AttachGraphError(error->error, &status);
  return status;
}

absl::Status MaybeSentStatus(const absl::Status& failure, const Reply& reply) {
  GraphError g;
  g.message = Redact(reply.transport_error);
  g.maybe_sent = true;
  absl::Status status(absl::StatusCode::kDeadlineExceeded,
                      absl::StrCat(failure.message(),
                                   " (sent, no answer: not repeated, so that it cannot arrive twice)"));
  AttachGraphError(g, &status);
  return status;
}

// "host[:port]" -> "host", lower case; IPv6 literals keep their brackets.
std::string HostName(absl::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon != absl::string_view::npos && host_port.back() != ']') {
    host_port = host_port.substr(0, colon);
  }
  return absl::AsciiStrToLower(host_port);
}

bool TokenMayGoTo(absl::string_view url, absl::string_view graph_base_url,
                  const std::vector<std::string>& media_hosts) {
  const std::string target = HostOf(url);
  if (target.empty()) return false;
  if (target == HostOf(graph_base_url)) return true;
  if (!absl::StartsWith(url, "https://")) return false;  // media hosts only over TLS
  const std::string host = HostName(target);
  for (const std::string& pattern : media_hosts) {
    const std::string p = absl::AsciiStrToLower(pattern);
    if (absl::StartsWith(p, "*.")) {
      if (absl::EndsWith(host, p.substr(1)) && host.size() > p.size() - 1) return true;
    } else if (host == p) {
      return true;
    }
  }
  return false;
}

bool IsSafeId(absl::string_view id) {
  if (id.empty() || id.size() > 256) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
           c == '.';
  });
}

absl::StatusOr<MediaInfo> ParseMediaInfo(absl::string_view body) {
  json j = Parse(body);
  if (!j.is_object() || StrMember(j, "url").empty()) {
    return absl::UnknownError("graph media lookup answered without a url");
  }
  MediaInfo m;
  m.id = StrMember(j, "id");
  m.url = StrMember(j, "url");
  m.mime_type = StrMember(j, "mime_type");
  m.sha256_b64 = StrMember(j, "sha256");
  m.file_size = IntMember(j, "file_size");  // a number or a string of digits
  return m;
}

absl::StatusOr<std::string> ParseMessageId(absl::string_view body) {
  json j = Parse(body);
  if (j.is_object() && j.contains("messages") && j["messages"].is_array() &&
      !j["messages"].empty() && j["messages"][0].is_object()) {
    std::string id = StrMember(j["messages"][0], "id");
    if (!id.empty()) return id;
  }
  return absl::UnknownError("graph send answered without messages[0].id");
}

absl::StatusOr<std::string> ParseUploadId(absl::string_view body) {
  json j = Parse(body);
  std::string id = j.is_object() ? StrMember(j, "id") : "";
  if (id.empty()) return absl::UnknownError("graph media upload answered without an id");
  return id;
}

absl::Status ParseSuccess(absl::string_view body) {
  json j = Parse(body);
  if (j.is_object() && j.contains("success") && j["success"] == true) return absl::OkStatus();
  return absl::UnknownError("graph mark-read answered without success: true");
}

}  // namespace graph_internal
}  // namespace bridge::media_worker
