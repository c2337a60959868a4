#include <deque>

#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "services.h"

namespace bridge::controller {
namespace {

// One worker's stream. Reads drive the Coordinator; the Coordinator's
// messages queue here and are written one at a time, as gRPC requires.
class AttachReactor final : public grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControllerMessage>,
                            public WorkerChannel {
 public:
  explicit AttachReactor(Coordinator* c) : coordinator_(c) { StartRead(&in_); }

  void Send(v1::ControllerMessage message) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    out_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void Close(const std::string& why) override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, why));
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the worker closed its side or the stream broke
      coordinator_->Detach(this, "stream closed");
      absl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (absl::Status s = Handle(in_); !s.ok()) {
      coordinator_->Detach(this, std::string(s.message()));
      absl::MutexLock lock(&mu_);
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    out_.pop_front();
    if (!ok || finished_ || out_.empty()) {
      writing_ = false;
      return;
    }
    StartWrite(&out_.front());
  }

  void OnDone() override {
    coordinator_->Detach(this, "stream done");
    delete this;
  }

 private:
  absl::Status Handle(const v1::WorkerMessage& m) {
    if (m.has_hello()) {
      hello_seen_ = true;
      return coordinator_->Attach(this, m.hello());
    }
    if (!hello_seen_) return absl::InvalidArgumentError("the first message must be a hello");
    if (m.has_heartbeat()) coordinator_->Heartbeat(this, m.heartbeat());
    else if (m.has_turn_result()) coordinator_->OnTurnResult(this, m.turn_result());
    else if (m.has_session_report()) coordinator_->OnSessionReport(this, m.session_report());
    else if (m.has_leaving()) coordinator_->OnLeaving(this, m.leaving());
    else if (m.has_call_report()) coordinator_->OnCallReport(this, m.call_report());
    return absl::OkStatus();
  }

  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(std::move(status));
  }

  Coordinator* coordinator_;
  v1::WorkerMessage in_;
  bool hello_seen_ = false;
  absl::Mutex mu_;
  std::deque<v1::ControllerMessage> out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class WorkerLinkService final : public v1::WorkerLink::CallbackService {
 public:
  WorkerLinkService(Coordinator* c, Admission auth) : coordinator_(c), auth_(std::move(auth)) {}
  grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControllerMessage>* Attach(
      grpc::CallbackServerContext* ctx) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) {
      return new RefusedReactor<grpc::ServerBidiReactor<v1::WorkerMessage, v1::ControllerMessage>>(
          refused);
    }
    return new AttachReactor(coordinator_);
  }

 private:
  Coordinator* coordinator_;
  const Admission auth_;
};

}  // namespace

std::unique_ptr<v1::WorkerLink::CallbackService> NewWorkerLinkService(Coordinator* coordinator,
                                                                      Admission auth) {
  return std::make_unique<WorkerLinkService>(coordinator, std::move(auth));
}

}  // namespace bridge::controller
