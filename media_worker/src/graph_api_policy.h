// The Graph client's decisions, kept apart from the HTTP plumbing so they can
// be tested without sockets (PROTOCOLS.md A5): decoding Meta's error bodies,
// which failures deserve another attempt and after how long, which absl code
// and message a failure becomes, and parsing the answers we read.
// No httplib here: graph_api.cc is the only translation unit that includes it.
#pragma once

#include "common/url.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "media_worker/graph_api.h"

namespace bridge::media_worker::graph_internal {

// One HTTP exchange as the policy sees it.
struct Reply {
  int http_status = 0;                  // 0: no answer (connect/TLS/read failure)
  std::string body;                     // the answer's body (for errors: capped)
  std::optional<int64_t> retry_after_s; // a Retry-After header in seconds
  std::string transport_error;          // why there was no answer
  bool transport_retryable = true;      // false for certificate problems
  bool maybe_delivered = false;         // sent, then no answer: it may have been carried out
};

// Meta's {"error":{...}} body, decoded. GraphError::message is redacted and
// without the "(#code) " prefix Meta repeats.
struct DecodedError {
  GraphError error;
  std::string details;     // error_data.details (redacted)
  std::string fbtrace_id;  // for Meta support
};

// nullopt when the body is not a Graph error (plain-text 404s, HTML 502s...).
std::optional<DecodedError> DecodeGraphError(int http_status, absl::string_view body);

// A5: codes that ask to be retried later, and the throttling subset of them
// (their exhaustion is ResourceExhausted, not Unavailable).
bool IsRetryableCode(int code);
bool IsThrottleCode(int code);
// Codes that must never be retried, whatever the HTTP status says.
bool IsPermanentCode(int code);

// Whether another attempt can help. Decided on the Graph code when there is
// one; otherwise on the HTTP status (5xx, 429) or the transport failure.
bool ShouldRetry(const Reply& reply, const std::optional<DecodedError>& error);

// The wait before attempt `failed_attempt + 1`: initial_backoff doubling
// (4^n seconds for the pair rate limit 131056), at least Retry-After, at most
// max_backoff.
absl::Duration RetryDelay(const GraphApiOptions& options, int failed_attempt, int code,
                          std::optional<int64_t> retry_after_s);

// The status a failed call returns: "graph error CODE: MESSAGE (details)
// [what, HTTP n, ...]", carrying the GraphError as a payload when there is
// one. `what` names the request ("POST /v23.0/ID/messages"), never with a
// query string. `exhausted`: retryable but out of attempts.
absl::Status FailureStatus(absl::string_view what, const Reply& reply,
                           const std::optional<DecodedError>& error, int attempts,
                           bool exhausted);

// Attaches `error` to `status` as the payload GraphErrorOf reads.
void AttachGraphError(const GraphError& error, absl::Status* status);

// The status of a request that must not be repeated (POST /messages) after it
// may have been carried out: says so, and sets GraphError::maybe_sent.
absl::Status MaybeSentStatus(const absl::Status& failure, const Reply& reply);

// Whether the bearer token may go to `url`: the Graph API's own host (the
// base URL's host and port), or a host matching one of `media_hosts`
// ("lookaside.fbsbx.com", or "*.fbsbx.com" for any subdomain). A webhook
// names media URLs, and anyone who can sign or forge one could otherwise
// name their own host and collect the token.
bool TokenMayGoTo(absl::string_view url, absl::string_view graph_base_url,
                  const std::vector<std::string>& media_hosts);

// URL handling lives in common/url.h (download URLs carry signatures).
using ::bridge::SplitUrl;
using ::bridge::StripQuery;
using ::bridge::UrlParts;

// True for ids we put in a URL path: no '/', '?', '#', '%' or spaces.
bool IsSafeId(absl::string_view id);

// Answers: GET /{media_id}; messages[0].id of a send; {"id"} of an upload.
absl::StatusOr<MediaInfo> ParseMediaInfo(absl::string_view body);
absl::StatusOr<std::string> ParseMessageId(absl::string_view body);
absl::StatusOr<std::string> ParseUploadId(absl::string_view body);
absl::Status ParseSuccess(absl::string_view body);  // {"success":true}

}  // namespace bridge::media_worker::graph_internal
