#include "admin_console.h"

#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "common/call_auth.h"
#include "common/grpc_server.h"
#include "common/http_server.h"
#include "common/hub_signature.h"
#include "common/log.h"
#include "console_page.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"

namespace bridge::controller {
namespace {

using json = nlohmann::json;
using v1::Sessions;

constexpr absl::Duration kCallDeadline = absl::Seconds(30);
constexpr int64_t kMaxWaitMs = 30000;
constexpr size_t kEventsKept = 1000;  // a console that falls further behind reloads

// gRPC's code, as the HTTP status a browser and curl understand.
int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: return 400;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED: return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::UNAVAILABLE: return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 504;
    default: return 500;
  }
}

void Error(HttpResponse& res, int status, absl::string_view message) {
  res.Json(status, json{{"error", std::string(message)}}.dump());
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

// The request body (JSON, may be empty) as `m`; false (and a 400) if it is not.
bool FromJson(const HttpRequest& req, HttpResponse& res, google::protobuf::Message* m) {
  if (absl::StripAsciiWhitespace(req.body).empty()) return true;
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = false;  // a misspelt field is an error, not silently dropped
  auto s = google::protobuf::util::JsonStringToMessage(req.body, m, o);
  if (s.ok()) return true;
  Error(res, 400, absl::StrCat("the body is not a ", m->GetDescriptor()->name(), " in JSON: ",
                               s.message().as_string()));
  return false;
}

bool Flag(const HttpRequest& req, const char* key) {
  const std::string v = req.Param(key);
  return v == "1" || v == "true" || v == "yes";
}

class AdminConsoleImpl final : public AdminConsole {
 public:
  explicit AdminConsoleImpl(const AdminConsoleOptions& o) : o_(o) {}
  ~AdminConsoleImpl() override { Stop(); }

  absl::Status Init();
  std::string address() const override { return http_->address(); }
  void Stop() override;

 private:
  using Handler = void (AdminConsoleImpl::*)(const HttpRequest&, HttpResponse&);
  void Add(const char* method, const std::string& pattern, Handler h);
  bool Authorized(const HttpRequest& req, HttpResponse& res) const;

  // One unary Sessions call: `req` in, its answer (or error) out as JSON.
  template <typename Req, typename Resp>
  void Call(grpc::Status (Sessions::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*),
            const Req& req, HttpResponse& res);
  // The same for a POST whose JSON body is `Req` but for the session id,
  // which the path names.
  template <typename Req, typename Resp>
  void OnSession(grpc::Status (Sessions::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*),
                 const HttpRequest& req, HttpResponse& res);
  void Prepare(grpc::ClientContext* ctx) const;

  void ListSessions(const HttpRequest& req, HttpResponse& res);
  void GetSession(const HttpRequest& req, HttpResponse& res);
  void Transcript(const HttpRequest& req, HttpResponse& res);
  void TakeOver(const HttpRequest& req, HttpResponse& res);
  void Say(const HttpRequest& req, HttpResponse& res);
  void HandBack(const HttpRequest& req, HttpResponse& res);
  void End(const HttpRequest& req, HttpResponse& res);
  void Forget(const HttpRequest& req, HttpResponse& res);
  void Workers(const HttpRequest& req, HttpResponse& res);
  void Drain(const HttpRequest& req, HttpResponse& res);
  void Events(const HttpRequest& req, HttpResponse& res);

  void Watch();  // the events thread: WatchSessions, again after each end
  bool WaitStopping(absl::Duration d);

  const AdminConsoleOptions o_;
  std::unique_ptr<Sessions::Stub> stub_;
  std::unique_ptr<HttpServer> http_;
  std::thread watcher_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<json> events_ ABSL_GUARDED_BY(mu_);  // SessionEvents, parsed once
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;            // of the event after the last
  bool watching_ ABSL_GUARDED_BY(mu_) = false;
  std::string watch_error_ ABSL_GUARDED_BY(mu_);
};

absl::Status AdminConsoleImpl::Init() {
  if (o_.bearer_token.empty()) {
    if (auto s = RequireTokenOffLoopback(o_.listen, false,
                                         "BRIDGE_ADMIN_TOKEN (--admin_token) or SESSION_SECRET");
        !s.ok()) {
      return s;
    }
  }
  auto hp = SplitHostPort(o_.grpc_target);
  if (!hp.ok()) return hp.status();
  // A wildcard listener is reached on loopback: the call stays on this host.
  const std::string host = hp->first == "0.0.0.0" || hp->first == "::" || hp->first.empty()
                               ? "127.0.0.1"
                               : hp->first;
  stub_ = Sessions::NewStub(grpc::CreateChannel(
      absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host,
                   ":", hp->second),
      grpc::InsecureChannelCredentials()));
  HttpServerOptions ho;
  ho.listen = o_.listen;
  ho.max_body_bytes = 64 << 10;  // a Say text is at most 4096 characters
  ho.threads = 16;               // long polls hold one each: a handful of operators
  auto http = HttpServer::Create(ho);
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  http_->Route("GET", "/", [](const HttpRequest&, HttpResponse& res) {
    res.content_type = "text/html; charset=utf-8";
    res.body = std::string(ConsolePage());
    res.headers.push_back({"Content-Security-Policy",
                           "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "script-src 'self' 'unsafe-inline'"});
  });
  Add("GET", "/api/sessions", &AdminConsoleImpl::ListSessions);
  Add("GET", "/api/sessions/([^/]+)", &AdminConsoleImpl::GetSession);
  Add("GET", "/api/sessions/([^/]+)/transcript", &AdminConsoleImpl::Transcript);
  Add("POST", "/api/sessions/([^/]+)/takeover", &AdminConsoleImpl::TakeOver);
  Add("POST", "/api/sessions/([^/]+)/say", &AdminConsoleImpl::Say);
  Add("POST", "/api/sessions/([^/]+)/handback", &AdminConsoleImpl::HandBack);
  Add("POST", "/api/sessions/([^/]+)/end", &AdminConsoleImpl::End);
  Add("POST", "/api/users/forget", &AdminConsoleImpl::Forget);
  Add("GET", "/api/workers", &AdminConsoleImpl::Workers);
  Add("POST", "/api/workers/([^/]+)/drain", &AdminConsoleImpl::Drain);
  Add("GET", "/api/events", &AdminConsoleImpl::Events);
  if (auto s = http_->Bind(); !s.ok()) return s;
  watcher_ = std::thread([this] { Watch(); });
  return http_->Serve();
}

void AdminConsoleImpl::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
  }
  if (http_) http_->Stop();
  if (watcher_.joinable()) watcher_.join();
}

void AdminConsoleImpl::Add(const char* method, const std::string& pattern, Handler h) {
  http_->Route(method, pattern, [this, h](const HttpRequest& req, HttpResponse& res) {
    res.headers.push_back({"Cache-Control", "no-store"});
    if (Authorized(req, res)) (this->*h)(req, res);
  });
}

bool AdminConsoleImpl::Authorized(const HttpRequest& req, HttpResponse& res) const {
  if (o_.bearer_token.empty()) return true;  // loopback listener only (Init)
  const std::string given = req.Header("authorization");
  if (BearerMatches(given, o_.bearer_token)) return true;
  res.headers.push_back({"WWW-Authenticate", "Bearer"});
  Error(res, 401, given.empty() ? "the console needs the operator token: Authorization: Bearer ..."
                                : "wrong operator token");
  return false;
}

void AdminConsoleImpl::Prepare(grpc::ClientContext* ctx) const {
  AttachToken(ctx, o_.sessions_token);
}

template <typename Req, typename Resp>
void AdminConsoleImpl::Call(grpc::Status (Sessions::Stub::*rpc)(grpc::ClientContext*,
                                                                const Req&, Resp*),
                            const Req& req, HttpResponse& res) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
  Resp resp;
  grpc::Status s = (stub_.get()->*rpc)(&ctx, req, &resp);
  if (!s.ok()) {
    // UNAVAILABLE from a standby: the page says so and names no leader it
    // cannot know; the operator opens the leader's console.
    return Error(res, HttpStatusOf(s.error_code()), s.error_message());
  }
  res.Json(200, ToJson(resp));
}

void AdminConsoleImpl::ListSessions(const HttpRequest& req, HttpResponse& res) {
  v1::ListSessionsRequest r;
  r.set_include_ended(Flag(req, "include_ended"));
  r.set_reveal_ids(Flag(req, "reveal_ids"));
  r.set_worker_id(req.Param("worker_id"));
  Call(&Sessions::Stub::ListSessions, r, res);
}

void AdminConsoleImpl::GetSession(const HttpRequest& req, HttpResponse& res) {
  v1::GetSessionRequest r;
  r.set_session_id(req.matches[1]);
  r.set_reveal_ids(Flag(req, "reveal_ids"));
  Call(&Sessions::Stub::GetSession, r, res);
}

void AdminConsoleImpl::Transcript(const HttpRequest& req, HttpResponse& res) {
  v1::GetTranscriptRequest r;
  r.set_session_id(req.matches[1]);
  r.set_reveal_ids(Flag(req, "reveal_ids"));
  int limit = 0;
  if (req.HasParam("limit") && (!absl::SimpleAtoi(req.Param("limit"), &limit) || limit < 0)) {
    return Error(res, 400, "?limit must be a count of exchanges (0: all that are kept)");
  }
  r.set_limit(limit);
  Call(&Sessions::Stub::GetTranscript, r, res);
}

template <typename Req, typename Resp>
void AdminConsoleImpl::OnSession(grpc::Status (Sessions::Stub::*rpc)(grpc::ClientContext*,
                                                                     const Req&, Resp*),
                                 const HttpRequest& req, HttpResponse& res) {
  Req r;
  if (!FromJson(req, res, &r)) return;
  r.set_session_id(req.matches[1]);
  Call(rpc, r, res);
}

void AdminConsoleImpl::TakeOver(const HttpRequest& req, HttpResponse& res) {
  OnSession(&Sessions::Stub::TakeOver, req, res);
}

void AdminConsoleImpl::Say(const HttpRequest& req, HttpResponse& res) {
  OnSession(&Sessions::Stub::Say, req, res);
}

void AdminConsoleImpl::HandBack(const HttpRequest& req, HttpResponse& res) {
  OnSession(&Sessions::Stub::HandBack, req, res);
}

void AdminConsoleImpl::End(const HttpRequest& req, HttpResponse& res) {
  v1::EndSessionRequest r;
  if (!FromJson(req, res, &r)) return;
  r.set_session_id(req.matches[1]);
  if (r.reason().empty()) r.set_reason("ended from the operator console");
  Call(&Sessions::Stub::EndSession, r, res);
}

void AdminConsoleImpl::Forget(const HttpRequest& req, HttpResponse& res) {
  v1::ForgetUserRequest r;
  if (!FromJson(req, res, &r)) return;
  Call(&Sessions::Stub::ForgetUser, r, res);
}

void AdminConsoleImpl::Workers(const HttpRequest& req, HttpResponse& res) {
  v1::ListWorkersRequest r;
  r.set_include_dead(Flag(req, "include_dead"));
  Call(&Sessions::Stub::ListWorkers, r, res);
}

void AdminConsoleImpl::Drain(const HttpRequest& req, HttpResponse& res) {
  v1::DrainWorkerRequest r;
  r.set_worker_id(req.matches[1]);
  Call(&Sessions::Stub::DrainWorker, r, res);
}

// GET /api/events?after=SEQ&wait_ms=T: the SessionEvents after SEQ, waiting
// up to T for one. {"events": [...], "next": SEQ', "watching": bool,
// "reload": true when events were missed (older than the buffer)}.
void AdminConsoleImpl::Events(const HttpRequest& req, HttpResponse& res) {
  int64_t after = 0, wait_ms = 0;
  if ((req.HasParam("after") && !absl::SimpleAtoi(req.Param("after"), &after)) ||
      (req.HasParam("wait_ms") &&
       (!absl::SimpleAtoi(req.Param("wait_ms"), &wait_ms) || wait_ms < 0 ||
        wait_ms > kMaxWaitMs))) {
    return Error(res, 400, absl::StrCat("?after=SEQ and ?wait_ms=0..", kMaxWaitMs, " expected"));
  }
  absl::MutexLock lock(&mu_);
  auto ready = [this, after]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || next_seq_ - 1 > after;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(wait_ms));
  const int64_t first_kept = next_seq_ - static_cast<int64_t>(events_.size());
  json out = {{"next", next_seq_ - 1}, {"watching", watching_},
              {"reload", after + 1 < first_kept}};
  if (!watch_error_.empty()) out["error"] = watch_error_;
  json& list = out["events"] = json::array();
  for (int64_t seq = std::max(after + 1, first_kept); seq < next_seq_; ++seq) {
    list.push_back(events_[static_cast<size_t>(seq - first_kept)]);
  }
  res.Json(200, out.dump());
}

bool AdminConsoleImpl::WaitStopping(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  return mu_.AwaitWithTimeout(absl::Condition(&stopping), d);
}

void AdminConsoleImpl::Watch() {
  v1::WatchSessionsRequest req;
  req.set_reveal_ids(true);  // the console is the operator's: the API's token guards it
  while (true) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      watch_ctx_ = &ctx;
    }
    std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader = stub_->WatchSessions(&ctx, req);
    reader->WaitForInitialMetadata();  // the server sends it as it starts watching
    {
      absl::MutexLock lock(&mu_);
      watching_ = true;
      watch_error_.clear();
    }
    v1::SessionEvent ev;
    while (reader->Read(&ev)) {
      json parsed = json::parse(ToJson(ev));  // once here, not on every poll
      absl::MutexLock lock(&mu_);
      events_.push_back(std::move(parsed));
      ++next_seq_;
      if (events_.size() > kEventsKept) events_.pop_front();
    }
    grpc::Status s = reader->Finish();
    {
      absl::MutexLock lock(&mu_);
      watch_ctx_ = nullptr;
      watching_ = false;
      // A standby answers UNAVAILABLE until it leads: the page shows why.
      watch_error_ = s.ok() ? "the session stream ended" : s.error_message();
    }
    if (WaitStopping(absl::Seconds(1))) return;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminConsole>> AdminConsole::Start(
    const AdminConsoleOptions& options) {
  auto console = std::make_unique<AdminConsoleImpl>(options);
  if (auto s = console->Init(); !s.ok()) return s;
  return console;
}

std::string DeriveConsoleToken(absl::string_view session_secret) {
  return std::string(absl::StripPrefix(SignBody(session_secret, "bridge-admin-console"),
                                       "sha256="));
}

}  // namespace bridge::controller
