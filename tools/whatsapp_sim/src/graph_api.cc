// The business side: Graph API routes (PROTOCOLS.md A3-A5) under any
// /vNN.N/ prefix, and the media download URLs they hand out.
#include <openssl/crypto.h>

#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "audio/ogg_opus_decoder.h"
#include "common/log.h"
#include "sim_core.h"

namespace bridge::whatsapp_sim {
namespace {

using json = nlohmann::json;

constexpr char kVersion[] = R"(/v\d+\.\d+)";
constexpr size_t kTextMax = 4096;  // characters, PROTOCOLS.md A4

// A string member, or "" when absent or not a string (json::value would throw).
std::string Str(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

void Fail(HttpResponse& res, const GraphError& e) {
  res.Json(e.http_status, GraphErrorBody(e));
  if (e.retry_after_s > 0) res.headers.emplace_back("Retry-After", absl::StrCat(e.retry_after_s));
  if (e.code == 190) {
    res.headers.emplace_back("WWW-Authenticate",
                             "OAuth \"Facebook Platform\" \"invalid_token\" \"" + e.message + "\"");
  }
}

void Ok(HttpResponse& res, const ojson& body) { res.Json(200, SerializeLikeMeta(body)); }

bool SameSecret(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Meta takes the token as "Authorization: Bearer T" (or "OAuth T") or as an
// access_token parameter. With no --access_token any token is accepted, but
// one is still required.
bool Authorized(const HttpRequest& req, const SimCore& core) {
  std::string token = req.Param("access_token");
  const std::string header = req.Header("authorization");
  absl::string_view h = header;
  if (absl::StartsWithIgnoreCase(h, "Bearer ")) token = std::string(h.substr(7));
  else if (absl::StartsWithIgnoreCase(h, "OAuth ")) token = std::string(h.substr(6));
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) return false;
  return core.opts().access_token.empty() || SameSecret(token, core.opts().access_token);
}

// Latency fault, then the token: every Graph answer goes through this.
bool Admit(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  core.ApplyLatency();
  if (Authorized(req, core)) return true;
  LogInfo("graph call refused: bad token", {{"path", req.path}});
  Fail(res, InvalidTokenError());
  return false;
}

// An injected status for this kind of call, if one is due.
bool Faulted(FaultKind kind, HttpResponse& res, SimCore& core) {
  std::optional<StatusFault> f = core.state().TakeFault(kind);
  if (!f) return false;
  Fail(res, FaultError(f->status, f->code, f->retry_after_s));
  return true;
}

bool IsOurNumber(const std::string& id, HttpResponse& res, SimCore& core) {
  if (id == core.opts().phone_number_id) return true;
  Fail(res, UnknownObjectError("post", id));
  return false;
}

// ---------------------------------------------------------------- media

// Meta accepts audio/ogg only as Opus, mono. Only the header matters, so
// pages are fed until OpusHead has been read (no decoding of the audio).
absl::Status CheckOggOpusMono(absl::string_view bytes) {
  auto dec = audio::OggOpusDecoder::Create(48000);
  if (!dec.ok()) return dec.status();
  constexpr size_t kChunk = 4096;
  for (size_t off = 0; off < bytes.size() && !(*dec)->info(); off += kChunk) {
    absl::string_view chunk = bytes.substr(off, kChunk);
    absl::Status s = (*dec)->Push(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size()));
    if (!s.ok()) return s;
  }
  std::optional<audio::StreamInfo> info = (*dec)->info();
  if (!info) return absl::InvalidArgumentError("no OpusHead: not an Ogg/Opus file");
  if (info->channels != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Opus stream has ", info->channels, " channels; audio must be mono"));
  }
  return absl::OkStatus();
}

std::string BaseMime(absl::string_view mime) {
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(mime.substr(0, mime.find(';'))));
}

// Meta's accepted media types and size limits (WhatsApp Cloud API "Supported
// media types").
std::optional<size_t> UploadLimit(const std::string& base) {
  static const std::set<std::string> kAudio = {"audio/aac", "audio/amr", "audio/mpeg",
                                               "audio/mp4", "audio/ogg"};
  static const std::set<std::string> kImage = {"image/jpeg", "image/png"};
  static const std::set<std::string> kVideo = {"video/mp4", "video/3gpp"};
  static const std::set<std::string> kDocument = {
      "text/plain", "application/pdf", "application/msword", "application/vnd.ms-excel",
      "application/vnd.ms-powerpoint",
      "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
      "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
      "application/vnd.openxmlformats-officedocument.presentationml.presentation"};
  constexpr size_t kMB = 1024 * 1024;
  if (kAudio.count(base) || kVideo.count(base)) return 16 * kMB;
  if (kImage.count(base)) return 5 * kMB;
  if (base == "image/webp") return 500 * 1024;  // stickers
  if (kDocument.count(base)) return 100 * kMB;
  return std::nullopt;
}

GraphError UploadError(absl::string_view details) {
  return WhatsAppError(400, 131053, "Media upload error", details);
}

void Upload(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core) || !IsOurNumber(req.matches[1], res, core)) return;
  if (Faulted(FaultKind::kUpload, res, core)) return;
  auto part = [&](const char* name) -> const FormPart* {
    auto it = req.parts.find(name);
    return it == req.parts.end() ? nullptr : &it->second;
  };
  const FormPart* file = part("file");
  if (file == nullptr) return Fail(res, MissingParamError("file"));
  const FormPart* product = part("messaging_product");
  if (product == nullptr || product->content != "whatsapp") {
    return Fail(res, MissingParamError("messaging_product"));
  }
  const FormPart* type = part("type");
  std::string mime = type != nullptr ? type->content : file->content_type;
  if (mime.empty()) return Fail(res, MissingParamError("type"));
  const std::string base = BaseMime(mime);
  std::optional<size_t> limit = UploadLimit(base);
  if (!limit) {
    return Fail(res, UploadError(absl::StrCat("Param file must be a file of a supported media "
                                              "type. Received file of type '", base, "'.")));
  }
  if (file->content.empty()) return Fail(res, UploadError("The uploaded file is empty."));
  if (file->content.size() > *limit) {
    return Fail(res, UploadError(absl::StrCat("File of ", file->content.size(),
                                              " bytes is over the ", *limit, " byte limit for ",
                                              base, ".")));
  }
  if (base == "audio/ogg") {
    if (absl::Status s = CheckOggOpusMono(file->content); !s.ok()) {
      return Fail(res, UploadError(absl::StrCat(
                           "audio/ogg is accepted only with the Opus codec, mono: ",
                           s.message())));
    }
  }
  const std::string id = core.state().PutMedia("", file->content, mime, /*uploaded=*/true);
  LogInfo("media uploaded", {{"id", id}, {"mime", mime}, {"bytes", file->content.size()}});
  Ok(res, ojson{{"id", id}});
}

void Resolve(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core)) return;
  const std::string& id = req.matches[1];
  if (id == core.opts().phone_number_id) {  // GET /{phone_number_id}: the number's profile
    return Ok(res, ojson{{"verified_name", "WhatsApp Sim"},
                         {"display_phone_number", core.opts().display_phone_number},
                         {"quality_rating", "GREEN"}, {"platform_type", "CLOUD_API"},
                         {"id", id}});
  }
  if (Faulted(FaultKind::kMedia, res, core)) return;
  std::shared_ptr<const Media> m = core.state().GetMedia(id);
  if (m == nullptr) return Fail(res, UnknownObjectError("get", id));
  ojson body;
  body["messaging_product"] = "whatsapp";
  body["url"] = core.DownloadUrl(id, req.Header("host"));
  body["mime_type"] = m->mime_type;
  body["sha256"] = m->sha256;
  body["file_size"] = m->bytes.size();
  body["id"] = id;
  Ok(res, body);
}

void DeleteMedia(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core)) return;
  if (!core.state().DeleteMedia(req.matches[1])) {
    return Fail(res, UnknownObjectError("delete", req.matches[1]));
  }
  Ok(res, ojson{{"success", true}});
}

// The URL from Resolve: needs the bearer token, dies after the TTL (404, as
// Meta's lookaside answers; the client must resolve the id again).
void Download(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core)) return;
  if (Faulted(FaultKind::kMedia, res, core)) return;
  std::shared_ptr<const Media> m;
  switch (core.state().RedeemTicket(req.Param("hash"), req.Param("mid"), &m)) {
    case TicketState::kUnknown:
      res.status = 404;
      res.content_type = "text/plain";
      res.body = "Not Found\n";
      return;
    case TicketState::kExpired:
      res.status = 404;
      res.content_type = "text/plain";
      res.body = "URL signature expired\n";
      return;
    case TicketState::kOk:
      break;
  }
  res.status = 200;
  res.content_type = m->mime_type;
  res.body = m->bytes;
  res.headers.emplace_back("Content-Disposition", absl::StrCat("attachment; filename=", m->id));
}

// ---------------------------------------------------------------- messages

std::optional<GraphError> ValidateText(const json& msg, json* entry) {
  const json* text = msg.contains("text") && msg["text"].is_object() ? &msg["text"] : nullptr;
  if (text == nullptr || !text->contains("body")) return MissingParamError("text['body']");
  if (!(*text)["body"].is_string()) return InvalidParamError("Param text['body'] must be a string.");
  const std::string body = (*text)["body"].get<std::string>();
  if (body.empty()) return MissingParamError("text['body']");
  if (Utf8Length(body) > kTextMax) {
    return InvalidParamError("Param text['body'] must be at most 4096 characters long.");
  }
  (*entry)["text"] = body;
  return std::nullopt;
}

// audio, image, video, document, sticker: by uploaded media id or by link.
std::optional<GraphError> ValidateMedia(const std::string& type, const json& msg, SimCore& core,
                                        json* entry) {
  if (!msg.contains(type) || !msg[type].is_object()) return MissingParamError(type);
  const json& obj = msg[type];
  if (obj.contains("link") && obj["link"].is_string()) {
    (*entry)["link"] = obj["link"];
  } else if (!obj.contains("id")) {
    return MissingParamError(absl::StrCat(type, "['id']"));
  } else {
    const std::string id = Str(obj, "id");
    std::shared_ptr<const Media> m = core.state().GetMedia(id);
    if (m == nullptr) {
      return InvalidParamError(absl::StrCat("Param ", type, "['id'] is not a valid whatsapp "
                                            "business account media attachment ID"));
    }
    const std::string want = type == "sticker" ? "image/" : type == "document" ? "" : type + "/";
    if (!absl::StartsWith(BaseMime(m->mime_type), want)) {
      return InvalidParamError(absl::StrCat("Param ", type, "['id'] refers to ", m->mime_type,
                                            " media, not ", type));
    }
    (*entry)["media_id"] = id;
    (*entry)["mime_type"] = m->mime_type;
  }
  if (obj.contains("voice")) {
    if (type != "audio" || !obj["voice"].is_boolean()) {
      return BadValueError(absl::StrCat("Param ", type, "['voice'] must be a boolean on audio."));
    }
  }
  if (type == "audio") (*entry)["voice"] = obj.value("voice", false);
  if (obj.contains("caption")) (*entry)["caption"] = obj["caption"];
  return std::nullopt;
}

// Validates a send request and fills the outbox entry (all but id/time).
std::optional<GraphError> ValidateSend(const json& msg, SimCore& core, json* entry) {
  static const std::set<std::string> kMedia = {"audio", "image", "video", "document", "sticker"};
  static const std::set<std::string> kOther = {"reaction", "location", "contacts",
                                               "interactive", "template"};
  // `to` (a phone) wins over `recipient` (a BSUID) when both are given
  // (PROTOCOLS.md A4).
  if (!msg.contains("to") && !msg.contains("recipient")) return MissingParamError("to");
  const bool by_bsuid = !msg.contains("to");
  const std::string to = Str(msg, by_bsuid ? "recipient" : "to");
  absl::string_view digits = to;
  absl::ConsumePrefix(&digits, "+");
  if (by_bsuid && !IsBsuid(to)) {
    return BadValueError("Param recipient must be a business-scoped user ID.");
  }
  if (!by_bsuid && (!IsDigits(digits) || digits.size() > 20)) {
    return BadValueError("Param to must be the recipient's phone number (digits).");
  }
  if (msg.contains("recipient_type") && msg["recipient_type"] != "individual") {
    return BadValueError("Param recipient_type must be 'individual'.");
  }
  const std::string type = msg.contains("type") ? Str(msg, "type") : "text";
  (*entry)[by_bsuid ? "recipient" : "to"] = by_bsuid ? to : std::string(digits);
  (*entry)["input"] = to;
  (*entry)["type"] = type;
  const std::vector<std::string>& refused = core.state().CurrentFaults().bsuid_131062_types;
  if (by_bsuid && std::find(refused.begin(), refused.end(), type) != refused.end()) {
    return WhatsAppError(400, 131062, DeliveryErrorTitle(131062),
                         absl::StrCat("Message type '", type, "' cannot be sent to a "
                                      "business-scoped user ID; use the phone number."));
  }
  if (msg.contains("context")) {
    const json& ctx = msg["context"];
    if (!ctx.is_object() || !ctx.contains("message_id") || !ctx["message_id"].is_string()) {
      return MissingParamError("context['message_id']");
    }
    (*entry)["context_message_id"] = ctx["message_id"];
  }
  if (type == "text") return ValidateText(msg, entry);
  if (kMedia.count(type)) return ValidateMedia(type, msg, core, entry);
  if (kOther.count(type)) {
    if (!msg.contains(type) || !msg[type].is_object()) return MissingParamError(type);
    (*entry)["payload"] = msg[type];
    return std::nullopt;
  }
  return BadValueError(absl::StrCat("Param type '", type, "' is not a supported message type."));
}

void Send(const json& msg, HttpResponse& res, SimCore& core) {
  json entry;
  if (std::optional<GraphError> e = ValidateSend(msg, core, &entry)) return Fail(res, *e);
  const bool by_bsuid = entry.contains("recipient");
  const std::string wa_id = entry[by_bsuid ? "recipient" : "to"].get<std::string>();
  const std::string input = entry["input"].get<std::string>();
  entry.erase("input");
  const std::string wamid = NewWamid(wa_id, /*inbound=*/false);
  entry["id"] = wamid;
  entry["received_at"] = core.state().NowText();
  const std::string type = entry["type"].get<std::string>();
  const bool voice_note = type == "audio" && entry.value("voice", false);
  const std::optional<int> failure = core.state().TakeDeliveryFailure(type);
  if (failure) entry["delivery_failed_code"] = *failure;  // inspection: it never arrived
  switch (core.state().RecordOutbound(wa_id, std::move(entry))) {
    case SendVerdict::kPairRateLimited:
      return Fail(res, WhatsAppError(400, 131056,
                                     "(Business Account, Consumer Account) pair rate limit hit",
                                     "Message failed to send because there were too many "
                                     "messages sent from this phone number to the same phone "
                                     "number in a short period of time."));
    case SendVerdict::kWindowClosed:
      return Fail(res, WhatsAppError(400, 131047, "Re-engagement message",
                                     "Message failed to send because more than 24 hours have "
                                     "passed since the customer last replied to this number."));
    case SendVerdict::kOk:
      break;
  }
  LogInfo("message sent", {{"to", wa_id}, {"type", type}, {"id", wamid}});
  const std::string phone = by_bsuid ? "" : wa_id;
  const std::string bsuid = by_bsuid ? wa_id : core.state().BsuidOf(wa_id);
  core.QueueStatuses(phone, bsuid, wamid, voice_note, failure);
  ojson answer;
  answer["messaging_product"] = "whatsapp";
  answer["contacts"] = ojson::array(
      {ojson{{"input", input}, {by_bsuid ? "user_id" : "wa_id", wa_id}}});
  answer["messages"] = ojson::array({ojson{{"id", wamid}}});
  Ok(res, answer);
}

// {"status":"read","message_id":W,"typing_indicator":{"type":"text"}?}
void MarkRead(const json& msg, HttpResponse& res, SimCore& core) {
  if (msg["status"] != "read") return Fail(res, BadValueError("Param status must be 'read'."));
  if (!msg.contains("message_id") || !msg["message_id"].is_string()) {
    return Fail(res, MissingParamError("message_id"));
  }
  json read = {{"message_id", msg["message_id"]}, {"typing_indicator", nullptr}};
  if (msg.contains("typing_indicator")) {
    const json& t = msg["typing_indicator"];
    if (!t.is_object() || Str(t, "type") != "text") {
      return Fail(res, BadValueError("Param typing_indicator['type'] must be 'text'."));
    }
    read["typing_indicator"] = "text";
  }
  const std::string user = core.state().UserOf(msg["message_id"].get<std::string>());
  read["wa_id"] = user.empty() ? json(nullptr) : json(user);
  core.state().RecordRead(std::move(read));
  Ok(res, ojson{{"success", true}});
}

void Messages(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core) || !IsOurNumber(req.matches[1], res, core)) return;
  if (Faulted(FaultKind::kMessages, res, core)) return;
  json msg = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!msg.is_object()) return Fail(res, InvalidParamError("The request body must be JSON."));
  if (Str(msg, "messaging_product") != "whatsapp") {
    return Fail(res, MissingParamError("messaging_product"));
  }
  if (msg.contains("status")) return MarkRead(msg, res, core);
  Send(msg, res, core);
}

// POST /{phone_number_id}/calls (PROTOCOLS.md A6): the business's answer to
// a user's call. pre_accept and accept carry the SDP answer; reject and
// terminate end the call, and Meta then sends its own terminate webhook
// (REJECTED or COMPLETED) after the 200, as it does.
void Calls(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core) || !IsOurNumber(req.matches[1], res, core)) return;
  if (Faulted(FaultKind::kMessages, res, core)) return;
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return Fail(res, InvalidParamError("The request body must be JSON."));
  if (Str(body, "messaging_product") != "whatsapp") {
    return Fail(res, MissingParamError("messaging_product"));
  }
  const std::string call_id = Str(body, "call_id"), action = Str(body, "action");
  if (call_id.empty()) return Fail(res, MissingParamError("call_id"));
  const json caller = core.state().CallerOf(call_id);
  if (caller.is_null()) return Fail(res, InvalidParamError(absl::StrCat("Unknown call_id ", call_id)));
  // An ended call (hung up, rejected, terminated, not accepted in time) takes
  // no more actions: a business that answers a call the caller already left
  // learns it here.
  const GraphError ended = InvalidParamError(absl::StrCat("Call ", call_id, " has ended"));
  if (caller.value("ended", false)) return Fail(res, ended);
  const bool with_sdp = action == "pre_accept" || action == "accept";
  if (!with_sdp && action != "reject" && action != "terminate") {
    return Fail(res, BadValueError("Param action must be one of pre_accept, accept, reject, terminate."));
  }
  const json session = body.value("session", json());
  if (with_sdp && (!session.is_object() || Str(session, "sdp_type") != "answer" ||
                   Str(session, "sdp").empty())) {
    return Fail(res, MissingParamError("session"));
  }
  if (!with_sdp && !session.is_null()) {
    return Fail(res, InvalidParamError(absl::StrCat("Param session is not allowed with ", action)));
  }
  json record = {{"call_id", call_id}, {"action", action}};
  if (with_sdp) record["sdp"] = session["sdp"];
  if (!core.state().RecordCallAction(std::move(record))) return Fail(res, ended);
  if (!with_sdp) {
    core.QueueCallEnd(call_id, caller, action == "reject" ? "REJECTED" : "COMPLETED", 0);
  }
  Ok(res, ojson{{"messaging_product", "whatsapp"}, {"success", true}});
}

void UnknownPath(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!Admit(req, res, core)) return;
  GraphError e{400, 2500, absl::StrCat("Unknown path components: ", req.path)};
  Fail(res, e);
}

}  // namespace

void AddGraphRoutes(HttpServer& server, SimCore& core) {
  const std::string v = kVersion;
  auto bind = [&core](void (*fn)(const HttpRequest&, HttpResponse&, SimCore&)) {
    return [fn, &core](const HttpRequest& req, HttpResponse& res) { fn(req, res, core); };
  };
  server.Route("POST", v + "/([^/]+)/messages", bind(Messages));
  server.Route("POST", v + "/([^/]+)/media", bind(Upload));
  server.Route("POST", v + "/([^/]+)/calls", bind(Calls));
  server.Route("GET", v + "/([^/]+)", bind(Resolve));
  server.Route("DELETE", v + "/([^/]+)", bind(DeleteMedia));
  server.Route("GET", kDownloadPath, bind(Download));
  server.Route("GET", v + "/.*", bind(UnknownPath));
  server.Route("POST", v + "/.*", bind(UnknownPath));
}

}  // namespace bridge::whatsapp_sim
