#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "ws_test_util.h"

namespace bridge::ws::test_util {

// ---- Recorder ----

void Recorder::OnOpen() {
  absl::MutexLock lock(&mu_);
  opened_ = true;
}

void Recorder::OnText(const std::string& text) {
  absl::MutexLock lock(&mu_);
  texts_.push_back(text);
}

void Recorder::OnBinary(const std::string& data) {
  absl::MutexLock lock(&mu_);
  texts_.push_back("binary:" + data);
}

void Recorder::OnClose(int code, const std::string& reason, bool remote) {
  absl::MutexLock lock(&mu_);
  close_ = CloseEvent{code, reason, remote};
  ++finish_count_;
}

void Recorder::OnFail(const std::string& error, int http_status) {
  absl::MutexLock lock(&mu_);
  fail_ = error;
  fail_http_status_ = http_status;
  ++finish_count_;
}

// `done` runs under mu_ (absl::Condition evaluates it with the lock held): the
// lambdas below say so, and the analysis checks their bodies against it.
bool Recorder::Await(const std::function<bool()>& done) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&done), kHangGuard);
}

bool Recorder::WaitOpen() {
  return Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return opened_; });
}
bool Recorder::WaitTexts(size_t count) {
  return Await(
      [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return texts_.size() >= count; });
}
bool Recorder::WaitClose() {
  return Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return close_.has_value(); });
}
bool Recorder::WaitFail() {
  return Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return fail_.has_value(); });
}
bool Recorder::WaitFinished() {
  return Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finish_count_ > 0; });
}

bool Recorder::opened() const {
  absl::MutexLock lock(&mu_);
  return opened_;
}
std::vector<std::string> Recorder::texts() const {
  absl::MutexLock lock(&mu_);
  return texts_;
}
std::optional<CloseEvent> Recorder::close() const {
  absl::MutexLock lock(&mu_);
  return close_;
}
std::optional<std::string> Recorder::fail() const {
  absl::MutexLock lock(&mu_);
  return fail_;
}
int Recorder::fail_http_status() const {
  absl::MutexLock lock(&mu_);
  return fail_http_status_;
}
int Recorder::finish_count() const {
  absl::MutexLock lock(&mu_);
  return finish_count_;
}

void EchoHandler::OnText(const std::string& text) {
  Recorder::OnText(text);
  conn_->SendText(text);
}

// ---- EchoService ----

ServerCallbacks EchoService::Callbacks() {
  ServerCallbacks callbacks;
  callbacks.on_upgrade = [this](const HttpRequest& request, std::shared_ptr<Connection> conn)
      -> std::variant<std::shared_ptr<ConnectionHandler>, HttpResponse> {
    auto handler = std::make_shared<EchoHandler>(std::move(conn));
    absl::MutexLock lock(&mu_);
    handlers_.push_back(handler);
    requests_.push_back(request);
    return handler;
  };
  return callbacks;
}

std::shared_ptr<EchoHandler> EchoService::WaitHandler(size_t index) {
  absl::MutexLock lock(&mu_);
  auto ready = [this, index]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return handlers_.size() > index;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), kHangGuard)) return nullptr;
  return handlers_[index];
}

HttpRequest EchoService::request(size_t index) const {
  absl::MutexLock lock(&mu_);
  return index < requests_.size() ? requests_[index] : HttpRequest{};
}

uint16_t PortOf(const Server& server) {
  std::string address = server.address();
  return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

std::string WsUrlFor(const Server& server, const std::string& resource) {
  return absl::StrCat("ws://", server.address(), resource);
}

// ---- raw sockets ----
namespace {

int BoundLoopbackSocket(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(kHangGuard))) == 1;
}

// Reads until the end of an HTTP head; "" on timeout or EOF.
std::string ReadHead(int fd) {
  std::string head;
  char buf[1024];
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (!WaitReadable(fd)) return "";
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) return "";
    head.append(buf, static_cast<size_t>(n));
  }
  return head;
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string HeaderValue(const std::string& head, const std::string& lower_name) {
  std::string lower = head;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t at = lower.find("\r\n" + lower_name + ":");
  if (at == std::string::npos) return "";
  size_t start = at + 3 + lower_name.size();
  size_t end = head.find("\r\n", start);
  std::string value = head.substr(start, end - start);
  value.erase(0, value.find_first_not_of(' '));
  return value;
}

std::string AcceptKey(const std::string& key) {
  std::string input = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr);
  unsigned char encoded[64];
  int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_len));
  return std::string(reinterpret_cast<char*>(encoded), static_cast<size_t>(n));
}

}  // namespace

ClosedPort::ClosedPort() { fd_ = BoundLoopbackSocket(&port_); }
ClosedPort::~ClosedPort() {
  if (fd_ >= 0) ::close(fd_);
}

SilentListener::SilentListener() {
  fd_ = BoundLoopbackSocket(&port_);
  if (fd_ >= 0) ::listen(fd_, 16);
}
SilentListener::~SilentListener() {
  if (fd_ >= 0) ::close(fd_);
}

std::string ServeHandshakeThenDrop(int listener_fd, const std::function<void()>& drop_when) {
  if (!WaitReadable(listener_fd)) return "no connection arrived";
  int fd = ::accept4(listener_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return "accept failed";
  std::string head = ReadHead(fd);
  std::string key = HeaderValue(head, "sec-websocket-key");
  std::string error;
  if (key.empty()) {
    error = "no Sec-WebSocket-Key in request";
  } else if (!WriteAll(fd, absl::StrCat("HTTP/1.1 101 Switching Protocols\r\n"
                                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                        "Sec-WebSocket-Accept: ", AcceptKey(key), "\r\n\r\n"))) {
    error = "write failed";
  } else {
    drop_when();
  }
  ::close(fd);
  return error;
}

std::string UpgradeThenDrop(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (fd >= 0) ::close(fd);
    return "connect failed";
  }
  std::string error;
  if (!WriteAll(fd, absl::StrCat("GET /raw HTTP/1.1\r\nHost: 127.0.0.1:", port,
                                 "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n"))) {
    error = "write failed";
  } else if (ReadHead(fd).rfind("HTTP/1.1 101", 0) != 0) {
    error = "no 101 response";
  }
  ::close(fd);
  return error;
}

}  // namespace bridge::ws::test_util
