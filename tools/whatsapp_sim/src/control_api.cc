// The user side and the inspection/fault API under /sim/ (DESIGN.md §9), and
// the phone page at /.
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "phone_page.h"
#include "sim_core.h"
#include "voice_note.h"

namespace bridge::whatsapp_sim {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxWaitMs = 120000;

void Error(HttpResponse& res, int status, absl::string_view message) {
  res.Json(status, json{{"error", std::string(message)}}.dump());
}

void Reply(HttpResponse& res, const json& body) { res.Json(200, body.dump()); }

// An integer query parameter in [lo, hi]; false (and a 400) when malformed.
bool IntParam(const HttpRequest& req, HttpResponse& res, const char* key, int64_t lo,
              int64_t hi, int64_t* out) {
  if (!req.HasParam(key)) return true;
  int64_t v = 0;
  if (!absl::SimpleAtoi(req.Param(key), &v) || v < lo || v > hi) {
    Error(res, 400, absl::StrCat("?", key, " must be an integer in [", lo, ", ", hi, "]"));
    return false;
  }
  *out = v;
  return true;
}

// ?min_count=N&wait_ms=T of the inspection endpoints.
bool WaitParams(const HttpRequest& req, HttpResponse& res, size_t* min_count,
                absl::Duration* wait) {
  int64_t n = 0, ms = 0;
  if (!IntParam(req, res, "min_count", 0, 1000000, &n)) return false;
  if (!IntParam(req, res, "wait_ms", 0, kMaxWaitMs, &ms)) return false;
  *min_count = static_cast<size_t>(n);
  *wait = absl::Milliseconds(ms);
  return true;
}

bool BoolParam(const HttpRequest& req, const char* key, bool fallback) {
  if (!req.HasParam(key)) return fallback;
  const std::string v = req.Param(key);
  return !(v == "false" || v == "0" || v == "no");
}

bool ParseSign(const HttpRequest& req, HttpResponse& res, SignMode* out) {
  const std::string s = req.Param("sign", "good");
  if (s == "good") *out = SignMode::kGood;
  else if (s == "bad") *out = SignMode::kBad;
  else if (s == "none") *out = SignMode::kNone;
  else {
    Error(res, 400, "?sign must be good, bad or none");
    return false;
  }
  return true;
}

bool CanDeliver(HttpResponse& res, SimCore& core) {
  if (core.webhooks().enabled()) return true;
  Error(res, 409, "no --webhook_url configured: nowhere to deliver webhooks");
  return false;
}

// ------------------------------------------------------------- user side

// Who writes: /sim/users/{user}/… names a phone (digits) or a BSUID. A phone
// user with ?user_id=BSUID is both (webhooks carry both; one outbox).
bool ParseUser(const HttpRequest& req, HttpResponse& res, SimCore& core, InboundMessage* m) {
  const std::string user = req.matches[1];
  if (IsBsuid(user)) {
    m->user_id = user;
  } else if (IsDigits(user) && user.size() <= 20) {
    m->wa_id = user;
    m->user_id = req.Param("user_id");
    if (!m->user_id.empty() && !IsBsuid(m->user_id)) {
      Error(res, 400, "?user_id must be a BSUID (e.g. US.13491208655302741918)");
      return false;
    }
    if (!m->user_id.empty()) core.state().LinkUser(m->wa_id, m->user_id);
  } else {
    Error(res, 400, "the user must be a phone number (digits) or a BSUID (US.123…)");
    return false;
  }
  m->username = req.Param("username");
  return true;
}

// Shared by every user message: who writes, how to sign, how often to retry,
// how old the message claims to be (?age_s=N: its timestamp N seconds ago, as
// in a webhook Meta kept retrying), and ?malformed_extra_change=true (a bad
// change beside it in the batch). Fills everything of `m` but the content.
bool StartInbound(const HttpRequest& req, HttpResponse& res, SimCore& core, InboundMessage* m,
                  Delivery* d) {
  int64_t retries = 5, age_s = 0;
  if (!IntParam(req, res, "retries", 0, 100, &retries) ||
      !IntParam(req, res, "age_s", 0, 365 * 86400, &age_s) || !ParseSign(req, res, &d->sign)) {
    return false;
  }
  if (!ParseUser(req, res, core, m) || !CanDeliver(res, core)) return false;
  if (!IsValidUtf8(req.Param("name")) || !IsValidUtf8(m->username)) {
    Error(res, 400, "?name and ?username must be UTF-8");
    return false;
  }
  const std::string& user = m->wa_id.empty() ? m->user_id : m->wa_id;
  m->wamid = NewWamid(user, /*inbound=*/true);
  m->profile_name = core.state().NoteInbound(user, m->wamid, req.Param("name"));
  m->timestamp = core.state().NowUnix() - age_s;
  m->context_wamid = req.Param("context");
  m->malformed_extra_change = BoolParam(req, "malformed_extra_change", false);
  d->event = "message";
  d->id = m->wamid;
  d->max_attempts = static_cast<int>(retries) + 1;
  return true;
}

void Deliver(const InboundMessage& m, Delivery d, HttpResponse& res, SimCore& core,
             json answer) {
  d.body = SerializeLikeMeta(InboundWebhook(core.business(), m));
  LogInfo("user message", {{"from", m.wa_id.empty() ? m.user_id : m.wa_id}, {"type", m.type},
                           {"id", m.wamid}});
  core.webhooks().Enqueue(std::move(d));
  answer["message_id"] = m.wamid;
  Reply(res, answer);
}

void UserText(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.body.empty()) return Error(res, 400, "the body is the message text; it is empty");
  if (!IsValidUtf8(req.body)) return Error(res, 400, "the text must be UTF-8");
  InboundMessage m;
  Delivery d;
  if (!StartInbound(req, res, core, &m, &d)) return;
  m.type = "text";
  m.text = req.body;
  Deliver(m, std::move(d), res, core, json::object());
}

// The body is the audio file. It is not checked: users do send broken notes,
// and the bridge must cope (DESIGN.md §6).
void DeliverVoice(const HttpRequest& req, HttpResponse& res, SimCore& core,
                  const std::string& bytes) {
  InboundMessage m;
  Delivery d;
  if (!StartInbound(req, res, core, &m, &d)) return;
  m.type = "audio";
  m.voice = BoolParam(req, "voice", true);
  m.mime_type = req.Param("mime", "audio/ogg; codecs=opus");
  m.media_id = core.state().PutMedia(req.Param("media_id"), bytes, m.mime_type,
                                     /*uploaded=*/false);
  m.sha256 = core.state().GetMedia(m.media_id)->sha256;
  // Meta is rolling `url` out (Nov 2025): ?url=false leaves it out.
  if (BoolParam(req, "url", true)) m.url = core.DownloadUrl(m.media_id, "");
  Deliver(m, std::move(d), res, core, json{{"media_id", m.media_id}});
}

void UserVoice(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.body.empty()) return Error(res, 400, "the body is the audio file; it is empty");
  DeliverVoice(req, res, core, req.body);
}

// A voice note recorded as PCM (the phone page's microphone: s16le mono at
// ?rate=), made into what a WhatsApp phone sends: Ogg/Opus, mono, 16 kHz.
void UserVoicePcm(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  int64_t rate = 48000;
  if (!IntParam(req, res, "rate", 8000, 192000, &rate)) return;
  if (req.body.empty() || req.body.size() % 2 != 0) {
    return Error(res, 400, "the body is s16le mono PCM: an even, non-zero number of bytes");
  }
  auto ogg = EncodeVoiceNote(req.body, static_cast<int>(rate));
  if (!ogg.ok()) return Error(res, 400, ogg.status().message());
  DeliverVoice(req, res, core, *ogg);
}

// Reactions, edits and revokes name the message they are about (?message_id=).
bool Targeted(const HttpRequest& req, HttpResponse& res, SimCore& core, const char* type,
              InboundMessage* m, Delivery* d) {
  if (req.Param("message_id").empty()) {
    Error(res, 400, "?message_id= names the message this is about");
    return false;
  }
  if (!IsValidUtf8(req.body)) {
    Error(res, 400, "the body must be UTF-8");
    return false;
  }
  if (!StartInbound(req, res, core, m, d)) return false;
  m->type = type;
  m->target_wamid = req.Param("message_id");
  return true;
}

// The body is the emoji ("" removes the reaction: give curl -d '').
void UserReaction(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  InboundMessage m;
  Delivery d;
  if (!Targeted(req, res, core, "reaction", &m, &d)) return;
  m.text = req.body;
  Deliver(m, std::move(d), res, core, json::object());
}

// The body is the new text of the user's message ?message_id=.
void UserEdit(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.body.empty()) return Error(res, 400, "the body is the new text; it is empty");
  InboundMessage m;
  Delivery d;
  if (!Targeted(req, res, core, "edit", &m, &d)) return;
  m.text = req.body;
  Deliver(m, std::move(d), res, core, json::object());
}

void UserRevoke(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  InboundMessage m;
  Delivery d;
  if (!Targeted(req, res, core, "revoke", &m, &d)) return;
  Deliver(m, std::move(d), res, core, json::object());
}

// The user opens the chat with the business for the first time.
void UserWelcome(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  InboundMessage m;
  Delivery d;
  if (!StartInbound(req, res, core, &m, &d)) return;
  m.type = "request_welcome";
  Deliver(m, std::move(d), res, core, json::object());
}

void Outbox(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  size_t min_count = 0;
  absl::Duration wait;
  if (!WaitParams(req, res, &min_count, &wait)) return;
  Reply(res, core.state().Outbox(req.matches[1], min_count, wait));
}

// ------------------------------------------------------------- webhooks

// The first message or status id in a webhook body, so raw posts can be
// found in /sim/webhooks by id too; "" when there is none.
std::string FirstId(const std::string& body) {
  json b = json::parse(body, nullptr, /*allow_exceptions=*/false);
  const json::json_pointer paths[] = {json::json_pointer("/entry/0/changes/0/value/messages/0/id"),
                                      json::json_pointer("/entry/0/changes/0/value/statuses/0/id")};
  for (const auto& p : paths) {
    if (b.is_object() && b.contains(p) && b[p].is_string()) return b[p].get<std::string>();
  }
  return "";
}

// Posts the body as-is and answers with the gateway's status and body.
void RawWebhook(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  Delivery d;
  if (!ParseSign(req, res, &d.sign) || !CanDeliver(res, core)) return;
  d.event = "raw";
  d.id = FirstId(req.body);
  d.body = req.body;
  d.max_attempts = 1;
  absl::StatusOr<HttpResult> r = core.webhooks().PostNow(d);
  if (!r.ok()) return Error(res, 502, r.status().message());
  res.status = r->status;
  res.body = r->body;
  res.content_type = r->content_type.empty() ? "text/plain" : r->content_type;
}

void Webhooks(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  size_t min_count = 0;
  absl::Duration wait;
  if (!WaitParams(req, res, &min_count, &wait)) return;
  Reply(res, core.state().Attempts(req.Param("id"), min_count, wait));
}

// Meta's subscription check: GET ?hub.mode=subscribe&hub.verify_token=T&
// hub.challenge=C must echo C. ?verify_token= overrides the configured one.
void Verify(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (!CanDeliver(res, core)) return;
  const std::string token = req.Param("verify_token", core.opts().verify_token);
  const std::string challenge = RandomDigits(10);
  const std::string& url = core.opts().webhook_url;
  const std::string full = absl::StrCat(url, url.find('?') == std::string::npos ? "?" : "&",
                                        "hub.mode=subscribe&hub.verify_token=", UrlEncode(token),
                                        "&hub.challenge=", challenge);
  absl::StatusOr<HttpResult> r = HttpSend("GET", full, {}, "", "", absl::Seconds(10));
  if (!r.ok()) return Error(res, 502, r.status().message());
  const bool ok = r->status == 200 && r->body == challenge;
  LogInfo("webhook verification", {{"status", r->status}, {"echoed", ok ? "yes" : "no"}});
  Reply(res, json{{"ok", ok}, {"status", r->status}, {"challenge", challenge},
                  {"body", IsValidUtf8(r->body) ? r->body : "(binary)"}});
}

// ------------------------------------------------------------- media

void RegisterMedia(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.body.empty()) return Error(res, 400, "the body is the media file; it is empty");
  const std::string mime = req.Param("mime", "audio/ogg");
  const std::string id = core.state().PutMedia(req.Param("id"), req.body, mime, false);
  std::shared_ptr<const Media> m = core.state().GetMedia(id);
  Reply(res, json{{"id", id}, {"mime_type", mime}, {"sha256", m->sha256},
                  {"file_size", m->bytes.size()}});
}

void MediaBytes(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  std::shared_ptr<const Media> m = core.state().GetMedia(req.matches[1]);
  if (m == nullptr) return Error(res, 404, "no such media");
  res.status = 200;
  res.body = m->bytes;
  res.content_type = m->mime_type;
}

void Reads(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  size_t min_count = 0;
  absl::Duration wait;
  if (!WaitParams(req, res, &min_count, &wait)) return;
  Reply(res, core.state().Reads(min_count, wait));
}

// Counts, and how many long-polls are waiting (?min_long_polls=N&wait_ms=T
// waits for them: tests use it to know a poll is in flight).
void Stats(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  int64_t n = 0, ms = 0;
  if (!IntParam(req, res, "min_long_polls", 0, 1000, &n)) return;
  if (!IntParam(req, res, "wait_ms", 0, kMaxWaitMs, &ms)) return;
  Reply(res, core.state().Stats(static_cast<size_t>(n), absl::Milliseconds(ms)));
}

// ------------------------------------------------------------- calls

// The user calls the business: the body is the caller's SDP offer (a
// browser's, a fixture). Sent as Meta does, as a signed `calls` connect
// webhook; what the business answers is in GET /sim/calls.
void UserCall(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.body.empty()) return Error(res, 400, "the body is the caller's SDP offer; it is empty");
  if (!IsValidUtf8(req.body)) return Error(res, 400, "the SDP offer must be UTF-8");
  InboundMessage m;
  Delivery d;
  if (!StartInbound(req, res, core, &m, &d)) return;
  const std::string call_id = absl::StrCat("wacid.", RandomToken(16));
  core.state().NoteCall(call_id, json{{"wa_id", m.wa_id}, {"name", m.profile_name}},
                       absl::Seconds(core.opts().call_accept_window_s));
  ojson call = {{"id", call_id}, {"from", m.wa_id}, {"to", core.business().display_phone_number},
                {"event", "connect"}, {"timestamp", absl::StrCat(m.timestamp)},
                {"session", {{"sdp_type", "offer"}, {"sdp", req.body}}}};
  d.event = "call";
  d.id = call_id;
  d.body = SerializeLikeMeta(CallWebhook(core.business(), std::move(call), m.wa_id, m.profile_name));
  LogInfo("user call", {{"from", m.wa_id}, {"call_id", call_id}});
  core.webhooks().Enqueue(std::move(d));
  Reply(res, json{{"call_id", call_id}});
}

// The user hangs up: Meta tells the business with a terminate webhook.
void UserHangup(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  const std::string call_id = req.Param("call_id");
  const json caller = core.state().CallerOf(call_id);
  if (caller.is_null() || caller.value("wa_id", "") != req.matches[1]) {
    return Error(res, 404, "?call_id= names no call of this user");
  }
  if (caller.value("ended", false)) return Error(res, 409, "the call has already ended");
  if (!CanDeliver(res, core)) return;
  core.QueueCallEnd(call_id, caller, "COMPLETED");
  Reply(res, json{{"call_id", call_id}});
}

void CallActions(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  size_t min_count = 0;
  absl::Duration wait;
  if (!WaitParams(req, res, &min_count, &wait)) return;
  Reply(res, core.state().CallActions(min_count, wait));
}

// ------------------------------------------------------------- clock, faults

void Clock(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.method == "POST") {
    json spec = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!spec.is_object() || !spec.contains("advance_s") || !spec["advance_s"].is_number() ||
        spec["advance_s"].get<double>() < 0) {
      return Error(res, 400, R"(expected {"advance_s": N} with N >= 0)");
    }
    core.state().Advance(absl::Seconds(spec["advance_s"].get<double>()));
  }
  Reply(res, json{{"now", core.state().NowUnix()}, {"now_text", core.state().NowText()}});
}

void FaultsRoute(const HttpRequest& req, HttpResponse& res, SimCore& core) {
  if (req.method == "DELETE") {
    core.state().ClearFaults();
  } else if (req.method == "POST") {
    json spec = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (absl::Status s = core.state().MergeFaults(spec); !s.ok()) {
      return Error(res, 400, s.message());
    }
  }
  json now = core.state().FaultsJson();
  LogInfo("faults", {{"now", now.dump()}});
  Reply(res, now);
}


}  // namespace

void AddControlRoutes(HttpServer& server, SimCore& core) {
  auto bind = [&core](void (*fn)(const HttpRequest&, HttpResponse&, SimCore&)) {
    return [fn, &core](const HttpRequest& req, HttpResponse& res) { fn(req, res, core); };
  };
  server.Route("POST", "/sim/users/([^/]+)/text", bind(UserText));
  server.Route("POST", "/sim/users/([^/]+)/voice", bind(UserVoice));
  server.Route("POST", "/sim/users/([^/]+)/voice_pcm", bind(UserVoicePcm));
  server.Route("POST", "/sim/users/([^/]+)/call", bind(UserCall));
  server.Route("POST", "/sim/users/([^/]+)/hangup", bind(UserHangup));
  server.Route("GET", "/sim/calls", bind(CallActions));
  server.Route("POST", "/sim/users/([^/]+)/reaction", bind(UserReaction));
  server.Route("POST", "/sim/users/([^/]+)/edit", bind(UserEdit));
  server.Route("POST", "/sim/users/([^/]+)/revoke", bind(UserRevoke));
  server.Route("POST", "/sim/users/([^/]+)/welcome", bind(UserWelcome));
  server.Route("GET", "/sim/users/([^/]+)/outbox", bind(Outbox));
  server.Route("POST", "/sim/webhook", bind(RawWebhook));
  server.Route("GET", "/sim/webhooks", bind(Webhooks));
  server.Route("POST", "/sim/verify", bind(Verify));
  server.Route("POST", "/sim/media", bind(RegisterMedia));
  server.Route("GET", "/sim/media/([^/]+)", bind(MediaBytes));
  server.Route("GET", "/sim/reads", bind(Reads));
  server.Route("GET", "/sim/stats", bind(Stats));
  for (const char* m : {"GET", "POST"}) server.Route(m, "/sim/clock", bind(Clock));
  for (const char* m : {"GET", "POST", "DELETE"}) server.Route(m, "/sim/faults", bind(FaultsRoute));
  server.Route("GET", "/healthz", [](const HttpRequest&, HttpResponse& res) {
    res.content_type = "text/plain";
    res.body = "ok\n";
  });
  server.Route("GET", "/", [](const HttpRequest&, HttpResponse& res) {
    res.content_type = "text/html; charset=utf-8";
    res.body = std::string(PhonePage());
  });
}

}  // namespace bridge::whatsapp_sim
