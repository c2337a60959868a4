// The worker's Graph API client's answer parsing (media_worker/src/
// graph_api_policy.h), which graph_api.cc feeds with every HTTP reply: Meta's
// error bodies, GET /{media_id}, the send and upload answers, and what a
// failure becomes (retry decision, delay, status with its GraphError payload).
// Input: byte 0 picks the HTTP status, byte 1 the Retry-After header, the
// rest is the body.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "graph_api_policy.h"
#include "media_worker/graph_api.h"

namespace {

namespace gi = bridge::media_worker::graph_internal;

constexpr int kStatuses[] = {200, 400, 401, 403, 404, 408, 429, 500, 502, 503, 0, 302};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  bridge::InitLogging("fuzz_graph_response", bridge::LogLevel::kError,
                      bridge::LogFormat::kText);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  gi::Reply reply;
  reply.http_status = kStatuses[data[0] % (sizeof(kStatuses) / sizeof(kStatuses[0]))];
  switch (data[1] % 4) {
    case 0: break;  // no Retry-After
    case 1: reply.retry_after_s = data[1] / 4; break;
    case 2: reply.retry_after_s = INT64_MAX - data[1]; break;
    case 3: reply.retry_after_s = INT64_MIN + data[1]; break;
  }
  reply.body.assign(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (reply.http_status == 0) reply.transport_error = "read timeout";
  reply.maybe_delivered = data[0] & 0x80;

  // The answers a success carries.
  (void)gi::ParseMediaInfo(reply.body);
  (void)gi::ParseMessageId(reply.body);
  (void)gi::ParseUploadId(reply.body);
  (void)gi::ParseSuccess(reply.body);
  (void)gi::IsSafeId(reply.body);

  // A failure: decoded, judged, delayed, reported.
  std::optional<gi::DecodedError> error = gi::DecodeGraphError(reply.http_status, reply.body);
  const bool retry = gi::ShouldRetry(reply, error);
  bridge::media_worker::GraphApiOptions options;
  for (int attempt = 1; attempt <= options.max_attempts; ++attempt) {
    absl::Duration d =
        gi::RetryDelay(options, attempt, error ? error->error.code : 0, reply.retry_after_s);
    if (d < absl::ZeroDuration() || d > options.max_backoff) abort();  // its documented range
  }
  absl::Status status = gi::FailureStatus("POST /v23.0/1/messages", reply, error,
                                          options.max_attempts, /*exhausted=*/retry);
  if (status.ok()) abort();
  std::optional<bridge::media_worker::GraphError> carried =
      bridge::media_worker::GraphErrorOf(status);
  if (error && (!carried || carried->code != error->error.code)) abort();
  absl::Status maybe = gi::MaybeSentStatus(status, reply);
  if (maybe.ok()) abort();
  return 0;
}
