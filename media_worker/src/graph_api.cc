// The WhatsApp Cloud API client over cpp-httplib. This is the only
// translation unit of graph_api that includes httplib.h; the decisions (retry,
// backoff, status codes, parsing) live in graph_api_policy.cc.
#include "media_worker/graph_api.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/redact.h"
#include "event_counters.h"
#include "graph_api_policy.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bridge::media_worker {
namespace {

using graph_internal::DecodedError;
using graph_internal::Reply;
using graph_internal::UrlParts;
using json = nlohmann::json;

constexpr size_t kErrorBodyMax = 64 * 1024;  // of a failed download, for the message
constexpr size_t kIdlePerOrigin = 8;         // kept-alive connections per host
constexpr int kMaxResolves = 2;              // URLs expire after 5 minutes: one more try

bool Is2xx(int status) { return status >= 200 && status < 300; }

// Idle keep-alive clients per origin ("https://host:port"): a TLS handshake
// to Meta per call would cost more than the call. A client serves one call
// at a time; it goes back only after a complete exchange, so a connection in
// an unknown state (timeout, aborted download) is never reused.
class ClientPool {
 public:
  explicit ClientPool(const GraphApiOptions& o) : o_(o) {}

  std::unique_ptr<httplib::Client> Take(const std::string& origin) {
    {
      absl::MutexLock lock(&mu_);
      auto& idle = idle_[origin];
      if (!idle.empty()) {
        std::unique_ptr<httplib::Client> c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    return Make(origin);
  }

  void Give(const std::string& origin, std::unique_ptr<httplib::Client> c) {
    absl::MutexLock lock(&mu_);
    auto& idle = idle_[origin];
    if (idle.size() < kIdlePerOrigin) idle.push_back(std::move(c));
  }

 private:
  std::unique_ptr<httplib::Client> Make(const std::string& origin) const {
    auto c = std::make_unique<httplib::Client>(origin);
    c->set_connection_timeout(absl::ToChronoMicroseconds(o_.connect_timeout));
    c->set_read_timeout(absl::ToChronoMicroseconds(o_.request_timeout));
    c->set_write_timeout(absl::ToChronoMicroseconds(o_.request_timeout));
    c->set_keep_alive(true);
    c->set_tcp_nodelay(true);  // headers and body go in separate writes: no Nagle stall
    c->set_url_encode(false);      // signed download URLs must go out byte for byte
    c->set_follow_location(false);  // never carry the bearer token to another host
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
    if (!o_.ca_file.empty()) c->set_ca_cert_path(o_.ca_file);
    c->enable_server_certificate_verification(true);
#endif
    return c;
  }

  const GraphApiOptions& o_;
  absl::Mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_ ABSL_GUARDED_BY(mu_);
};

// A download in progress: where its bytes go and what has gone there.
struct Stream {
  const std::function<absl::Status(absl::string_view)>* sink;
  int64_t max_bytes;
  EVP_MD_CTX* sha;
  int64_t delivered = 0;  // bytes handed to the sink: from the first, no retry
  absl::Status stop;      // the sink's error or the size limit, returned as is
};

absl::Status TooLarge(int64_t size, int64_t limit, bool known) {
  return absl::InvalidArgumentError(absl::StrCat("media is ", known ? "" : "over ", size,
                                                 " bytes, above the max_media_bytes limit of ",
                                                 limit, " bytes"));
}

// Hands one chunk of a 2xx body to the sink; false stops the download.
bool Deliver(Stream* s, absl::string_view chunk) {
  const int64_t n = static_cast<int64_t>(chunk.size());
  if (s->delivered + n > s->max_bytes) {
    s->stop = TooLarge(s->delivered + n, s->max_bytes, /*known=*/false);
    return false;
  }
  EVP_DigestUpdate(s->sha, chunk.data(), chunk.size());
  s->delivered += n;
  absl::Status st = (*s->sink)(chunk);
  if (!st.ok()) {
    s->stop = std::move(st);
    return false;
  }
  return true;
}

// GET with the body streamed: a 2xx body goes to the sink as it arrives (an
// announced oversize stops it before the first byte); another status's body
// is kept, capped, for the error message.
httplib::Result StreamGet(httplib::Client& c, const std::string& path,
                          const httplib::Headers& headers, Stream* s, Reply* reply) {
  int status = 0;
  return c.Get(
      path, headers,
      [&](const httplib::Response& res) {
        status = res.status;
        int64_t len = 0;
        if (Is2xx(status) &&
            absl::SimpleAtoi(res.get_header_value("Content-Length"), &len) &&
            len > s->max_bytes) {
          s->stop = TooLarge(len, s->max_bytes, /*known=*/true);
          return false;
        }
        return true;
      },
      [&](const char* data, size_t n) {
        if (Is2xx(status)) return Deliver(s, absl::string_view(data, n));
        const size_t room = kErrorBodyMax - std::min(kErrorBodyMax, reply->body.size());
        reply->body.append(data, std::min(n, room));
        return true;
      });
}

// Why no answer came, and whether trying again can help: a certificate that
// does not verify will not verify on the next attempt either.
void NoteTransportError(const httplib::Result& res, const httplib::Client& c, Reply* reply) {
  reply->http_status = 0;
  reply->transport_error = httplib::to_string(res.error());
  switch (res.error()) {
    case httplib::Error::SSLServerVerification:
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
      absl::StrAppend(&reply->transport_error, ": ",
                      X509_verify_cert_error_string(c.get_openssl_verify_result()));
#endif
      [[fallthrough]];
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::BindIPAddress:
    case httplib::Error::ExceedRedirectCount:
    case httplib::Error::UnsupportedMultipartBoundaryChars:
    case httplib::Error::Compression:
    case httplib::Error::Canceled:
      reply->transport_retryable = false;
      break;
    case httplib::Error::Read:
    case httplib::Error::Unknown:
      // The request went out; the server may have acted on it.
      reply->maybe_delivered = true;
      reply->transport_retryable = true;
      break;
    default:
      reply->transport_retryable = true;
  }
}

// Meta's digests are base64; accept hex and unpadded/web-safe base64 too.
bool DigestMatches(absl::string_view digest, absl::string_view expected) {
  expected = absl::StripAsciiWhitespace(expected);
  if (expected.size() == 64 && absl::AsciiStrToLower(expected) == absl::BytesToHexString(digest)) {
    return true;
  }
  absl::string_view e = absl::StripSuffix(absl::StripSuffix(expected, "="), "=");
  return e == absl::StripSuffix(absl::Base64Escape(digest), "=") ||
         e == absl::WebSafeBase64Escape(digest);
}

absl::Status CheckDigest(EVP_MD_CTX* sha, const std::string& expected, int64_t bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(sha, md, &len);
  const absl::string_view digest(reinterpret_cast<const char*>(md), len);
  if (expected.empty() || DigestMatches(digest, expected)) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("media sha256 mismatch over ", bytes,
                                          " bytes: expected ", expected, ", got ",
                                          absl::Base64Escape(digest)));
}

// A download URL that no longer works but whose media id may: Meta answers
// 404 once the signature expired; a CDN may say 410, or 403 without a Graph
// error (a 403 with one, like a bad token, is not cured by resolving).
bool UrlGone(const Reply& reply) {
  const int h = reply.http_status;
  return h == 404 || h == 410 ||
         (h == 403 && !graph_internal::DecodeGraphError(h, reply.body).has_value());
}

std::string Dump(const json& j) {
  // Invalid UTF-8 from an agent must not throw: it goes out replaced.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct Request {
  const char* method;     // "GET" or "POST"
  std::string url;        // absolute
  std::string json_body;  // POST as application/json
  const httplib::MultipartFormDataItems* form = nullptr;
  Stream* stream = nullptr;  // GET streamed to a sink
  // False for POST /messages: repeating it after it may have been carried
  // out (a read timeout) could send the user the same message twice.
  bool idempotent = true;
};

struct Outcome {
  absl::Status status;  // ok: reply holds the 2xx answer
  Reply reply;
};

class GraphApiImpl final : public GraphApi {
 public:
  explicit GraphApiImpl(const GraphApiOptions& options) : o_(options), pool_(o_) {
    RegisterSecret(o_.access_token);  // whatever echoes it, our logs will not
    prefix_ = absl::StrCat(absl::StripSuffix(o_.base_url, "/"), "/",
                           absl::StripSuffix(absl::StripPrefix(o_.api_version, "/"), "/"));
  }

  absl::StatusOr<MediaInfo> ResolveMedia(const std::string& media_id) override;
  absl::Status DownloadMedia(const std::string& media_id, const std::string& url,
                             const std::string& sha256_b64,
                             const std::function<absl::Status(absl::string_view)>& sink) override;
  absl::StatusOr<std::string> UploadMedia(const std::string& phone_number_id,
                                          const std::string& bytes, const std::string& mime_type,
                                          const std::string& filename) override;
  absl::StatusOr<std::string> SendText(const std::string& phone_number_id, const Recipient& to,
                                       const std::string& text,
                                       const std::string& reply_to) override;
  absl::StatusOr<std::string> SendVoiceNote(const std::string& phone_number_id,
                                            const Recipient& to, const std::string& media_id,
                                            const std::string& reply_to) override;
  absl::Status MarkReadTyping(const std::string& phone_number_id,
                              const std::string& message_id) override {
    return Read(phone_number_id, message_id, /*typing=*/true);
  }
  absl::Status MarkRead(const std::string& phone_number_id,
                        const std::string& message_id) override {
    return Read(phone_number_id, message_id, /*typing=*/false);
  }
  absl::Status ActOnCall(const std::string& phone_number_id, const std::string& call_id,
                         CallAction action, const std::string& sdp_answer) override;

 private:
  std::string GraphUrl(absl::string_view path) const { return absl::StrCat(prefix_, path); }
  Outcome Run(const Request& req);
  Reply Once(const Request& req, const UrlParts& url);
  absl::StatusOr<std::string> Call(const Request& req);
  absl::StatusOr<std::string> SendMessage(const std::string& phone_number_id, const Recipient& to,
                                          json message,
                                          const std::string& reply_to);
  absl::Status Read(const std::string& phone_number_id, const std::string& message_id,
                    bool typing);
  void Backoff(const std::string& what, const Reply& reply,
               const std::optional<DecodedError>& err, int attempt);

  const GraphApiOptions o_;
  std::string prefix_;  // base_url + "/" + api_version
  ClientPool pool_;
};

// One attempt on a pooled connection.
Reply GraphApiImpl::Once(const Request& req, const UrlParts& url) {
  Reply reply;
  std::unique_ptr<httplib::Client> c = pool_.Take(url.origin);
  if (!c->is_valid()) {
    reply.transport_error = "cannot open a client for " + url.origin;
    reply.transport_retryable = false;
    return reply;
  }
  httplib::Headers headers;
  if (graph_internal::TokenMayGoTo(req.url, o_.base_url, o_.media_hosts)) {
    headers.emplace("Authorization", "Bearer " + o_.access_token);
  }
  const std::string& path = url.path_and_query;
  httplib::Result res =
      req.stream ? StreamGet(*c, path, headers, req.stream, &reply)
      : req.form ? c->Post(path, headers, *req.form)
      : std::string_view(req.method) == "POST"
          ? c->Post(path, headers, req.json_body, "application/json")
          : c->Get(path, headers);
  if (!res) {
    NoteTransportError(res, *c, &reply);
    return reply;  // the client is dropped with its connection
  }
  reply.http_status = res->status;
  if (!req.stream) reply.body = std::move(res->body);
  int64_t seconds = 0;
  if (absl::SimpleAtoi(res->get_header_value("Retry-After"), &seconds)) {
    reply.retry_after_s = seconds;
  }
  pool_.Give(url.origin, std::move(c));
  return reply;
}

// Logs, tells on_retry and sleeps before the next attempt.
void GraphApiImpl::Backoff(const std::string& what, const Reply& reply,
                           const std::optional<DecodedError>& err, int attempt) {
  GraphError g;
  if (err) {
    g = err->error;
  } else {
    g.http_status = reply.http_status;
    g.message = Redact(reply.http_status == 0 ? reply.transport_error
                                              : absl::StrCat("HTTP ", reply.http_status));
    g.retryable = true;
  }
  const absl::Duration delay = graph_internal::RetryDelay(o_, attempt, g.code, reply.retry_after_s);
  LogWarn("graph call failed; retrying",
          {{"request", what}, {"http_status", reply.http_status}, {"code", g.code},
           {"error", g.message}, {"attempt", attempt},
           {"delay_ms", absl::ToInt64Milliseconds(delay)}});
  if (o_.on_retry) o_.on_retry(g, attempt, delay);
  absl::SleepFor(delay);  // a pool thread of the turn: nothing else waits on it
}

// Attempts a request until it succeeds, fails for good, or runs out of
// attempts (PROTOCOLS.md A5).
Outcome GraphApiImpl::Run(const Request& req) {
  absl::StatusOr<UrlParts> url = graph_internal::SplitUrl(req.url);
  if (!url.ok()) return {url.status(), {}};
  const std::string what = absl::StrCat(req.method, " ", url->origin, url->path);
  const int max_attempts = std::max(1, o_.max_attempts);
  for (int attempt = 1;; ++attempt) {
    Reply reply = Once(req, *url);
    if (req.stream && !req.stream->stop.ok()) return {req.stream->stop, std::move(reply)};
    if (Is2xx(reply.http_status)) return {absl::OkStatus(), std::move(reply)};
    std::optional<DecodedError> err =
        graph_internal::DecodeGraphError(reply.http_status, reply.body);
    CountGraphError(err ? err->error.code : 0);
    if (err && err->error.code == 190) {
      LogError("WhatsApp access token is invalid or expired (Graph error 190): the operator "
               "must set a valid WHATSAPP_ACCESS_TOKEN",
               {{"request", what}, {"error", err->error.message}});
    }
    if (req.stream && req.stream->delivered > 0) {
      // The sink (a decoder) has consumed the first part: it cannot restart.
      return {absl::UnavailableError(Redact(absl::StrCat(
                  "media download interrupted after ", req.stream->delivered, " bytes: ",
                  reply.http_status ? absl::StrCat("HTTP ", reply.http_status)
                                    : reply.transport_error,
                  " [", what, "]"))),
              std::move(reply)};
    }
    const bool may_repeat = req.idempotent || !reply.maybe_delivered;
    const bool retry = may_repeat && graph_internal::ShouldRetry(reply, err);
    if (!retry || attempt >= max_attempts) {
      absl::Status status = graph_internal::FailureStatus(what, reply, err, attempt, retry);
      if (!may_repeat) status = graph_internal::MaybeSentStatus(status, reply);
      return {status, std::move(reply)};
    }
    Backoff(what, reply, err, attempt);
  }
}

absl::StatusOr<std::string> GraphApiImpl::Call(const Request& req) {
  Outcome out = Run(req);
  if (!out.status.ok()) return out.status;
  return std::move(out.reply.body);
}

absl::Status BadId(absl::string_view what, absl::string_view id) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad ", what, " '", Redact(id.substr(0, 64)), "': expected [A-Za-z0-9_.-]"));
}

absl::StatusOr<MediaInfo> GraphApiImpl::ResolveMedia(const std::string& media_id) {
  if (!graph_internal::IsSafeId(media_id)) return BadId("media id", media_id);
  absl::StatusOr<std::string> body = Call({"GET", GraphUrl("/" + media_id)});
  if (!body.ok()) return body.status();
  return graph_internal::ParseMediaInfo(*body);
}

absl::Status GraphApiImpl::DownloadMedia(
    const std::string& media_id, const std::string& url, const std::string& sha256_b64,
    const std::function<absl::Status(absl::string_view)>& sink) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::string expected = sha256_b64;
  std::string current = url;  // the webhook's URL saves a round trip while it lives
  if (!current.empty() && !graph_internal::TokenMayGoTo(current, o_.base_url, o_.media_hosts)) {
    LogWarn("a webhook media URL names a host the token may not go to; resolving the id instead",
            {{"media_id", media_id}, {"host", HostOf(current)}});
    current.clear();
  }
  for (int resolves = 0;;) {
    if (current.empty()) {
      if (resolves == kMaxResolves) {
        return absl::NotFoundError(absl::StrCat("media ", media_id, ": download URL not found ",
                                                "even right after resolving it"));
      }
      absl::StatusOr<MediaInfo> info = ResolveMedia(media_id);
      if (!info.ok()) return info.status();
      ++resolves;
      current = info->url;
      if (!graph_internal::TokenMayGoTo(current, o_.base_url, o_.media_hosts)) {
        return absl::PermissionDeniedError(absl::StrCat(
            "media ", media_id, ": the Graph API's download URL names ", HostOf(current),
            ", which is not a Meta media host (--media_hosts): not fetched with the token"));
      }
      if (expected.empty()) expected = info->sha256_b64;
    }
    EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
    Stream s{&sink, o_.max_media_bytes, sha.get()};
    Outcome out = Run({"GET", current, "", nullptr, &s});
    if (out.status.ok()) return CheckDigest(sha.get(), expected, s.delivered);
    if (!UrlGone(out.reply) || s.delivered > 0 || !s.stop.ok()) return out.status;
    LogInfo("media URL expired or unknown; resolving the id again",
            {{"media_id", media_id}, {"url", Redact(graph_internal::StripQuery(current))},
             {"http_status", out.reply.http_status}});
    current.clear();
  }
}

absl::StatusOr<std::string> GraphApiImpl::UploadMedia(const std::string& phone_number_id,
                                                      const std::string& bytes,
                                                      const std::string& mime_type,
                                                      const std::string& filename) {
  if (!graph_internal::IsSafeId(phone_number_id)) return BadId("phone number id", phone_number_id);
  const httplib::MultipartFormDataItems form = {
      {"file", bytes, filename, mime_type},
      {"type", mime_type, "", ""},
      {"messaging_product", "whatsapp", "", ""},
  };
  Request req{"POST", GraphUrl("/" + phone_number_id + "/media")};
  req.form = &form;
  absl::StatusOr<std::string> body = Call(req);
  if (!body.ok()) return body.status();
  return graph_internal::ParseUploadId(*body);
}

absl::StatusOr<std::string> GraphApiImpl::SendMessage(const std::string& phone_number_id,
                                                      const Recipient& to, json message,
                                                      const std::string& reply_to) {
  if (!graph_internal::IsSafeId(phone_number_id)) return BadId("phone number id", phone_number_id);
  // Meta: "to" wins when both are given and is the recommended form.
  if (!to.wa_id.empty()) {
    message["to"] = to.wa_id;
  } else if (!to.user_id.empty()) {
    message["recipient"] = to.user_id;
  } else {
    return absl::InvalidArgumentError("a message needs a recipient (no phone and no user id)");
  }
  if (!reply_to.empty()) message["context"] = {{"message_id", reply_to}};
  absl::StatusOr<std::string> body =
      Call({.method = "POST",
            .url = GraphUrl("/" + phone_number_id + "/messages"),
            .json_body = Dump(message),
            .idempotent = false});
  if (!body.ok()) return body.status();
  return graph_internal::ParseMessageId(*body);
}

absl::StatusOr<std::string> GraphApiImpl::SendText(const std::string& phone_number_id,
                                                   const Recipient& to, const std::string& text,
                                                   const std::string& reply_to) {
  json m = {{"messaging_product", "whatsapp"}, {"recipient_type", "individual"},
            {"type", "text"},                   {"text", {{"preview_url", false}, {"body", text}}}};
  return SendMessage(phone_number_id, to, std::move(m), reply_to);
}

absl::StatusOr<std::string> GraphApiImpl::SendVoiceNote(const std::string& phone_number_id,
                                                        const Recipient& to,
                                                        const std::string& media_id,
                                                        const std::string& reply_to) {
  json m = {{"messaging_product", "whatsapp"}, {"recipient_type", "individual"},
            {"type", "audio"},                  {"audio", {{"id", media_id}, {"voice", true}}}};
  return SendMessage(phone_number_id, to, std::move(m), reply_to);
}

absl::Status GraphApiImpl::ActOnCall(const std::string& phone_number_id,
                                     const std::string& call_id, CallAction action,
                                     const std::string& sdp_answer) {
  if (!graph_internal::IsSafeId(phone_number_id)) return BadId("phone number id", phone_number_id);
  static constexpr const char* kNames[] = {"pre_accept", "accept", "reject", "terminate"};
  const bool with_sdp = action == CallAction::kPreAccept || action == CallAction::kAccept;
  if (with_sdp == sdp_answer.empty()) {
    return absl::InvalidArgumentError(with_sdp ? "pre_accept and accept need the SDP answer"
                                               : "only pre_accept and accept carry an SDP");
  }
  json m = {{"messaging_product", "whatsapp"},
            {"call_id", call_id},
            {"action", kNames[static_cast<int>(action)]}};
  if (with_sdp) m["session"] = {{"sdp_type", "answer"}, {"sdp", sdp_answer}};
  absl::StatusOr<std::string> body =
      Call({"POST", GraphUrl("/" + phone_number_id + "/calls"), Dump(m)});
  if (!body.ok()) return body.status();
  return graph_internal::ParseSuccess(*body);
}

absl::Status GraphApiImpl::Read(const std::string& phone_number_id,
                                const std::string& message_id, bool typing) {
  if (!graph_internal::IsSafeId(phone_number_id)) return BadId("phone number id", phone_number_id);
  json m = {{"messaging_product", "whatsapp"}, {"status", "read"}, {"message_id", message_id}};
  if (typing) m["typing_indicator"] = {{"type", "text"}};
  absl::StatusOr<std::string> body =
      Call({"POST", GraphUrl("/" + phone_number_id + "/messages"), Dump(m)});
  if (!body.ok()) return body.status();
  return graph_internal::ParseSuccess(*body);
}

}  // namespace

std::unique_ptr<GraphApi> NewGraphApi(const GraphApiOptions& options) {
  return std::make_unique<GraphApiImpl>(options);
}

}  // namespace bridge::media_worker
