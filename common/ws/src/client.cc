// ClientPool: websocketpp's client role (plain and TLS endpoints) over one
// io_context and one thread. With server.cc, the only translation units that
// include websocketpp.
#include <websocketpp/client.hpp>
#include <websocketpp/config/asio_client.hpp>

#include <asio/ssl/host_name_verification.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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
using internal::WsUrl;

using PlainClient = websocketpp::client<websocketpp::config::asio_client>;
using TlsClient =
    websocketpp::client<internal::FixedTlsConfig<websocketpp::config::asio_tls_client>>;
using SslContextPtr = std::shared_ptr<asio::ssl::context>;

constexpr absl::Duration kStopGrace = absl::Seconds(2);
constexpr size_t kMaxBodyInError = 200;

struct TlsSetup {
  SslContextPtr context;
  // Why verification failed, filled on the io thread during the handshake:
  // websocketpp itself only reports "TLS handshake failed".
  std::shared_ptr<std::string> verify_error = std::make_shared<std::string>();
};

// Built on the caller's thread so a bad CA file is a Connect() error.
absl::StatusOr<TlsSetup> MakeTlsSetup(const ClientOptions& options, const std::string& host) {
  TlsSetup setup;
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds);
  setup.context = ctx;
  if (!options.verify_peer) {
    ctx->set_verify_mode(asio::ssl::verify_none);
    return setup;
  }
  std::error_code ec;
  if (options.ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(options.ca_file, ec);
  }
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load CA certificates from ",
        options.ca_file.empty() ? std::string("the system store") : options.ca_file, ": ",
        ec.message()));
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  ctx->set_verify_callback([host, sink = setup.verify_error](bool preverified,
                                                             asio::ssl::verify_context& vc) {
    if (!preverified) {
      int err = X509_STORE_CTX_get_error(vc.native_handle());
      if (sink->empty()) {
        *sink = absl::StrCat("certificate verify failed: ", X509_verify_cert_error_string(err));
      }
      return false;
    }
    if (!asio::ssl::host_name_verification(host)(preverified, vc)) {
      if (sink->empty()) *sink = absl::StrCat("certificate does not match host ", host);
      return false;
    }
    return true;
  });
  return setup;
}

// OnFail text for a connection websocketpp gave up on. Names host:port, never
// the URL: its query can carry secrets.
template <typename Con>
std::string DescribeFailure(Con& con, const std::string& where, const std::string& tls_error) {
  const std::string prefix = absl::StrCat("connect to ", where, " failed: ");
  int status = con.get_response_code();
  if (status != 0 && status != 101) {
    std::string body = con.get_response().get_body();
    if (body.size() > kMaxBodyInError) body.resize(kMaxBodyInError);
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    return absl::StrCat(prefix, "handshake refused with HTTP ", status, body.empty() ? "" : ": ",
                        body);
  }
  if (!tls_error.empty()) return absl::StrCat(prefix, "TLS: ", tls_error);
  std::error_code ec = con.get_ec();
  std::string detail = ec ? ec.message() : std::string("unknown error");
  std::error_code transport = con.get_transport_ec();
  if (transport && transport.message() != detail) {
    absl::StrAppend(&detail, " (", transport.message(), ")");
  }
  return prefix + detail;
}


class ClientPoolImpl final : public ClientPool {
 public:
  ClientPoolImpl() {
    internal::ConfigureEndpoint(plain_);
    internal::ConfigureEndpoint(tls_);
    // Called synchronously inside get_connection() on the io thread, which
    // sets next_tls_context_ around that call: the handler's only argument is
    // a handle that does not yet know its URL or options.
    tls_.set_tls_init_handler([this](websocketpp::connection_hdl) { return next_tls_context_; });
    std::error_code ec;  // init_asio fails only when called twice
    plain_.init_asio(&loop_->io(), ec);
    tls_.init_asio(&loop_->io(), ec);
    loop_->Start();
  }

  ~ClientPoolImpl() override { Stop(); }

  absl::StatusOr<std::shared_ptr<Connection>> Connect(
      const ClientOptions& options, std::shared_ptr<ConnectionHandler> handler) override {
    if (!handler) return absl::InvalidArgumentError("Connect needs a handler");
    absl::StatusOr<WsUrl> url = internal::ParseWsUrl(options.url);
    if (!url.ok()) return url.status();
    TlsSetup tls;
    if (url->secure) {
      absl::StatusOr<TlsSetup> setup = MakeTlsSetup(options, url->host);
      if (!setup.ok()) return setup.status();
      tls = std::move(*setup);
    }
    // Held across the post so Stop() cannot slip in between the check and it.
    absl::MutexLock lock(&mu_);
    if (stopped_) return absl::FailedPreconditionError("client pool is stopped");
    if (url->secure) return Launch(tls_, *url, options, std::move(handler), std::move(tls));
    return Launch(plain_, *url, options, std::move(handler), std::move(tls));
  }

  void Stop() override {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    loop_->Post([this] {
      stopping_ = true;
      std::vector<std::shared_ptr<ConnectionImpl>> live;
      for (const auto& [key, conn] : live_) live.push_back(conn);
      for (const std::shared_ptr<ConnectionImpl>& conn : live) {
        if (conn->connecting()) {
          conn->FailNow(absl::StrCat("connect to ", conn->remote(), " abandoned: pool stopped"));
        } else {
          conn->CloseNow(kCloseGoingAway, "client shutting down");
        }
      }
    });
    loop_->StopAndJoin(kStopGrace);
    // The io thread is gone: what did not finish in time is dropped quietly.
    for (auto& [key, conn] : live_) conn->Abandon();
    live_.clear();
  }

 private:
  template <typename Endpoint>
  std::shared_ptr<Connection> Launch(Endpoint& endpoint, const WsUrl& url,
                                     const ClientOptions& options,
                                     std::shared_ptr<ConnectionHandler> handler, TlsSetup tls)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto conn = std::make_shared<internal::WireConnection<Endpoint>>(loop_, url.HostPort());
    // Nobody else sees `conn` before the post, which orders this for the io thread.
    conn->SetHandler(std::move(handler));
    loop_->Post([this, &endpoint, conn, where = url.HostPort(), options, tls] {
      StartConnect(endpoint, conn, where, options, tls);
    });
    return conn;
  }

  template <typename Endpoint>
  void StartConnect(Endpoint& endpoint,
                    const std::shared_ptr<internal::WireConnection<Endpoint>>& conn,
                    const std::string& where, const ClientOptions& options, const TlsSetup& tls) {
    if (stopping_) {
      conn->FailNow(absl::StrCat("connect to ", where, " abandoned: pool stopped"));
      return;
    }
    std::error_code ec;
    next_tls_context_ = tls.context;
    typename Endpoint::connection_ptr con = endpoint.get_connection(options.url, ec);
    next_tls_context_.reset();
    if (ec) {
      conn->FailNow(absl::StrCat("connect to ", where, " failed: ", ec.message()));
      return;
    }
    for (const auto& [name, value] : options.headers) con->append_header(name, value);
    const bool timed = options.open_timeout > absl::ZeroDuration() &&
                       options.open_timeout < absl::InfiniteDuration();
    if (timed) {
      // websocketpp's own HTTP-handshake timer (5 s by default) would cut in
      // before a longer open_timeout; leave ours, which names the host, first.
      con->set_open_handshake_timeout(
          static_cast<long>(absl::ToInt64Milliseconds(options.open_timeout + absl::Seconds(1))));
    }
    conn->Attach(con, [where, verify_error = tls.verify_error](typename Endpoint::connection_type& c) {
      return DescribeFailure(c, where, *verify_error);
    });
    ConnectionImpl* key = conn.get();
    conn->SetOnFinished([this, key] { live_.erase(key); });
    live_.emplace(key, conn);
    if (timed) {
      conn->StartOpenTimer(options.open_timeout,
                           absl::StrCat("connect to ", where, " timed out after ",
                                        absl::FormatDuration(options.open_timeout)));
    }
    endpoint.connect(con);
  }

  // Declared first so it is destroyed last: the endpoints' resolvers and the
  // connections' sockets belong to its io_context.
  const std::shared_ptr<IoLoop> loop_ = std::make_shared<IoLoop>();
  PlainClient plain_;
  TlsClient tls_;

  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;

  // io thread only (and Stop() after the join).
  bool stopping_ = false;
  SslContextPtr next_tls_context_;
  std::map<ConnectionImpl*, std::shared_ptr<ConnectionImpl>> live_;
};

}  // namespace

std::unique_ptr<ClientPool> ClientPool::Create() { return std::make_unique<ClientPoolImpl>(); }

}  // namespace bridge::ws
