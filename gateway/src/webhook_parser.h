// Turns one WhatsApp Cloud API webhook body into bridge.v1 events
// (PROTOCOLS.md A2). Strict about the envelope, liberal about the content:
// unknown message types, unknown fields, numbers sent as strings, empty wa_id
// with a business-scoped user id, other `field`s — all are kept, never dropped.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bridge/v1/ingest.pb.h"

namespace bridge::gateway {

// InvalidArgument (→ HTTP 400) names what is wrong and where, e.g.
// "entry[0].changes[0].value.metadata: expected an object".
absl::StatusOr<bridge::v1::DeliverRequest> ParseWebhook(absl::string_view body);

}  // namespace bridge::gateway
