#include "controller_link.h"

#include "common/controller_targets.h"
#include "common/grpc_client.h"

#include <deque>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bridge/v1/worker_link.grpc.pb.h"
#include "common/call_auth.h"
#include "common/log.h"
#include "grpcpp/grpcpp.h"

namespace bridge::media_worker {

// One Attach call (callback API). Writes are queued and issued one at a time.
class ControllerLink::Stream : public grpc::ClientBidiReactor<v1::WorkerMessage, v1::ControllerMessage> {
 public:
  explicit Stream(const Callbacks& cb) : cb_(cb) {}

  void Begin(v1::WorkerLink::Stub* stub, const std::string& token) {
    AttachToken(&ctx_, token);
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
  // Waits until everything queued was written (or the call is over).
  bool WaitWritten(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(
        absl::Condition(+[](Stream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
          return s->out_.empty() || s->done_;
        }, this),
        timeout);
  }
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

void ControllerLink::AnnounceLeaving(const std::string& reason) {
  v1::WorkerMessage bye;
  bye.mutable_leaving()->set_reason(reason);
  Send(std::move(bye));
}

void ControllerLink::Leave(absl::Duration timeout) {
  std::shared_ptr<Stream> s;
  {
    absl::MutexLock lock(&stream_mu_);
    s = stream_;
  }
  if (s) s->WaitWritten(timeout);
  Stop();
}

void ControllerLink::Send(v1::WorkerMessage message) {
  std::shared_ptr<Stream> s;
  {
    absl::MutexLock lock(&stream_mu_);
    s = stream_;
  }
  if (s) s->Write(std::move(message));
}

// Connect, hello, heartbeat until the stream ends, back off, repeat. With
// several controllers (--controller a,b,c) a standby's refusal names the
// leader, which is tried at once; an unreachable one is left for the next.
void ControllerLink::Run() {
  // A frozen controller (paused, partitioned: no FIN) is noticed within
  // ~3 s, so that the worker moves to the new leader while its turns are
  // still in the controller's --reattach_grace.
  grpc::ChannelArguments args = KeepaliveChannelArgs(absl::Seconds(2), absl::Seconds(1));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto targets = ControllerTargets::Create(options_.controller, args);
  if (!targets.ok()) {
    LogError("cannot reach any controller", {{"error", targets.status()}});
    return;
  }
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stop_.HasBeenNotified()) {
    ControllerTargets::Pick pick = (*targets)->Current();
    auto stub = v1::WorkerLink::NewStub(pick.channel);
    auto stream = std::make_shared<Stream>(callbacks_);
    stream->Begin(stub.get(), options_.cluster_token);
    {
      // The hello is the stream's first message, and what it says (results,
      // running turns) and what Send() writes after it must not miss each
      // other: both happen under stream_mu_. A result finished meanwhile
      // may be said twice; the controller takes the second as stale.
      absl::MutexLock lock(&stream_mu_);
      v1::WorkerMessage hello;
      *hello.mutable_hello() = options_.hello;
      callbacks_.fill_hello(hello.mutable_hello());
      stream->Write(std::move(hello));
      stream_ = stream;
    }
    const absl::Time started = absl::Now();
    bool announced = false;
    while (!stream->WaitDone(options_.heartbeat_interval)) {
      if (!announced) {
        announced = true;
        callbacks_.on_connection(true);
        LogInfo("attached to controller", {{"controller", pick.target}});
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
    (*targets)->Failed(pick, stream->status());
    if (auto leader = LeaderNamedIn(stream->status());
        leader && !leader->empty() && *leader != pick.target) {
      LogInfo("controller is a standby; going to the leader", {{"standby", pick.target}, {"leader", *leader}});
      continue;
    }
    // A stream that lived a while was healthy: start the backoff afresh.
    if (absl::Now() - started > absl::Seconds(10)) backoff = absl::Milliseconds(200);
    LogWarn("controller link down; reconnecting",
            {{"controller", pick.target}, {"error", stream->status().error_message()}, {"backoff_ms", absl::ToInt64Milliseconds(backoff)}});
    stop_.WaitForNotificationWithTimeout(backoff);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

}  // namespace bridge::media_worker
