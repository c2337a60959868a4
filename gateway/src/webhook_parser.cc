#include "webhook_parser.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace bridge::gateway {
namespace {

namespace v1 = ::bridge::v1;
using nlohmann::json;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Meta sends numbers as strings (timestamps, ids); accept both.
std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return absl::StrCat(it->get<int64_t>());
  return "";
}

int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  int64_t v = 0;
  if (it->is_string()) (void)absl::SimpleAtoi(it->get<std::string>(), &v);
  return v;
}

// An optional member that, when present, must have the right JSON type.
absl::StatusOr<const json*> Member(const json& j, const char* key, json::value_t type,
                                   const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  if (it->type() != type) {
    return Bad(absl::StrCat(path, ".", key),
               type == json::value_t::array ? "expected an array" : "expected an object");
  }
  return &*it;
}

void Errors(const json* errors, google::protobuf::RepeatedPtrField<v1::ErrorDetail>* out) {
  if (errors == nullptr) return;
  for (const json& e : *errors) {
    if (!e.is_object()) continue;
    v1::ErrorDetail* d = out->Add();
    d->set_code(static_cast<int32_t>(Int(e, "code")));
    d->set_title(Str(e, "title"));
    d->set_message(Str(e, "message"));
    d->set_href(Str(e, "href"));
    if (auto data = e.find("error_data"); data != e.end() && data->is_object()) {
      d->set_details(Str(*data, "details"));
    }
  }
}

v1::MessageType TypeOf(const std::string& t) {
  static const std::pair<const char*, v1::MessageType> kTypes[] = {
      {"text", v1::MESSAGE_TYPE_TEXT},           {"audio", v1::MESSAGE_TYPE_AUDIO},
      {"image", v1::MESSAGE_TYPE_IMAGE},         {"video", v1::MESSAGE_TYPE_VIDEO},
      {"document", v1::MESSAGE_TYPE_DOCUMENT},   {"sticker", v1::MESSAGE_TYPE_STICKER},
      {"location", v1::MESSAGE_TYPE_LOCATION},   {"contacts", v1::MESSAGE_TYPE_CONTACTS},
      {"reaction", v1::MESSAGE_TYPE_REACTION},   {"interactive", v1::MESSAGE_TYPE_INTERACTIVE},
      {"button", v1::MESSAGE_TYPE_BUTTON},       {"unsupported", v1::MESSAGE_TYPE_UNSUPPORTED}};
  for (const auto& [name, type] : kTypes) {
    if (t == name) return type;
  }
  return v1::MESSAGE_TYPE_UNKNOWN;
}

// The text a user would read: text body, button text, interactive reply title.
std::string VisibleText(const json& m, const std::string& type) {
  auto body = m.find(type);
  if (body == m.end() || !body->is_object()) return "";
  if (type == "text") return Str(*body, "body");
  if (type == "button") return Str(*body, "text");
  if (type == "reaction") return Str(*body, "emoji");
  if (type == "interactive") {
    for (const char* k : {"button_reply", "list_reply"}) {
      if (auto r = body->find(k); r != body->end() && r->is_object()) return Str(*r, "title");
    }
  }
  return Str(*body, "caption");
}

void Media(const json& m, const std::string& type, v1::InboundMessage* out) {
  auto body = m.find(type);
  if (body == m.end() || !body->is_object() || !body->contains("id")) return;
  v1::MediaRef* media = out->mutable_media();
  media->set_media_id(Str(*body, "id"));
  media->set_mime_type(Str(*body, "mime_type"));
  media->set_sha256_b64(Str(*body, "sha256"));
  media->set_url(Str(*body, "url"));
  media->set_voice(body->value("voice", false) == true);
  media->set_file_size(Int(*body, "file_size"));
  media->set_caption(Str(*body, "caption"));
  media->set_filename(Str(*body, "filename"));
}

v1::InboundMessage Message(const json& m, const json& value, const json* contacts) {
  v1::InboundMessage out;
  out.set_message_id(Str(m, "id"));
  out.set_timestamp(Int(m, "timestamp"));
  const std::string type = Str(m, "type");
  out.set_type_name(type);
  out.set_type(TypeOf(type));
  out.mutable_from()->set_wa_id(Str(m, "from"));
  out.mutable_from()->set_user_id(Str(m, "from_user_id"));
  // The contact entry carries the profile name (and the canonical wa_id,
  // whose formatting may differ from `from`).
  if (contacts != nullptr) {
    for (const json& c : *contacts) {
      if (!c.is_object()) continue;
      const std::string wa = Str(c, "wa_id"), uid = Str(c, "user_id");
      bool match = (!wa.empty() && wa == out.from().wa_id()) ||
                   (!uid.empty() && uid == out.from().user_id()) || contacts->size() == 1;
      if (!match) continue;
      if (out.from().wa_id().empty()) out.mutable_from()->set_wa_id(wa);
      if (out.from().user_id().empty()) out.mutable_from()->set_user_id(uid);
      if (auto p = c.find("profile"); p != c.end() && p->is_object()) {
        out.mutable_from()->set_profile_name(Str(*p, "name"));
      }
      break;
    }
  }
  out.set_text(VisibleText(m, type));
  Media(m, type, &out);
  if (auto ctx = m.find("context"); ctx != m.end() && ctx->is_object()) {
    out.mutable_context()->set_from(Str(*ctx, "from"));
    out.mutable_context()->set_message_id(Str(*ctx, "id"));
    out.mutable_context()->set_forwarded(ctx->value("forwarded", false) == true);
    out.mutable_context()->set_frequently_forwarded(ctx->value("frequently_forwarded", false) == true);
  }
  if (auto e = m.find("errors"); e != m.end() && e->is_array()) Errors(&*e, out.mutable_errors());
  out.set_raw_json(m.dump());
  return out;
}

v1::DeliveryStatus StatusOf(const std::string& s) {
  if (s == "sent") return v1::DELIVERY_STATUS_SENT;
  if (s == "delivered") return v1::DELIVERY_STATUS_DELIVERED;
  if (s == "read") return v1::DELIVERY_STATUS_READ;
  if (s == "played") return v1::DELIVERY_STATUS_PLAYED;
  if (s == "failed") return v1::DELIVERY_STATUS_FAILED;
  return v1::DELIVERY_STATUS_UNSPECIFIED;
}

absl::Status Change(const json& change, const std::string& path, v1::DeliverRequest* out) {
  if (!change.is_object()) return Bad(path, "expected an object");
  auto value_or = Member(change, "value", json::value_t::object, path);
  if (!value_or.ok()) return value_or.status();
  const std::string field = Str(change, "field");
  const json empty = json::object();
  const json& value = *value_or ? **value_or : empty;
  const std::string vpath = absl::StrCat(path, ".value");
  auto metadata = Member(value, "metadata", json::value_t::object, vpath);
  auto contacts = Member(value, "contacts", json::value_t::array, vpath);
  auto messages = Member(value, "messages", json::value_t::array, vpath);
  auto statuses = Member(value, "statuses", json::value_t::array, vpath);
  auto errors = Member(value, "errors", json::value_t::array, vpath);
  for (const auto* s : {&metadata, &contacts, &messages, &statuses, &errors}) {
    if (!s->ok()) return s->status();
  }
  const std::string phone = *metadata ? Str(**metadata, "phone_number_id") : "";
  const std::string display = *metadata ? Str(**metadata, "display_phone_number") : "";
  if (field != "messages" || (!*messages && !*statuses)) {
    // Calls, account updates, value.errors: kept whole, counted, logged.
    v1::OtherEvent* other = out->add_events()->mutable_other();
    other->set_field(field);
    other->set_phone_number_id(phone);
    Errors(*errors, other->mutable_errors());
    other->set_raw_json(change.dump());
    return absl::OkStatus();
  }
  for (const json& m : *messages ? **messages : json::array()) {
    if (!m.is_object()) return Bad(absl::StrCat(vpath, ".messages[]"), "expected an object");
    v1::InboundMessage msg = Message(m, value, *contacts);
    msg.set_phone_number_id(phone);
    msg.set_display_phone_number(display);
    *out->add_events()->mutable_message() = std::move(msg);
  }
  for (const json& s : *statuses ? **statuses : json::array()) {
    if (!s.is_object()) return Bad(absl::StrCat(vpath, ".statuses[]"), "expected an object");
    v1::StatusUpdate* st = out->add_events()->mutable_status();
    st->set_message_id(Str(s, "id"));
    st->set_phone_number_id(phone);
    st->set_recipient_id(Str(s, "recipient_id"));
    st->set_status_name(Str(s, "status"));
    st->set_status(StatusOf(st->status_name()));
    st->set_timestamp(Int(s, "timestamp"));
    if (auto e = s.find("errors"); e != s.end() && e->is_array()) Errors(&*e, st->mutable_errors());
    st->set_raw_json(s.dump());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::DeliverRequest> ParseWebhook(absl::string_view body) {
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad("body", "not valid JSON");
  if (!doc.is_object()) return Bad("body", "expected a JSON object");
  if (Str(doc, "object") != "whatsapp_business_account") {
    return Bad("object", absl::StrCat("'", Str(doc, "object"),
                                      "' is not whatsapp_business_account"));
  }
  auto entries = Member(doc, "entry", json::value_t::array, "body");
  if (!entries.ok()) return entries.status();
  if (!*entries) return Bad("entry", "missing");
  v1::DeliverRequest out;
  for (size_t i = 0; i < (*entries)->size(); ++i) {
    const json& entry = (**entries)[i];
    const std::string path = absl::StrCat("entry[", i, "]");
    if (!entry.is_object()) return Bad(path, "expected an object");
    auto changes = Member(entry, "changes", json::value_t::array, path);
    if (!changes.ok()) return changes.status();
    if (!*changes) return Bad(absl::StrCat(path, ".changes"), "missing");
    for (size_t k = 0; k < (*changes)->size(); ++k) {
      absl::Status s = Change((**changes)[k], absl::StrCat(path, ".changes[", k, "]"), &out);
      if (!s.ok()) return s;
    }
  }
  return out;
}

}  // namespace bridge::gateway
