#include "controller_link.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bridge/v1/worker_link.grpc.pb.h"
#include "common/log.h"
#include "grpcpp/grpcpp.h"

namespace bridge::media_worker {

// One Attach call (callback API). Writes are queued and issued one at a time.
class ControllerLink::Stream : public grpc::ClientBidiReactor<v1::WorkerMessage, v1::ControllerMessage> {
 public:
  explicit Stream(const Callbacks& cb) : cb_(cb) {}

  void Begin(v1::WorkerLink::Stub* stub) {
    stub->async()->Attach(&ctx_, this);
    StartRead(&in_);
    AddHold();  // keeps OnDone away until we stop writing
    StartCall();
  }
  void Write(v1::WorkerMessage m) {
    absl::MutexLock lock(&mu_);
    if (done_ || half_closed_) return;
    out_.push_back(std::move(m));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }
  void Cancel() { ctx_.TryCancel(); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      ReleaseHoldOnce();
      return;
    }
    if (in_.msg_case() != v1::ControllerMessage::MSG_NOT_SET) cb_.on_message(in_);
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    out_.pop_front();
    if (!ok || out_.empty()) {
      writing_ = false;
      return;
    }
    StartWrite(&out_.front());
  }
  void OnDone(const grpc::Status& s) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
    status_ = s;
  }
  // Waits until the call is over or `timeout` passes; true when over.
  bool WaitDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  }
  grpc::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  void ReleaseHoldOnce() {
    absl::MutexLock lock(&mu_);
    if (half_closed_) return;
    half_closed_ = true;
    RemoveHold();
  }

  const Callbacks& cb_;
  grpc::ClientContext ctx_;
  v1::ControllerMessage in_;
  absl::Mutex mu_;
  std::deque<v1::WorkerMessage> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

ControllerLink::ControllerLink(Options options, Callbacks callbacks)
    : options_(std::move(options)), callbacks_(std::move(callbacks)) {}

ControllerLink::~ControllerLink() { Stop(); }

void ControllerLink::Start() { thread_ = std::thread([this] { Run(); }); }

void ControllerLink::Stop() {
  if (!thread_.joinable()) return;
  stop_.Notify();
  {
    absl::MutexLock lock(&stream_mu_);
    if (stream_) stream_->Cancel();
  }
  thread_.join();
}

void ControllerLink::Send(v1::WorkerMessage message) {
  std::shared_ptr<Stream> s;
  {
    absl::MutexLock lock(&stream_mu_);
    s = stream_;
  }
  if (s) s->Write(std::move(message));
}

// Connect, hello, heartbeat until the stream ends, back off, repeat.
void ControllerLink::Run() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = grpc::CreateCustomChannel(options_.controller,
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = v1::WorkerLink::NewStub(channel);
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stop_.HasBeenNotified()) {
    auto stream = std::make_shared<Stream>(callbacks_);
    {
      absl::MutexLock lock(&stream_mu_);
      stream_ = stream;
    }
    stream->Begin(stub.get());
    v1::WorkerMessage hello;
    *hello.mutable_hello() = options_.hello;
    for (const auto& id : callbacks_.held_sessions()) hello.mutable_hello()->add_held_session_ids(id);
    stream->Write(hello);
    const absl::Time started = absl::Now();
    bool announced = false;
    while (!stream->WaitDone(options_.heartbeat_interval)) {
      if (!announced) {
        announced = true;
        callbacks_.on_connection(true);
        LogInfo("attached to controller", {{"controller", options_.controller}});
      }
      v1::WorkerMessage hb;
      *hb.mutable_heartbeat() = callbacks_.load();
      stream->Write(std::move(hb));
      if (stop_.HasBeenNotified()) stream->Cancel();
    }
    {
      absl::MutexLock lock(&stream_mu_);
      stream_.reset();
    }
    if (announced) callbacks_.on_connection(false);
    if (stop_.HasBeenNotified()) break;
    // A stream that lived a while was healthy: start the backoff afresh.
    if (absl::Now() - started > absl::Seconds(10)) backoff = absl::Milliseconds(200);
    LogWarn("controller link down; reconnecting",
            {{"error", stream->status().error_message()}, {"backoff_ms", absl::ToInt64Milliseconds(backoff)}});
    stop_.WaitForNotificationWithTimeout(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace bridge::media_worker
