// Private: one io_context and the thread that runs it. Server and ClientPool
// own one each; connections hold only a weak_ptr, so a Connection that an
// application keeps past its Server's lifetime degrades to no-ops.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <utility>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace bridge::ws::internal {

class IoLoop {
 public:
  IoLoop() : work_(asio::make_work_guard(io_)) {}
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;
  ~IoLoop() {
    if (thread_.joinable()) StopAndJoin(absl::ZeroDuration());
  }

  asio::io_context& io() { return io_; }

  void Start() {
    thread_ = std::thread([this] {
      io_.run();
      drained_.Notify();
    });
  }

  // Runs `fn` on the io thread later. Dropped once the loop has stopped, so
  // late calls from application threads cost nothing and touch nothing.
  void Post(std::function<void()> fn) {
    if (stopped_.load(std::memory_order_acquire)) return;
    asio::post(io_, std::move(fn));
  }

  bool OnIoThread() { return io_.get_executor().running_in_this_thread(); }

  // Lets run() return once queued work has drained (the caller has already
  // posted whatever closes connections), forcing it after `grace` so a peer
  // that never answers a close cannot hold shutdown hostage. Then joins.
  void StopAndJoin(absl::Duration grace) {
    if (OnIoThread()) {
      // Joining ourselves would deadlock; this is a caller bug, not a runtime
      // condition, so fail loudly rather than hang.
      std::fprintf(stderr, "ws: Stop() called from an io-thread callback\n");
      std::abort();
    }
    work_.reset();
    if (!thread_.joinable()) {  // never started (Start() failed before it)
      stopped_.store(true, std::memory_order_release);
      return;
    }
    if (!drained_.WaitForNotificationWithTimeout(grace)) io_.stop();
    stopped_.store(true, std::memory_order_release);
    thread_.join();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::atomic<bool> stopped_{false};
  absl::Notification drained_;
  std::thread thread_;
};

}  // namespace bridge::ws::internal
