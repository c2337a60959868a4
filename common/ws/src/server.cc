// Server: websocketpp's server role over one io_context and one thread.
// This is one of the two translation units that include websocketpp (the
// other is client.cc); keep it that way for compile time.
#include <websocketpp/config/asio.hpp>
#include <websocketpp/server.hpp>

#include <algorithm>
#include <cctype>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "connection_impl.h"
#include "io_loop.h"
#include "tls_config.h"
#include "url.h"
#include "wire_connection.h"
#include "ws/websocket.h"

namespace bridge::ws {
namespace {

using internal::ConnectionImpl;
using internal::IoLoop;
using internal::JoinHostPort;

using PlainServer = websocketpp::server<websocketpp::config::asio>;
using TlsServer =
    websocketpp::server<internal::FixedTlsConfig<websocketpp::config::asio_tls>>;
using SslContextPtr = std::shared_ptr<asio::ssl::context>;

constexpr long kOpenHandshakeMs = 10000;
constexpr absl::Duration kStopGrace = absl::Seconds(2);

HttpRequest ToHttpRequest(const websocketpp::http::parser::request& in) {
  HttpRequest out;
  out.method = in.get_method();
  out.resource = in.get_uri();
  for (const auto& [name, value] : in.get_headers()) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    out.headers[lower] = value;
  }
  out.body = in.get_body();
  return out;
}

HttpResponse PlainResponse(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.content_type = "text/plain";
  response.body = std::move(body);
  return response;
}

// Only valid inside websocketpp's http and validate handlers.
template <typename Con>
void ApplyResponse(Con& con, const HttpResponse& response) {
  auto status = static_cast<websocketpp::http::status_code::value>(response.status);
  con.set_status(status, websocketpp::http::status_code::get_string(status));
  con.set_body(response.body);
  if (!response.content_type.empty()) con.replace_header("Content-Type", response.content_type);
  for (const auto& [name, value] : response.headers) con.append_header(name, value);
}

template <typename Con>
std::string RemoteOf(Con& con) {
  std::error_code ec;
  asio::ip::tcp::endpoint peer = con.get_raw_socket().remote_endpoint(ec);
  return ec ? std::string("unknown") : JoinHostPort(peer.address().to_string(), peer.port());
}

// Runs an application callback; an exception becomes a 500 rather than
// unwinding through websocketpp and killing the io thread (and the process).
template <typename Result, typename Fn>
Result CallOr500(const char* what, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return PlainResponse(500, absl::StrCat(what, " failed: ", e.what(), "\n"));
  } catch (...) {
    return PlainResponse(500, absl::StrCat(what, " failed\n"));
  }
}

absl::StatusOr<SslContextPtr> MakeServerTlsContext(const TlsFiles& files) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::single_dh_use);
  std::error_code ec;
  ctx->use_certificate_chain_file(files.cert_chain_path, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load certificate chain ", files.cert_chain_path, ": ", ec.message()));
  }
  ctx->use_private_key_file(files.private_key_path, asio::ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load private key ", files.private_key_path, ": ", ec.message()));
  }
  return ctx;
}

template <typename Endpoint>
class ServerImpl final : public Server {
 public:
  using Conn = internal::WireConnection<Endpoint>;

  ServerImpl(ServerCallbacks callbacks, SslContextPtr tls) : callbacks_(std::move(callbacks)) {
    internal::ConfigureEndpoint(endpoint_);
    endpoint_.set_reuse_addr(true);
    endpoint_.set_open_handshake_timeout(kOpenHandshakeMs);
    endpoint_.set_validate_handler(
        [this](websocketpp::connection_hdl hdl) { return OnValidate(hdl); });
    endpoint_.set_http_handler([this](websocketpp::connection_hdl hdl) { OnHttp(hdl); });
    // Small frames (audio, JSON events) must not wait for Nagle's algorithm.
    endpoint_.set_tcp_pre_init_handler([this](websocketpp::connection_hdl hdl) {
      std::error_code ec;
      endpoint_.get_con_from_hdl(hdl)->get_raw_socket().set_option(asio::ip::tcp::no_delay(true),
                                                                    ec);
    });
    if constexpr (std::is_same_v<Endpoint, TlsServer>) {
      endpoint_.set_tls_init_handler([tls](websocketpp::connection_hdl) { return tls; });
    }
  }

  ~ServerImpl() override { Stop(); }

  absl::Status Listen(const std::string& host, uint16_t port) {
    const std::string where = JoinHostPort(host, port);
    std::error_code ec;
    endpoint_.init_asio(&loop_->io(), ec);
    if (!ec) endpoint_.listen(host, std::to_string(port), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
    asio::ip::tcp::endpoint local = endpoint_.get_local_endpoint(ec);
    if (!ec) endpoint_.start_accept(ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot accept on ", where, ": ", ec.message()));
    address_ = JoinHostPort(local.address().to_string(), local.port());
    loop_->Start();
    return absl::OkStatus();
  }

  std::string address() const override { return address_; }

  void Stop() override {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    loop_->Post([this] {
      stopping_ = true;
      std::error_code ec;
      endpoint_.stop_listening(ec);
      for (const std::shared_ptr<Conn>& conn : LiveSnapshot()) {
        conn->CloseNow(kCloseGoingAway, "server shutting down");
      }
    });
    loop_->StopAndJoin(kStopGrace);
    // The io thread is gone: what did not finish in time is dropped quietly.
    for (auto& [key, conn] : live_) conn->Abandon();
    live_.clear();
  }

 private:
  std::vector<std::shared_ptr<Conn>> LiveSnapshot() const {
    std::vector<std::shared_ptr<Conn>> out;
    for (const auto& [key, conn] : live_) out.push_back(conn);
    return out;
  }

  // websocketpp's validate handler: the upgrade request is complete.
  bool OnValidate(websocketpp::connection_hdl hdl) {
    typename Endpoint::connection_ptr con = endpoint_.get_con_from_hdl(hdl);
    if (stopping_) {
      ApplyResponse(*con, PlainResponse(503, "shutting down\n"));
      return false;
    }
    auto conn = std::make_shared<Conn>(loop_, RemoteOf(*con));
    using Decision = std::variant<std::shared_ptr<ConnectionHandler>, HttpResponse>;
    Decision decision = PlainResponse(404, "not found\n");
    if (callbacks_.on_upgrade) {
      HttpRequest request = ToHttpRequest(con->get_request());
      decision = CallOr500<Decision>("upgrade", [&] { return callbacks_.on_upgrade(request, conn); });
    }
    std::shared_ptr<ConnectionHandler>* handler = std::get_if<0>(&decision);
    if (handler == nullptr || *handler == nullptr) {
      conn->Abandon();  // the application may hold it; make it inert
      ApplyResponse(*con, handler ? PlainResponse(500, "no handler\n")
                                  : std::get<HttpResponse>(decision));
      return false;
    }
    conn->SetHandler(std::move(*handler));
    conn->Attach(con, [](typename Conn::Con& c) {
      return absl::StrCat("websocket handshake failed: ", c.get_ec().message());
    });
    ConnectionImpl* key = conn.get();
    conn->SetOnFinished([this, key] { live_.erase(key); });
    live_.emplace(key, std::move(conn));
    return true;
  }

  // websocketpp's http handler: a request that is not an upgrade.
  void OnHttp(websocketpp::connection_hdl hdl) {
    typename Endpoint::connection_ptr con = endpoint_.get_con_from_hdl(hdl);
    if (callbacks_.on_http_deferred) {
      // The answer comes later, from any thread: hop back to the io thread
      // to send it. A loop that has stopped drops it (the socket is gone).
      con->defer_http_response();
      HttpRequest request = ToHttpRequest(con->get_request());
      std::weak_ptr<IoLoop> loop = loop_;
      callbacks_.on_http_deferred(request, [loop, con](HttpResponse response) {
        if (auto l = loop.lock()) {
          l->Post([con, response = std::move(response)] {
            ApplyResponse(*con, response);
            con->send_http_response();
          });
        }
      });
      return;
    }
    HttpResponse response = PlainResponse(404, "not found\n");
    if (callbacks_.on_http) {
      HttpRequest request = ToHttpRequest(con->get_request());
      response = CallOr500<HttpResponse>("http", [&] { return callbacks_.on_http(request); });
    }
    ApplyResponse(*con, response);
  }

  // Declared first so it is destroyed last: the endpoint's acceptor and the
  // connections' sockets belong to its io_context.
  const std::shared_ptr<IoLoop> loop_ = std::make_shared<IoLoop>();
  Endpoint endpoint_;
  const ServerCallbacks callbacks_;
  std::string address_;  // set before the io thread starts, then constant

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;

  // io thread only (and Stop() after the join).
  bool stopping_ = false;
  std::map<ConnectionImpl*, std::shared_ptr<Conn>> live_;
};

template <typename Endpoint>
absl::StatusOr<std::unique_ptr<Server>> StartServer(const std::string& host, uint16_t port,
                                                    ServerCallbacks callbacks,
                                                    SslContextPtr tls) {
  auto server = std::make_unique<ServerImpl<Endpoint>>(std::move(callbacks), std::move(tls));
  absl::Status status = server->Listen(host, port);
  if (!status.ok()) return status;
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      ServerCallbacks callbacks) {
  absl::StatusOr<std::pair<std::string, uint16_t>> listen =
      internal::SplitHostPort(options.listen);
  if (!listen.ok()) return listen.status();
  if (!options.tls) {
    return StartServer<PlainServer>(listen->first, listen->second, std::move(callbacks), nullptr);
  }
  absl::StatusOr<SslContextPtr> tls = MakeServerTlsContext(*options.tls);
  if (!tls.ok()) return tls.status();
  return StartServer<TlsServer>(listen->first, listen->second, std::move(callbacks),
                                std::move(*tls));
}

}  // namespace bridge::ws
