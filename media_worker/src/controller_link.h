// The worker's end of WorkerLink: one bidi stream to the controller, kept up
// with reconnects and backoff (mediasoup-style: the controller drives the
// media plane over this one channel). Says hello with what it holds, sends
// heartbeats, hands controller messages to the handler, sends results.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bridge/v1/worker_link.pb.h"

namespace bridge::media_worker {

namespace v1 = ::bridge::v1;

class ControllerLink {
 public:
  struct Options {
    std::string controller;  // gRPC target
    std::string cluster_token;  // presented on every Attach
    v1::WorkerHello hello;   // held_session_ids is filled per connection
    absl::Duration heartbeat_interval = absl::Seconds(3);
    // Below the controller's --reattach_grace (5 s), so that a live worker
    // is back before its turns would move elsewhere.
    absl::Duration max_backoff = absl::Seconds(2);
  };
  struct Callbacks {
    // Runs on a gRPC thread: must not block.
    std::function<void(const v1::ControllerMessage&)> on_message;
    // Completes each connection's hello: what it holds, runs and finished.
    std::function<void(v1::WorkerHello*)> fill_hello;
    // Current load for heartbeats.
    std::function<v1::WorkerHeartbeat()> load;
    std::function<void(bool connected)> on_connection;
  };

  ControllerLink(Options options, Callbacks callbacks);
  ~ControllerLink();  // Stop()

  void Start();
  // Ends the stream (the controller re-runs anything not reported) and joins.
  void Stop();
  // Says WorkerLeaving: the controller dispatches nothing more here and
  // will not wait for this worker to come back.
  void AnnounceLeaving(const std::string& reason);
  // Waits up to `timeout` for everything sent to be written, then Stop().
  void Leave(absl::Duration timeout);
  // Written on the current stream, in order. Lost if that stream breaks:
  // callers keep what matters and say it again in the next hello.
  void Send(v1::WorkerMessage message);

 private:
  class Stream;
  void Run();

  const Options options_;
  const Callbacks callbacks_;
  absl::Notification stop_;
  std::thread thread_;
  absl::Mutex stream_mu_;
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(stream_mu_);
};

}  // namespace bridge::media_worker
