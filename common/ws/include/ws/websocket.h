// WebSocket server and client with a plain interface (websocketpp over
// standalone Asio, plain and TLS). websocketpp 0.8.2 compiles only as C++17,
// so it stays inside this target's sources; nothing here includes it.
//
// Threading: each Server and each ClientPool runs one Asio io_context on its
// own thread. Every handler callback of a connection runs on that thread, one
// at a time, so per-connection state needs no locks. Connection methods may be
// called from any thread (they post to the io thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bridge::ws {

// Close codes we use (RFC 6455 §7.4.1).
inline constexpr int kCloseNormal = 1000;
inline constexpr int kCloseGoingAway = 1001;
inline constexpr int kCloseProtocolError = 1002;
inline constexpr int kClosePolicyViolation = 1008;
inline constexpr int kCloseInternalError = 1011;
inline constexpr int kCloseTryAgainLater = 1013;
inline constexpr int kCloseAbnormal = 1006;  // never sent: no close frame was seen

struct HttpRequest {
  std::string method;
  std::string resource;  // path and query, as sent ("/v1/x?agent_id=a")
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  std::string Path() const;                       // resource without the query
  std::optional<std::string> Query(const std::string& key) const;  // URL-decoded
  std::optional<std::string> Header(const std::string& lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// One open WebSocket, either side.
class Connection {
 public:
  virtual ~Connection() = default;
  // Queues a text frame. Ignored once the connection is closing or closed.
  virtual void SendText(std::string text) = 0;
  // Starts the closing handshake with this code and reason. Before open: the
  // connection closes as soon as it opens (no OnOpen; OnClose or OnFail
  // follows). Codes a close frame cannot carry (1005, 1006...) become 1011.
  virtual void Close(int code, const std::string& reason) = 0;
  // Runs `fn` on the io thread after `delay` if the connection is still open
  // then. Returns an id for Cancel().
  virtual uint64_t Schedule(absl::Duration delay, std::function<void()> fn) = 0;
  virtual void Cancel(uint64_t timer_id) = 0;
  virtual bool open() const = 0;
  // Frames queued but not yet written to the socket (backpressure signal).
  // Exact on the io thread; elsewhere the io thread's last reading (each call
  // asks for a fresh one, so a poller is at most one call behind).
  virtual size_t buffered_bytes() const = 0;
  virtual std::string remote() const = 0;  // "ip:port" (client: URL's host:port)
};

// What an application does with one connection. Callbacks run on the io thread.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  virtual void OnOpen() {}
  virtual void OnText(const std::string& text) = 0;
  // A binary frame: protocols that only speak JSON treat it as an error.
  virtual void OnBinary(const std::string& data) {}
  // After the closing handshake, or when the socket died (code kCloseAbnormal).
  // `remote` is true when the peer started the close. For a close we started,
  // code/reason are the peer's echo, or what we sent if no echo came.
  virtual void OnClose(int code, const std::string& reason, bool remote) = 0;
  // The client could not connect or the handshake failed (no OnOpen/OnClose).
  // Client errors name host:port, never the URL (its query may hold secrets).
  // `http_status` is the status of a refused handshake (401, 429, ...), 0
  // when no HTTP answer came (network, TLS, timeout): callers decide on it,
  // never on the text.
  virtual void OnFail(const std::string& error, int http_status) {}
};

struct TlsFiles {
  std::string cert_chain_path;  // PEM
  std::string private_key_path; // PEM
};

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // port 0 picks one
  std::optional<TlsFiles> tls;         // wss:// and https:// when set
};

struct ServerCallbacks {
  // Plain HTTP requests on the same port (not upgrades). Default: 404.
  std::function<HttpResponse(const HttpRequest&)> on_http;
  // Instead of on_http when set: answer later (long polls) by calling
  // `respond` exactly once, from any thread.
  std::function<void(const HttpRequest&, std::function<void(HttpResponse)> respond)>
      on_http_deferred;
  // An upgrade request: return a handler to accept, or an HttpResponse to
  // refuse the handshake with (e.g. 403, 429).
  std::function<std::variant<std::shared_ptr<ConnectionHandler>, HttpResponse>(
      const HttpRequest&, std::shared_ptr<Connection>)>
      on_upgrade;
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       ServerCallbacks callbacks);
  virtual ~Server() = default;
  virtual std::string address() const = 0;  // host:port bound
  // Closes every connection (1001), stops listening, joins the io thread
  // (waiting at most ~2 s for peers). Idempotent; never from a callback.
  virtual void Stop() = 0;
};

struct ClientOptions {
  std::string url;  // ws:// or wss://
  std::vector<std::pair<std::string, std::string>> headers;
  std::string ca_file;             // PEM bundle; empty: the system store
  bool verify_peer = true;         // wss: certificate and host name
  absl::Duration open_timeout = absl::Seconds(10);
};

// Client connections sharing one io thread.
class ClientPool {
 public:
  static std::unique_ptr<ClientPool> Create();
  virtual ~ClientPool() = default;
  // Starts connecting; the handler sees OnOpen then OnText.../OnClose, or
  // OnFail. The returned Connection is usable at once (sends queue until open).
  virtual absl::StatusOr<std::shared_ptr<Connection>> Connect(
      const ClientOptions& options, std::shared_ptr<ConnectionHandler> handler) = 0;
  // Closes every connection (1001), fails pending ones, and joins the io
  // thread (waiting at most ~2 s). Idempotent; never from a callback.
  virtual void Stop() = 0;
};

}  // namespace bridge::ws
