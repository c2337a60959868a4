#include "meta_format.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "whatsapp_sim/whatsapp_sim.h"

namespace bridge::whatsapp_sim {
namespace {

std::string RandomBytes(int n) {
  std::string out(static_cast<size_t>(n), '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), n);
  return out;
}

std::string Hex(const unsigned char* p, size_t n, bool upper = false) {
  std::string out = absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(p), n));
  if (upper) absl::AsciiStrToUpper(&out);
  return out;
}

}  // namespace

std::string SerializeLikeMeta(const ojson& body) {
  std::string ascii = body.dump(-1, ' ', /*ensure_ascii=*/true);
  // Outside strings JSON has no '/', so a global replace touches strings only.
  std::string out;
  out.reserve(ascii.size() + ascii.size() / 16);
  for (char c : ascii) {
    if (c == '/') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

std::string NewWamid(absl::string_view wa_id, bool inbound) {
  // The layout of real wamids (decode one): 1c 18 <len> <number> 15 02 00
  // <12 in | 11 out> 18 <len> <hex id> 00.
  const int id_len = inbound ? 20 : 18;
  std::string raw = "\x1c\x18";
  raw.push_back(static_cast<char>(wa_id.size()));
  absl::StrAppend(&raw, wa_id);
  raw.append("\x15\x02\x00", 3);
  raw.push_back(inbound ? '\x12' : '\x11');
  raw.push_back('\x18');
  raw.push_back(static_cast<char>(id_len));
  std::string rnd = RandomBytes(id_len / 2);
  absl::StrAppend(&raw, Hex(reinterpret_cast<const unsigned char*>(rnd.data()), rnd.size(),
                            /*upper=*/true));
  raw.push_back('\0');
  return absl::StrCat("wamid.", absl::Base64Escape(raw));
}

std::string RandomDigits(int n) {
  std::string rnd = RandomBytes(n);
  std::string out;
  for (char c : rnd) out.push_back(static_cast<char>('0' + static_cast<unsigned char>(c) % 10));
  if (!out.empty() && out[0] == '0') out[0] = '1';
  return out;
}

std::string NewMediaId() { return RandomDigits(16); }

std::string NewFbtraceId() {
  std::string id = absl::WebSafeBase64Escape(RandomBytes(9));  // 12 chars
  return id.substr(0, 11);
}

std::string RandomToken(int bytes) {
  std::string rnd = RandomBytes(bytes);
  return Hex(reinterpret_cast<const unsigned char*>(rnd.data()), rnd.size());
}

std::string Sha256Base64(absl::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

size_t Utf8Length(absl::string_view s) {
  // Counts lead bytes: continuation bytes are 10xxxxxx.
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

bool IsDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), absl::ascii_isdigit);
}

bool IsBsuid(absl::string_view s) {
  if (s.size() < 4 || s.size() > 140 || !absl::ascii_isupper(s[0]) || !absl::ascii_isupper(s[1]) ||
      s[2] != '.') {
    return false;
  }
  return std::all_of(s.begin() + 3, s.end(),
                     [](char c) { return absl::ascii_isalnum(c) || c == '.'; });
}

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0
                      : (c >> 5) == 0x6 ? 1
                      : (c >> 4) == 0xE ? 2
                      : (c >> 3) == 0x1E ? 3 : -1;
    if (extra < 0 || (extra > 0 && i + extra >= s.size())) return false;
    uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += 1 + extra;
  }
  return true;
}

std::string GraphErrorBody(const GraphError& e) {
  ojson err;
  err["message"] = e.message;
  err["type"] = e.type;
  err["code"] = e.code;
  if (e.subcode != 0) err["error_subcode"] = e.subcode;
  if (!e.details.empty()) {
    err["error_data"] = {{"messaging_product", "whatsapp"}, {"details", e.details}};
  }
  err["fbtrace_id"] = NewFbtraceId();
  return SerializeLikeMeta(ojson{{"error", err}});
}

GraphError InvalidTokenError() {
  return {401, 190, "Invalid OAuth access token - Cannot parse access token"};
}

GraphError UnknownObjectError(absl::string_view verb, absl::string_view id) {
  GraphError e{400, 100,
               absl::StrCat("Unsupported ", verb, " request. Object with ID '", id,
                            "' does not exist, cannot be loaded due to missing permissions, "
                            "or does not support this operation. Please read the Graph API "
                            "documentation at https://developers.facebook.com/docs/graph-api")};
  e.type = "GraphMethodException";
  e.subcode = 33;
  return e;
}

GraphError MissingParamError(absl::string_view param) {
  return {400, 100, absl::StrCat("(#100) The parameter ", param, " is required.")};
}

GraphError InvalidParamError(absl::string_view details) {
  GraphError e{400, 100, "(#100) Invalid parameter"};
  e.details = std::string(details);
  return e;
}

GraphError BadValueError(absl::string_view details) {
  return WhatsAppError(400, 131009, "Parameter value is not valid", details);
}

GraphError WhatsAppError(int http_status, int code, absl::string_view title,
                         absl::string_view details) {
  GraphError e{http_status, code, absl::StrCat("(#", code, ") ", title)};
  e.details = std::string(details);
  return e;
}

GraphError FaultError(int http_status, int code_override, int retry_after_s) {
  GraphError e;
  if (http_status == 429) {
    e = WhatsAppError(429, 130429, "Rate limit hit",
                      "Cloud API message throughput has been reached.");
  } else if (http_status == 503) {
    e = {503, 2, "Service temporarily unavailable"};
  } else if (http_status >= 500) {
    e = WhatsAppError(http_status, 131000, "Something went wrong",
                      "Message failed to send due to an unknown error.");
  } else {
    e = InvalidParamError("injected fault");
    e.http_status = http_status;
  }
  if (code_override != 0) {
    e.code = code_override;
    e.message = absl::StrCat("(#", code_override, ") injected fault");
  }
  e.retry_after_s = retry_after_s;
  return e;
}

namespace {

ojson Envelope(const BusinessNumber& to, ojson value) {
  ojson change;
  change["value"] = std::move(value);
  change["field"] = "messages";
  ojson entry;
  entry["id"] = to.waba_id;
  entry["changes"] = ojson::array({std::move(change)});
  ojson body;
  body["object"] = "whatsapp_business_account";
  body["entry"] = ojson::array({std::move(entry)});
  return body;
}

ojson ValueHead(const BusinessNumber& to) {
  ojson value;
  value["messaging_product"] = "whatsapp";
  value["metadata"] = {{"display_phone_number", to.display_phone_number},
                       {"phone_number_id", to.phone_number_id}};
  return value;
}

}  // namespace

namespace {

// The type-specific object of an inbound message.
ojson Content(const InboundMessage& m) {
  if (m.type == "text") return {{"body", m.text}};
  if (m.type == "reaction") return {{"message_id", m.target_wamid}, {"emoji", m.text}};
  if (m.type == "revoke") return {{"original_message_id", m.target_wamid}};
  if (m.type == "edit") {
    ojson inner;
    inner["type"] = "text";
    inner["text"] = {{"body", m.text}};
    ojson edit;
    edit["original_message_id"] = m.target_wamid;
    edit["message"] = std::move(inner);
    return edit;
  }
  ojson media;
  media["mime_type"] = m.mime_type;
  media["sha256"] = m.sha256;
  media["id"] = m.media_id;
  if (!m.url.empty()) media["url"] = m.url;
  if (m.type == "audio") media["voice"] = m.voice;
  return media;
}

// A change Meta would never send: what a batch with one bad part looks like.
ojson MalformedChange() {
  ojson change;
  change["value"] = {{"messaging_product", "whatsapp"}, {"metadata", "not an object"}};
  change["field"] = "messages";
  return change;
}

}  // namespace

ojson CallWebhook(const BusinessNumber& to, ojson call, const std::string& wa_id,
                  const std::string& profile_name) {
  ojson value = ValueHead(to);
  value["contacts"] = ojson::array({{{"profile", {{"name", profile_name}}}, {"wa_id", wa_id}}});
  value["calls"] = ojson::array({std::move(call)});
  ojson body = Envelope(to, std::move(value));
  body["entry"][0]["changes"][0]["field"] = "calls";
  return body;
}

ojson InboundWebhook(const BusinessNumber& to, const InboundMessage& m) {
  ojson msg;
  if (!m.context_wamid.empty()) {
    msg["context"] = {{"from", to.display_phone_number}, {"id", m.context_wamid}};
  }
  // The phone only while Meta shares it; the BSUID always once a user has one.
  if (!m.wa_id.empty()) msg["from"] = m.wa_id;
  if (!m.user_id.empty()) msg["from_user_id"] = m.user_id;
  msg["id"] = m.wamid;
  msg["timestamp"] = absl::StrCat(m.timestamp);  // Meta sends strings
  msg["type"] = m.type;
  // request_welcome (the user opened the chat) carries no content object.
  if (m.type != "request_welcome") msg[m.type] = Content(m);
  ojson profile;
  profile["name"] = m.profile_name;
  if (!m.username.empty()) profile["username"] = m.username;
  ojson contact;
  contact["profile"] = std::move(profile);
  if (!m.wa_id.empty()) contact["wa_id"] = m.wa_id;
  if (!m.user_id.empty()) contact["user_id"] = m.user_id;
  ojson value = ValueHead(to);
  value["contacts"] = ojson::array({std::move(contact)});
  value["messages"] = ojson::array({std::move(msg)});
  ojson body = Envelope(to, std::move(value));
  if (m.malformed_extra_change) {
    ojson& changes = body["entry"][0]["changes"];
    changes.insert(changes.begin(), MalformedChange());
  }
  return body;
}

std::string DeliveryErrorTitle(int code) {
  switch (code) {
    case 131053: return "Media upload error";
    case 131026: return "Message undeliverable";
    case 131047: return "Re-engagement message";
    case 131062: return "Business-scoped user ID recipients not supported for this message type";
    default: return "Message failed to send";
  }
}

ojson StatusWebhook(const BusinessNumber& to, const StatusUpdate& s) {
  ojson st;
  st["id"] = s.wamid;
  st["status"] = s.status;
  st["timestamp"] = absl::StrCat(s.timestamp);
  st["recipient_id"] = s.recipient_id;
  if (!s.recipient_user_id.empty()) st["recipient_user_id"] = s.recipient_user_id;
  if (s.status == "sent") {  // as in fixtures/webhooks/status_sent.json
    st["pricing"] = {{"billable", true},
                     {"pricing_model", "PMP"},
                     {"type", "free_customer_service"},
                     {"category", "service"}};
  }
  if (s.status == "failed") {  // as in fixtures/webhooks/status_failed.json
    ojson err;
    err["code"] = s.error_code;
    err["title"] = DeliveryErrorTitle(s.error_code);
    err["message"] = DeliveryErrorTitle(s.error_code);
    err["error_data"] = {{"details", "Injected delivery failure (whatsapp-sim fault)."}};
    err["href"] = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";
    st["errors"] = ojson::array({std::move(err)});
  }
  ojson value = ValueHead(to);
  value["statuses"] = ojson::array({std::move(st)});
  return Envelope(to, std::move(value));
}

absl::Duration WebhookRetryDelay(int attempt, absl::Duration base) {
  // Meta retries a failed delivery at once, then "with decreasing frequency"
  // (exponential backoff) for days. Here: attempt 2 is immediate, attempt 3
  // waits `base`, then 2x, 4x ... capped at one hour so a long-running sim
  // keeps trying at a sane rate.
  if (attempt <= 2) return absl::ZeroDuration();
  const int doublings = std::min(attempt - 3, 20);
  return std::min(base * (int64_t{1} << doublings), absl::Hours(1));
}

}  // namespace bridge::whatsapp_sim
