// Turns one WhatsApp Cloud API webhook body into bridge.v1 events
// (PROTOCOLS.md A2). Strict about the envelope, liberal about the content:
// unknown message types, unknown fields, numbers sent as strings, empty wa_id
// with a business-scoped user id, other `field`s — all are kept, never dropped.
// One malformed entry, change, message or status does not spoil the batch:
// it is skipped and named in `problems`, so that Meta does not retry the valid
// messages beside it for days.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "bridge/v1/ingest.pb.h"

namespace bridge::gateway {

// InvalidArgument (→ HTTP 400) only for a body that is not a WhatsApp webhook
// at all: not JSON, not an object, `object` not whatsapp_business_account, no
// `entry` array. Each skipped part adds one line to `problems` naming it by
// its JSON path, e.g. "entry[0].changes[1].value.metadata: expected an object".
absl::StatusOr<bridge::v1::DeliverRequest> ParseWebhook(
    absl::string_view body, std::vector<std::string>* problems = nullptr);

}  // namespace bridge::gateway
