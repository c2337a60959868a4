// A thin HTTP layer over cpp-httplib (server and one-shot client), so that
// httplib.h is compiled in one translation unit only: handlers elsewhere see
// these plain structs. Used by the gateway and whatsapp-sim.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/url.h"  // UrlEncode for the query strings callers build

namespace bridge {

struct FormPart {
  std::string filename;      // empty for a plain form field
  std::string content_type;
  std::string content;
};

struct HttpRequest {
  std::string method;
  std::string path;                      // without the query
  std::string body;
  std::vector<std::string> matches;      // the route's regex groups; [0] = path
  std::multimap<std::string, std::string> params;   // query (decoded)
  std::map<std::string, std::string> headers;       // keys lower-cased
  std::map<std::string, FormPart> parts;            // multipart/form-data fields
  std::string remote;                    // peer address, for logs

  std::string Param(const std::string& key, const std::string& fallback = "") const;
  bool HasParam(const std::string& key) const { return params.count(key) > 0; }
  std::string Header(const std::string& lower_key) const;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;

  void Json(int code, std::string json) {
    status = code;
    body = std::move(json);
    content_type = "application/json";
  }
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;

struct HttpServerOptions {
  std::string listen;
  std::string tls_cert;
  std::string tls_key;
  size_t max_body_bytes = 0;  // 0: httplib's default; larger bodies get 413
  // Connections served at once: each holds a thread (made on demand) for
  // its life; more wait for one.
  int threads = 32;
  // Sees every error answer httplib makes itself (413, 400 on a bad request
  // line, 404): counts it and may replace the body.
  std::function<void(HttpResponse&)> on_error;
};

class HttpServer {
 public:
  // Makes the server (TLS when a cert is given); routes go in before Start().
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& opts);
  virtual ~HttpServer() = default;

  // `pattern` is a std::regex matched against the whole path; the first
  // matching route (in registration order) wins.
  virtual void Route(absl::string_view method, const std::string& pattern,
                     HttpHandler handler) = 0;
  // Binds the listen address (port 0: any free port); address() is known
  // from here on, before any request can arrive.
  virtual absl::Status Bind() = 0;
  // Runs the accept loop on its own thread; returns once accepting.
  virtual absl::Status Serve() = 0;
  virtual void Stop() = 0;

  virtual std::string address() const = 0;  // host:port bound
  virtual bool tls() const = 0;
};

struct HttpResult {
  int status = 0;
  std::string body;
  std::string content_type;
};

// One request on a fresh connection to an absolute http(s) URL. Certificates
// are not verified: the simulator only talks to local test gateways, which
// use self-signed certificates. An error status when no answer came.
absl::StatusOr<HttpResult> HttpSend(absl::string_view method, const std::string& url,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    const std::string& body, const std::string& content_type,
                                    absl::Duration timeout);

}  // namespace bridge
