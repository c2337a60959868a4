// Helpers for the ws tests: event recorders that tests await (never sleep),
// an echo service, raw-socket peers that misbehave on purpose, and a
// throwaway PKI for TLS.
#pragma once

#include "test_pki.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ws/websocket.h"

namespace bridge::ws::test_util {

// Only a guard against hangs: every wait normally ends far sooner.
inline constexpr absl::Duration kHangGuard = absl::Seconds(20);

struct CloseEvent {
  int code = 0;
  std::string reason;
  bool remote = false;
};

// Records every callback; Wait* block until it happened (false on timeout).
class Recorder : public ConnectionHandler {
 public:
  void OnOpen() override;
  void OnText(const std::string& text) override;
  void OnBinary(const std::string& data) override;
  void OnClose(int code, const std::string& reason, bool remote) override;
  void OnFail(const std::string& error, int http_status) override;

  bool WaitOpen();
  bool WaitTexts(size_t count);
  bool WaitClose();
  bool WaitFail();
  bool WaitFinished();  // closed or failed

  bool opened() const;
  std::vector<std::string> texts() const;
  std::optional<CloseEvent> close() const;
  std::optional<std::string> fail() const;
  int fail_http_status() const;
  int finish_count() const;  // OnClose + OnFail calls: must never exceed 1

 private:
  bool Await(const std::function<bool()>& done) const;

  mutable absl::Mutex mu_;
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> texts_ ABSL_GUARDED_BY(mu_);
  std::optional<CloseEvent> close_ ABSL_GUARDED_BY(mu_);
  std::optional<std::string> fail_ ABSL_GUARDED_BY(mu_);
  int fail_http_status_ ABSL_GUARDED_BY(mu_) = 0;
  int finish_count_ ABSL_GUARDED_BY(mu_) = 0;
};

// Server side: records like Recorder and echoes every text back.
class EchoHandler : public Recorder {
 public:
  explicit EchoHandler(std::shared_ptr<Connection> conn) : conn_(std::move(conn)) {}
  void OnText(const std::string& text) override;
  // The library drops its handler when the connection finishes, which
  // releases this reference too.
  std::shared_ptr<Connection> connection() const { return conn_; }

 private:
  const std::shared_ptr<Connection> conn_;
};

// Accepts every upgrade with an EchoHandler; remembers requests and handlers.
class EchoService {
 public:
  ServerCallbacks Callbacks();
  // Waits for the index-th accepted upgrade; null on timeout.
  std::shared_ptr<EchoHandler> WaitHandler(size_t index = 0);
  HttpRequest request(size_t index = 0) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<EchoHandler>> handlers_ ABSL_GUARDED_BY(mu_);
  std::vector<HttpRequest> requests_ ABSL_GUARDED_BY(mu_);
};

std::string WsUrlFor(const Server& server, const std::string& resource = "/");
uint16_t PortOf(const Server& server);

// ---- raw POSIX sockets on 127.0.0.1 ----

// A socket that stays bound to a loopback port without listening, so
// connecting to it is refused and no other process can take the port.
class ClosedPort {
 public:
  ClosedPort();
  ~ClosedPort();
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// A listening socket that never accepts: the kernel completes TCP
// handshakes, nothing ever answers.
class SilentListener {
 public:
  SilentListener();
  ~SilentListener();
  uint16_t port() const { return port_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Accepts one connection on `listener`, answers the WebSocket handshake with
// 101, then waits for `drop` and closes the socket without a close frame.
// Returns an error text, or "" on success.
std::string ServeHandshakeThenDrop(int listener_fd, const std::function<void()>& drop_when);

// Connects to 127.0.0.1:port, sends an upgrade request, reads the 101
// response, then closes without a close frame. Returns "" on success.
std::string UpgradeThenDrop(uint16_t port);

// ---- TLS ----

using ::bridge::testing::MakeTestPki;
using ::bridge::testing::TestPki;

}  // namespace bridge::ws::test_util
