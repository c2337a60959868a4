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

// true only for a JSON true (a string "true" from a sloppy sender must not
// throw out of the parser).
bool Bool(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

double Double(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number()) return it->get<double>();
  double v = 0;
  if (it->is_string()) (void)absl::SimpleAtod(it->get<std::string>(), &v);
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
      {"button", v1::MESSAGE_TYPE_BUTTON},       {"unsupported", v1::MESSAGE_TYPE_UNSUPPORTED},
      {"edit", v1::MESSAGE_TYPE_EDIT},           {"revoke", v1::MESSAGE_TYPE_REVOKE},
      {"system", v1::MESSAGE_TYPE_SYSTEM},       {"request_welcome", v1::MESSAGE_TYPE_REQUEST_WELCOME},
      {"order", v1::MESSAGE_TYPE_ORDER}};
  for (const auto& [name, type] : kTypes) {
    if (t == name) return type;
  }
  return v1::MESSAGE_TYPE_UNKNOWN;
}

// The object named by the message's type (`"text":{...}`), or an empty one.
const json& Body(const json& m, const std::string& type) {
  static const json* kEmpty = new json(json::object());
  auto body = m.find(type);
  return body != m.end() && body->is_object() ? *body : *kEmpty;
}

// The text a user would read: text body, button text, interactive reply
// title, reaction emoji, system body, order note, media caption.
std::string VisibleText(const json& m, const std::string& type) {
  const json& body = Body(m, type);
  if (type == "text" || type == "system") return Str(body, "body");
  if (type == "button" || type == "order") return Str(body, "text");
  if (type == "reaction") return Str(body, "emoji");
  if (type == "interactive") {
    for (const char* k : {"button_reply", "list_reply"}) {
      if (auto r = body.find(k); r != body.end() && r->is_object()) return Str(*r, "title");
    }
  }
  return Str(body, "caption");
}

void Media(const json& m, const std::string& type, v1::InboundMessage* out) {
  const json& body = Body(m, type);
  if (!body.contains("id")) return;
  v1::MediaRef* media = out->mutable_media();
  media->set_media_id(Str(body, "id"));
  media->set_mime_type(Str(body, "mime_type"));
  media->set_sha256_b64(Str(body, "sha256"));
  media->set_url(Str(body, "url"));
  media->set_voice(Bool(body, "voice"));
  media->set_file_size(Int(body, "file_size"));
  media->set_caption(Str(body, "caption"));
  media->set_filename(Str(body, "filename"));
}

// Edits and revokes name the original message (their exact shape is not
// confirmed: PROTOCOLS.md A2), so several spellings are accepted.
std::string OriginalId(const json& body) {
  for (const char* k : {"original_message_id", "message_id", "id"}) {
    if (std::string id = Str(body, k); !id.empty()) return id;
  }
  return "";
}

// Type-specific content beyond the visible text.
void Content(const json& m, const std::string& type, v1::InboundMessage* out) {
  const json& body = Body(m, type);
  switch (out->type()) {
    case v1::MESSAGE_TYPE_REACTION:
      out->set_target_message_id(Str(body, "message_id"));
      break;
    case v1::MESSAGE_TYPE_REVOKE:
      out->set_target_message_id(OriginalId(body));
      break;
    case v1::MESSAGE_TYPE_EDIT: {
      out->set_target_message_id(OriginalId(body));
      // The new content: a text body, or a media caption.
      const json& inner = Body(body, "message");
      const std::string inner_type = Str(inner, "type");
      out->set_text(VisibleText(inner, inner_type.empty() ? "text" : inner_type));
      break;
    }
    case v1::MESSAGE_TYPE_SYSTEM:
      out->set_system_type(Str(body, "type"));
      out->set_new_wa_id(!Str(body, "new_wa_id").empty() ? Str(body, "new_wa_id")
                                                          : Str(body, "wa_id"));
      break;
    case v1::MESSAGE_TYPE_LOCATION: {
      v1::Location* loc = out->mutable_location();
      loc->set_latitude(Double(body, "latitude"));
      loc->set_longitude(Double(body, "longitude"));
      loc->set_name(Str(body, "name"));
      loc->set_address(Str(body, "address"));
      break;
    }
    default:
      break;
  }
}

// Shared contacts (`"contacts":[{name:{formatted_name}, phones:[{phone}]}]`):
// the names, else the first phone.
void ContactNames(const json& m, v1::InboundMessage* out) {
  auto list = m.find("contacts");
  if (out->type() != v1::MESSAGE_TYPE_CONTACTS || list == m.end() || !list->is_array()) return;
  for (const json& c : *list) {
    if (!c.is_object()) continue;
    std::string name = Str(Body(c, "name"), "formatted_name");
    if (name.empty()) name = Str(Body(c, "name"), "first_name");
    if (auto phones = c.find("phones"); name.empty() && phones != c.end() &&
                                        phones->is_array() && !phones->empty() &&
                                        (*phones)[0].is_object()) {
      name = Str((*phones)[0], "phone");
    }
    if (!name.empty()) out->add_contact_names(name);
  }
}

// The sender: `from` (phone, when Meta shares it), `from_user_id` (BSUID), and
// from the matching contact entry the profile name, username and the ids
// `from` lacks (the contact's wa_id formatting may differ from `from`).
void Sender(const json& m, const json* contacts, v1::UserRef* from) {
  from->set_wa_id(Str(m, "from"));
  from->set_user_id(Str(m, "from_user_id"));
  from->set_parent_user_id(Str(m, "from_parent_user_id"));
  if (contacts == nullptr) return;
  for (const json& c : *contacts) {
    if (!c.is_object()) continue;
    const std::string wa = Str(c, "wa_id"), uid = Str(c, "user_id");
    bool match = (!wa.empty() && wa == from->wa_id()) ||
                 (!uid.empty() && uid == from->user_id()) || contacts->size() == 1;
    if (!match) continue;
    if (from->wa_id().empty()) from->set_wa_id(wa);
    if (from->user_id().empty()) from->set_user_id(uid);
    if (from->parent_user_id().empty()) from->set_parent_user_id(Str(c, "parent_user_id"));
    const json& profile = Body(c, "profile");
    from->set_profile_name(Str(profile, "name"));
    from->set_username(Str(profile, "username"));
    return;
  }
}

absl::StatusOr<v1::InboundMessage> Message(const json& m, const json* contacts,
                                           const std::string& path) {
  if (!m.is_object()) return Bad(path, "expected an object");
  v1::InboundMessage out;
  out.set_message_id(Str(m, "id"));
  if (out.message_id().empty()) return Bad(absl::StrCat(path, ".id"), "missing");
  out.set_timestamp(Int(m, "timestamp"));
  const std::string type = Str(m, "type");
  out.set_type_name(type);
  out.set_type(TypeOf(type));
  Sender(m, contacts, out.mutable_from());
  if (out.from().wa_id().empty() && out.from().user_id().empty()) {
    return Bad(path, "no sender (from, from_user_id)");
  }
  out.set_text(VisibleText(m, type));
  Media(m, type, &out);
  Content(m, type, &out);
  ContactNames(m, &out);
  if (auto ctx = m.find("context"); ctx != m.end() && ctx->is_object()) {
    out.mutable_context()->set_from(Str(*ctx, "from"));
    out.mutable_context()->set_message_id(Str(*ctx, "id"));
    out.mutable_context()->set_forwarded(Bool(*ctx, "forwarded"));
    out.mutable_context()->set_frequently_forwarded(Bool(*ctx, "frequently_forwarded"));
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

absl::StatusOr<v1::StatusUpdate> Status(const json& s, const std::string& path) {
  if (!s.is_object()) return Bad(path, "expected an object");
  v1::StatusUpdate st;
  st.set_message_id(Str(s, "id"));
  if (st.message_id().empty()) return Bad(absl::StrCat(path, ".id"), "missing");
  st.set_recipient_id(Str(s, "recipient_id"));
  st.set_recipient_user_id(Str(s, "recipient_user_id"));
  st.set_status_name(Str(s, "status"));
  st.set_status(StatusOf(st.status_name()));
  st.set_timestamp(Int(s, "timestamp"));
  if (auto e = s.find("errors"); e != s.end() && e->is_array()) Errors(&*e, st.mutable_errors());
  st.set_raw_json(s.dump());
  return st;
}

// One `calls` entry (PROTOCOLS.md A6). A connect must carry its offer: a call
// nobody can answer is refused here rather than ringing out.
absl::StatusOr<v1::CallEvent> Call(const json& c, const json* contacts, const std::string& path) {
  if (!c.is_object()) return Bad(path, "expected an object");
  v1::CallEvent out;
  out.set_call_id(Str(c, "id"));
  if (out.call_id().empty()) return Bad(absl::StrCat(path, ".id"), "missing");
  const std::string event = Str(c, "event");
  if (event == "connect") out.set_type(v1::CALL_EVENT_TYPE_CONNECT);
  else if (event == "terminate") out.set_type(v1::CALL_EVENT_TYPE_TERMINATE);
  else return Bad(absl::StrCat(path, ".event"), absl::StrCat("'", event, "' is not connect or terminate"));
  out.set_timestamp(Int(c, "timestamp"));
  Sender(c, contacts, out.mutable_from());
  if (out.from().wa_id().empty() && out.from().user_id().empty()) {
    return Bad(path, "no caller (from, from_user_id)");
  }
  const json& session = Body(c, "session");
  if (out.type() == v1::CALL_EVENT_TYPE_CONNECT) {
    if (Str(session, "sdp_type") != "offer" || Str(session, "sdp").empty()) {
      return Bad(absl::StrCat(path, ".session"), "a connect needs {sdp_type: offer, sdp}");
    }
    out.set_sdp(Str(session, "sdp"));
  }
  out.set_status(Str(c, "status"));
  out.set_duration_s(static_cast<int32_t>(Int(c, "duration")));
  return out;
}

// Collects the events of a batch and what had to be skipped.
struct Batch {
  v1::DeliverRequest* out;
  std::vector<std::string>* problems;
  void Skip(const absl::Status& s) const {
    if (problems != nullptr) problems->push_back(std::string(s.message()));
  }
};

// A change's own shape must hold (value, metadata, the arrays); within it,
// each message and status stands or falls alone.
absl::Status Change(const json& change, const std::string& path, const Batch& batch) {
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
  auto calls = Member(value, "calls", json::value_t::array, vpath);
  for (const auto* s : {&metadata, &contacts, &messages, &statuses, &errors, &calls}) {
    if (!s->ok()) return s->status();
  }
  const std::string phone = *metadata ? Str(**metadata, "phone_number_id") : "";
  const std::string display = *metadata ? Str(**metadata, "display_phone_number") : "";
  if (field == "calls" && *calls) {
    for (size_t i = 0; i < (*calls)->size(); ++i) {
      auto call = Call((**calls)[i], *contacts, absl::StrCat(vpath, ".calls[", i, "]"));
      if (!call.ok()) {
        batch.Skip(call.status());
        continue;
      }
      call->set_phone_number_id(phone);
      *batch.out->add_events()->mutable_call() = *std::move(call);
    }
    return absl::OkStatus();
  }
  if (field != "messages" || (!*messages && !*statuses)) {
    // Account updates, value.errors, call statuses: kept whole, counted, logged.
    v1::OtherEvent* other = batch.out->add_events()->mutable_other();
    other->set_field(field);
    other->set_phone_number_id(phone);
    Errors(*errors, other->mutable_errors());
    other->set_raw_json(change.dump());
    return absl::OkStatus();
  }
  const json& ms = *messages ? **messages : empty;
  for (size_t i = 0; ms.is_array() && i < ms.size(); ++i) {
    auto msg = Message(ms[i], *contacts, absl::StrCat(vpath, ".messages[", i, "]"));
    if (!msg.ok()) {
      batch.Skip(msg.status());
      continue;
    }
    msg->set_phone_number_id(phone);
    msg->set_display_phone_number(display);
    *batch.out->add_events()->mutable_message() = *std::move(msg);
  }
  const json& ss = *statuses ? **statuses : empty;
  for (size_t i = 0; ss.is_array() && i < ss.size(); ++i) {
    auto st = Status(ss[i], absl::StrCat(vpath, ".statuses[", i, "]"));
    if (!st.ok()) {
      batch.Skip(st.status());
      continue;
    }
    st->set_phone_number_id(phone);
    *batch.out->add_events()->mutable_status() = *std::move(st);
  }
  return absl::OkStatus();
}

absl::Status Entry(const json& entry, const std::string& path, const Batch& batch) {
  if (!entry.is_object()) return Bad(path, "expected an object");
  auto changes = Member(entry, "changes", json::value_t::array, path);
  if (!changes.ok()) return changes.status();
  if (!*changes) return Bad(absl::StrCat(path, ".changes"), "missing");
  for (size_t k = 0; k < (*changes)->size(); ++k) {
    absl::Status s = Change((**changes)[k], absl::StrCat(path, ".changes[", k, "]"), batch);
    if (!s.ok()) batch.Skip(s);
  }
  return absl::OkStatus();
}

}  // namespace

constexpr int kMaxDepth = 64;

absl::StatusOr<v1::DeliverRequest> ParseWebhook(absl::string_view body,
                                                std::vector<std::string>* problems) {
  // nlohmann's parser is iterative, but dump() and copies recurse: a body
  // nested 100,000 deep would overflow the stack later. Meta's webhooks nest
  // about ten deep; deeper is refused here, before any value is kept.
  bool too_deep = false;
  json::parser_callback_t depth_limit = [&too_deep](int depth, json::parse_event_t event,
                                                    json&) {
    if (depth > kMaxDepth) {
      too_deep = true;
      return false;  // discarded: nothing that deep is built
    }
    return true;
  };
  json doc = json::parse(body.begin(), body.end(), depth_limit, /*allow_exceptions=*/false);
  if (too_deep) return Bad("body", absl::StrCat("nested deeper than ", kMaxDepth, " levels"));
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
  const Batch batch{&out, problems};
  for (size_t i = 0; i < (*entries)->size(); ++i) {
    absl::Status s = Entry((**entries)[i], absl::StrCat("entry[", i, "]"), batch);
    if (!s.ok()) batch.Skip(s);
  }
  return out;
}

}  // namespace bridge::gateway
