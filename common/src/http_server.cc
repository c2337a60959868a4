// The simulator's only translation unit that includes httplib.h (server and
// client): the rest of the code sees http.h's plain structs.
#include "common/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_server.h"
#include "httplib.h"

namespace bridge {

std::string HttpRequest::Param(const std::string& key, const std::string& fallback) const {
  auto it = params.find(key);
  return it == params.end() ? fallback : it->second;
}

std::string HttpRequest::Header(const std::string& lower_key) const {
  auto it = headers.find(lower_key);
  return it == headers.end() ? "" : it->second;
}

namespace {

HttpRequest Convert(const httplib::Request& in) {
  HttpRequest out;
  out.method = in.method;
  out.path = in.path;
  out.body = in.body;
  out.remote = in.remote_addr;
  for (const auto& m : in.matches) out.matches.push_back(m.str());
  out.params.insert(in.params.begin(), in.params.end());
  for (const auto& [k, v] : in.headers) out.headers.emplace(absl::AsciiStrToLower(k), v);
  for (const auto& [name, f] : in.files) {
    out.parts.emplace(name, FormPart{f.filename, f.content_type, f.content});
  }
  return out;
}

// httplib serves each connection on one thread for the connection's whole
// life, so a slow or idle client holds a thread (slowloris). Its own pool has
// a fixed size: 64 such clients stop the server. Here threads are made on
// demand up to `max` and leave after a while idle, so that a real request
// finds a thread while fewer than `max` connections are open, and idle
// attackers cost a parked thread each (httplib's read and keep-alive
// timeouts close them). A proxy that buffers requests (nginx, see
// docs/security.md) is the stronger front.
class ElasticPool final : public httplib::TaskQueue {
 public:
  explicit ElasticPool(int max) : max_(std::max(1, max)) {}
  ~ElasticPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(fn));
    // An idle thread takes one queued job: spawn while the jobs outnumber
    // them (an idle count alone races a burst: every enqueue would see the
    // same idle thread and none would spawn).
    if (queue_.size() > static_cast<size_t>(idle_) && threads_ < max_) {
      ++threads_;
      std::thread([this] { Loop(); }).detach();
    }
  }

  // Runs what is queued, then waits for every thread to leave.
  void shutdown() override {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    mu_.Await(absl::Condition(
        +[](int* threads) { return *threads == 0; }, &threads_));
  }

 private:
  void Loop() {
    absl::MutexLock lock(&mu_);
    for (;;) {
      ++idle_;
      mu_.AwaitWithTimeout(absl::Condition(this, &ElasticPool::HasWork), kIdleExit);
      --idle_;
      if (queue_.empty()) {  // stopping, or idle too long
        --threads_;
        return;
      }
      std::function<void()> fn = std::move(queue_.front());
      queue_.pop_front();
      mu_.Unlock();
      fn();
      mu_.Lock();
    }
  }
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); }

  static constexpr absl::Duration kIdleExit = absl::Seconds(30);
  const int max_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int threads_ ABSL_GUARDED_BY(mu_) = 0;
  int idle_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

enum class BodyRead { kOk, kTooLarge, kBroken };

// Reads a body as it arrives and stops at `max` bytes, chunked or not:
// httplib's own limit covers Content-Length only (and refuses that before
// calling the receiver at all).
BodyRead ReadLimited(const httplib::Request& req, const httplib::ContentReader& reader,
                     size_t max, HttpRequest* out) {
  size_t total = 0;  // every part counts against the one limit
  bool too_large = false;
  std::string* to = &out->body;  // a multipart body switches it per part
  auto receive = [&](const char* data, size_t len) {
    total += len;
    if (total > max) {
      too_large = true;
      return false;  // httplib stops reading and closes the connection
    }
    to->append(data, len);
    return true;
  };
  bool read;
  if (req.is_multipart_form_data()) {
    read = reader(
        [&](const httplib::MultipartFormData& part) {
          FormPart& p = out->parts[part.name] = FormPart{part.filename, part.content_type, ""};
          to = &p.content;
          return true;
        },
        receive);
  } else {
    read = reader(receive);
  }
  if (read) return BodyRead::kOk;
  const bool over = too_large || req.get_header_value<uint64_t>("Content-Length") > max;
  return over ? BodyRead::kTooLarge : BodyRead::kBroken;
}

class HttpServerImpl final : public HttpServer {
 public:
  ~HttpServerImpl() override { Stop(); }

  absl::Status Init(const HttpServerOptions& opts) {
    opts_ = opts;
    if (opts.tls_cert.empty() != opts.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
    }
    if (!opts.tls_cert.empty()) {
      auto s = std::make_unique<httplib::SSLServer>(opts.tls_cert.c_str(), opts.tls_key.c_str());
      if (!s->is_valid()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot load TLS cert/key from ", opts.tls_cert));
      }
      server_ = std::move(s);
    } else {
      server_ = std::make_unique<httplib::Server>();
    }
    if (opts.max_body_bytes > 0) server_->set_payload_max_length(opts.max_body_bytes);
    const int threads = opts.threads;
    server_->new_task_queue = [threads] { return new ElasticPool(threads); };
    // A client gets this long per read, and an idle keep-alive connection
    // this long before it is closed: what a stalled or idle peer costs.
    server_->set_read_timeout(5, 0);
    server_->set_write_timeout(5, 0);
    server_->set_keep_alive_timeout(5);
    // httplib's defaults cost ~40 ms a request (headers and body are two
    // writes: Nagle meets the client's delayed ACK) and close keep-alive
    // connections after 5 requests.
    server_->set_tcp_nodelay(true);
    server_->set_keep_alive_max_count(100000);
    // httplib listens with a backlog of 5: under a flood of connections a
    // real client's SYN is dropped and retried after 1, 3, 7 s. The socket
    // is remembered here and listens again with the system's maximum once
    // bound (listen() on a listening socket only changes its backlog).
    server_->set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd_ = sock;
    });
    if (opts.on_error) {
      server_->set_error_handler([cb = opts.on_error](const httplib::Request&, httplib::Response& res) {
        HttpResponse out;
        out.status = res.status;
        out.content_type = "text/plain";
        cb(out);
        if (!out.body.empty()) res.set_content(out.body, out.content_type);
      });
    }
    return absl::OkStatus();
  }

  void Route(absl::string_view method, const std::string& pattern,
             HttpHandler handler) override {
    auto respond = [](const HttpResponse& out, httplib::Response& res) {
      res.status = out.status;
      for (const auto& [k, v] : out.headers) res.set_header(k, v);
      // No answer of ours is to be sniffed into HTML (the verification echo
      // repeats what the caller sent).
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(out.body, out.content_type);
    };
    auto wrapped = [h = handler, respond](const httplib::Request& req, httplib::Response& res) {
      HttpResponse out;
      h(Convert(req), out);
      respond(out, res);
    };
    if (method == "POST" && opts_.max_body_bytes > 0) {
      server_->Post(pattern, [this, h = std::move(handler), respond](
                                 const httplib::Request& req, httplib::Response& res,
                                 const httplib::ContentReader& reader) {
        HttpRequest in = Convert(req);
        switch (ReadLimited(req, reader, opts_.max_body_bytes, &in)) {
          case BodyRead::kOk: {
            HttpResponse out;
            h(in, out);
            return respond(out, res);
          }
          case BodyRead::kTooLarge:  // answered by the error handler (on_error)
            res.status = 413;
            break;
          case BodyRead::kBroken:
            res.status = 400;
            break;
        }
        res.set_header("Connection", "close");
        res.set_header("X-Content-Type-Options", "nosniff");
      });
      return;
    }
    if (method == "GET") server_->Get(pattern, wrapped);
    else if (method == "POST") server_->Post(pattern, wrapped);
    else if (method == "DELETE") server_->Delete(pattern, wrapped);
    else if (method == "PUT") server_->Put(pattern, wrapped);
  }

  absl::Status Bind() override {
    auto hp = SplitHostPort(opts_.listen);
    if (!hp.ok()) return absl::InvalidArgumentError(hp.status().message());
    int port = hp->second == 0 ? server_->bind_to_any_port(hp->first)
                               : (server_->bind_to_port(hp->first, hp->second) ? hp->second : -1);
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat("http: cannot listen on ", opts_.listen));
    }
    if (listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
    address_ = absl::StrCat(hp->first.find(':') != std::string::npos
                                ? absl::StrCat("[", hp->first, "]") : hp->first,
                            ":", port);
    return absl::OkStatus();
  }

  absl::Status Serve() override {
    thread_ = std::thread([this] {
      server_->listen_after_bind();
      listen_returned_ = true;
    });
    // httplib's stop() is a no-op until the accept loop runs: a SIGTERM right
    // after READY would otherwise leave the process hanging in join().
    while (!server_->is_running() && !listen_returned_) std::this_thread::yield();
    if (listen_returned_) {
      thread_.join();
      return absl::UnavailableError(absl::StrCat("http: accept loop failed on ", address_));
    }
    return absl::OkStatus();
  }

  void Stop() override {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }

  std::string address() const override { return address_; }
  bool tls() const override { return !opts_.tls_cert.empty(); }

 private:
  HttpServerOptions opts_;
  std::unique_ptr<httplib::Server> server_;
  std::string address_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int listen_fd_ = -1;  // httplib's listening socket (it owns it)
};


}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& opts) {
  auto server = std::make_unique<HttpServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

absl::StatusOr<HttpResult> HttpSend(absl::string_view method, const std::string& url,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    const std::string& body, const std::string& content_type,
                                    absl::Duration timeout) {
  auto parts = SplitUrl(url);
  if (!parts.ok()) return parts.status();
  httplib::Client cli(parts->origin);
  if (!cli.is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("bad URL origin ", parts->origin));
  }
  const std::string& path = parts->path_and_query;
  cli.enable_server_certificate_verification(false);
  const auto usec = absl::ToInt64Microseconds(timeout);
  cli.set_connection_timeout(usec / 1000000, usec % 1000000);
  cli.set_read_timeout(usec / 1000000, usec % 1000000);
  cli.set_write_timeout(usec / 1000000, usec % 1000000);
  httplib::Headers h;
  for (const auto& [k, v] : headers) h.emplace(k, v);
  httplib::Result res = method == "GET"
                            ? cli.Get(path, h)
                            : cli.Post(path, h, body.data(), body.size(), content_type);
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat(method, " ", parts->origin, ": ", httplib::to_string(res.error())));
  }
  return HttpResult{res->status, res->body, res->get_header_value("Content-Type")};
}


}  // namespace bridge
