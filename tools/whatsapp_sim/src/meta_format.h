// What Meta's bytes look like: webhook bodies (shape, key order and
// serialisation), ids (wamid, media ids, fbtrace ids), Graph error bodies,
// hashes. Pure functions; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace bridge::whatsapp_sim {

using ojson = nlohmann::ordered_json;

// Compact JSON as Meta writes it: non-ASCII as \uXXXX (surrogate pairs above
// the BMP) and '/' as "\/". Signatures must be computed over these bytes.
std::string SerializeLikeMeta(const ojson& body);

// Ids in Meta's formats. A wamid is base64 of a small binary record holding
// the user's number, like the real ones ("wamid.HBgL..."), so it may contain
// '/' and '+' — which the webhook serialisation then escapes.
std::string NewWamid(absl::string_view wa_id, bool inbound);
std::string NewMediaId();      // 15-16 digits
std::string NewFbtraceId();    // 11 characters
std::string RandomToken(int bytes);  // lowercase hex, for download URLs
std::string RandomDigits(int n);

std::string Sha256Base64(absl::string_view bytes);
size_t Utf8Length(absl::string_view s);  // code points, as Meta counts text
bool IsDigits(absl::string_view s);
// A business-scoped user id: country code, a dot, alphanumerics (and dots,
// for parent ids "US.ENT.…"), e.g. "US.13491208655302741918".
bool IsBsuid(absl::string_view s);
bool IsValidUtf8(absl::string_view s);  // JSON strings must be

// A Graph API error: {"error":{message,type,code,error_subcode?,error_data?,fbtrace_id}}.
struct GraphError {
  int http_status = 400;
  int code = 100;
  std::string message;
  std::string type = "OAuthException";
  int subcode = 0;
  std::string details;  // error_data.details (WhatsApp errors carry one)
  int retry_after_s = 0;
};
std::string GraphErrorBody(const GraphError& e);

GraphError InvalidTokenError();                       // 401, code 190
GraphError UnknownObjectError(absl::string_view verb, absl::string_view id);  // code 100/33
GraphError MissingParamError(absl::string_view param);  // code 100
GraphError InvalidParamError(absl::string_view details);  // code 100
GraphError BadValueError(absl::string_view details);  // code 131009
// A WhatsApp error such as 131053 "Media upload error": "(#code) title".
GraphError WhatsAppError(int http_status, int code, absl::string_view title,
                         absl::string_view details);
// The error an injected HTTP status stands for (429 -> 130429 throughput,
// 503 -> 2 temporarily unavailable, other 5xx -> 131000, 4xx -> 100).
GraphError FaultError(int http_status, int code_override, int retry_after_s);

// Webhook bodies (PROTOCOLS.md A2), keys in Meta's order as in the fixtures.
struct BusinessNumber {  // the business number a webhook is about
  std::string waba_id;
  std::string display_phone_number;
  std::string phone_number_id;
};
struct InboundMessage {
  std::string wa_id;    // the phone; empty for a user known only by BSUID
  std::string user_id;  // the BSUID (from_user_id, contacts[].user_id)
  std::string username;
  std::string profile_name;
  std::string wamid;
  int64_t timestamp = 0;
  std::string context_wamid;  // non-empty: a reply to this business message
  // type "text": text; type "audio": the media fields; "reaction": text =
  // the emoji; "edit": text = the new body; "reaction", "edit", "revoke":
  // target_wamid = the message they are about.
  std::string type;
  std::string text;
  std::string target_wamid;
  // A change before the message's own whose `value.metadata` is a string:
  // the batch must still deliver the valid message (issue #9).
  bool malformed_extra_change = false;
  std::string media_id, mime_type, sha256, url;  // url empty: left out
  bool voice = false;
};
ojson InboundWebhook(const BusinessNumber& to, const InboundMessage& m);

struct StatusUpdate {
  std::string wamid;
  std::string status;  // sent, delivered, read, played, failed
  int64_t timestamp = 0;
  std::string recipient_id;       // the phone ("" when sent to a BSUID)
  std::string recipient_user_id;  // the BSUID, when known
  int error_code = 0;             // failed: errors[0]
};
// Meta's title for a delivery error code ("Media upload error" ...).
std::string DeliveryErrorTitle(int code);
ojson StatusWebhook(const BusinessNumber& to, const StatusUpdate& s);

// A `calls` webhook (PROTOCOLS.md A6): `call` is the calls[] entry (id, from,
// event, timestamp, session or status/duration); the caller's contact is
// added as Meta does.
ojson CallWebhook(const BusinessNumber& to, ojson call, const std::string& wa_id,
                  const std::string& profile_name);

}  // namespace bridge::whatsapp_sim
