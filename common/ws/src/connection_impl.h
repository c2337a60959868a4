// Private: the Connection that server and client share. It owns the state
// machine (queue before open, close, timers, handler callbacks); the wire (a
// websocketpp connection) is reached only through the virtual Wire* hooks, so
// this file needs Asio for timers but not websocketpp.
//
// Threading: public Connection methods may run on any thread and only post
// to the io thread or read atomics. Everything else runs on the io thread,
// which is why the io-thread state below carries no mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio/steady_timer.hpp>

#include "io_loop.h"
#include "ws/websocket.h"

namespace bridge::ws::internal {

// True for codes a close frame may carry (RFC 6455 §7.4, IANA registry).
bool IsSendableCloseCode(int code);

class ConnectionImpl : public Connection,
                       public std::enable_shared_from_this<ConnectionImpl> {
 public:
  ConnectionImpl(std::weak_ptr<IoLoop> loop, std::string remote);
  ~ConnectionImpl() override;

  // Connection: any thread.
  void SendText(std::string text) override;
  void Close(int code, const std::string& reason) override;
  uint64_t Schedule(absl::Duration delay, std::function<void()> fn) override;
  void Cancel(uint64_t timer_id) override;
  bool open() const override { return open_.load(std::memory_order_acquire); }
  size_t buffered_bytes() const override;
  std::string remote() const override { return remote_; }

  // The rest: io thread only (or, for Abandon, after it has been joined).
  void SetHandler(std::shared_ptr<ConnectionHandler> handler);
  // Called once when the connection finishes (OnClose/OnFail), before the
  // handler hears of it; owners use it to drop the connection from registries.
  void SetOnFinished(std::function<void()> fn);
  // Fails the attempt with `error` unless it has opened within `timeout`.
  void StartOpenTimer(absl::Duration timeout, std::string error);
  bool connecting() const { return state_ == State::kConnecting; }
  bool finished() const { return state_ == State::kClosed; }
  void CloseNow(int code, const std::string& reason);
  // Reports OnFail(error) now and drops the socket; later wire events are ignored.
  void FailNow(const std::string& error);
  // After the io thread is joined: releases handler, timers and queue without
  // callbacks (timers must die while their io_context still exists).
  void Abandon();

 protected:
  // Wire events, forwarded by the subclass from websocketpp handlers.
  void HandleOpen();
  void HandleMessage(bool binary, const std::string& payload);
  // `code`/`reason` from the peer's close frame; kCloseAbnormal if none came.
  // For a close we started that the peer never echoed, OnClose reports what
  // we sent: websocketpp drops the socket right after sending 1002, 1007,
  // 1008, 1009 or 1011 without waiting for the echo.
  void HandleClose(int code, const std::string& reason);
  void HandleFail(const std::string& error, int http_status);

  // The wire (io thread only). WireClose gets only sendable codes.
  virtual void WireSend(const std::string& text) = 0;
  virtual void WireClose(int code, const std::string& reason) = 0;
  virtual size_t WireBuffered() const = 0;
  // Closes the socket under websocketpp: pending operations end with errors.
  virtual void WireAbort() = 0;

 private:
  enum class State { kConnecting, kOpen, kClosing, kClosed };

  void Post(std::function<void()> fn) const;
  void DoSend(std::string text);
  void StartClose(int code, const std::string& reason);
  void DoSchedule(uint64_t id, absl::Duration delay, std::function<void()> fn);
  void OnTimer(uint64_t id, const std::function<void()>& fn, bool aborted);
  void RefreshBuffered() const;
  void CancelTimers();
  void Finish(const std::function<void(ConnectionHandler&)>& notify);

  const std::weak_ptr<IoLoop> loop_;
  const std::string remote_;
  std::atomic<bool> open_{false};
  std::atomic<uint64_t> next_timer_id_{1};
  // buffered_bytes() off the io thread: the io thread's last reading.
  mutable std::atomic<size_t> buffered_snapshot_{0};
  mutable std::atomic<bool> refresh_posted_{false};

  // io thread only.
  State state_ = State::kConnecting;
  std::shared_ptr<ConnectionHandler> handler_;
  std::function<void()> on_finished_;
  bool closing_locally_ = false;
  std::pair<int, std::string> sent_close_;  // valid when closing_locally_
  std::optional<std::pair<int, std::string>> close_on_open_;
  std::vector<std::string> pending_;
  std::map<uint64_t, std::unique_ptr<asio::steady_timer>> timers_;
  std::unique_ptr<asio::steady_timer> open_timer_;
};

}  // namespace bridge::ws::internal
