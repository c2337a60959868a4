// The gateway's webhook parser (gateway/src/webhook_parser.h) on arbitrary
// bodies: it must never crash, and what it accepts must be a DeliverRequest
// that serializes and parses back to itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "bridge/v1/ingest.pb.h"
#include "common/log.h"
#include "webhook_parser.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Skipped parts are logged; at this level only errors are written.
  bridge::InitLogging("fuzz_webhook", bridge::LogLevel::kError, bridge::LogFormat::kText);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view body(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> problems;
  absl::StatusOr<bridge::v1::DeliverRequest> parsed = bridge::gateway::ParseWebhook(body, &problems);
  if (!parsed.ok()) {
    if (!absl::IsInvalidArgument(parsed.status())) abort();  // only 400s are documented
    return 0;
  }
  std::string wire;
  if (!parsed->SerializeToString(&wire)) abort();
  bridge::v1::DeliverRequest back;
  if (!back.ParseFromString(wire) || back.SerializeAsString() != wire) abort();
  return 0;
}
