#include <deque>

#include "absl/synchronization/mutex.h"
#include "services.h"

namespace bridge::controller {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(absl::IsNotFound(s) ? grpc::StatusCode::NOT_FOUND
                                          : grpc::StatusCode::FAILED_PRECONDITION,
                      std::string(s.message()));
}

// WatchSessions: the Coordinator's change notifications, queued and written
// one at a time; a slow watcher is cut off rather than growing memory.
class WatchReactor final : public grpc::ServerWriteReactor<v1::SessionEvent> {
 public:
  static constexpr size_t kMaxQueued = 10000;

  WatchReactor(Coordinator* c, const v1::WatchSessionsRequest& req) : coordinator_(c) {
    if (req.initial_snapshot()) {
      v1::ListSessionsRequest list;
      list.set_reveal_ids(req.reveal_ids());
      for (auto& s : coordinator_->ListSessions(list)) {
        v1::SessionEvent ev;
        ev.set_type(v1::SESSION_EVENT_TYPE_SNAPSHOT);
        *ev.mutable_session() = std::move(s);
        Push(std::move(ev));
      }
    }
    watch_id_ = coordinator_->Watch([this](const v1::SessionEvent& ev) { Push(ev); },
                                    req.reveal_ids());
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) return;
    WriteNextLocked();
  }
  void OnCancel() override { Stop(grpc::Status::CANCELLED); }
  void OnDone() override {
    coordinator_->Unwatch(watch_id_);
    delete this;
  }

 private:
  void Push(v1::SessionEvent ev) {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    if (queue_.size() >= kMaxQueued) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "watcher too slow"));
      return;
    }
    queue_.push_back(std::move(ev));
    WriteNextLocked();
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_ || queue_.empty()) return;
    writing_ = true;
    StartWrite(&queue_.front());
  }
  void Stop(grpc::Status s) {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    Finish(std::move(s));
  }

  Coordinator* coordinator_;
  int watch_id_ = 0;
  absl::Mutex mu_;
  std::deque<v1::SessionEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class SessionsService final : public v1::Sessions::CallbackService {
 public:
  SessionsService(Coordinator* c, Admission auth) : c_(c), auth_(std::move(auth)) {}

  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    for (auto& s : c_->ListSessions(*req)) *resp->add_sessions() = std::move(s);
    return Done(ctx, absl::OkStatus());
  }
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* req,
                                       v1::GetSessionResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto s = c_->GetSession(req->session_id(), req->reveal_ids());
    if (s.ok()) *resp->mutable_session() = *std::move(s);
    return Done(ctx, s.status());
  }
  grpc::ServerUnaryReactor* EndSession(grpc::CallbackServerContext* ctx,
                                       const v1::EndSessionRequest* req,
                                       v1::EndSessionResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto s = c_->EndSession(req->session_id(), req->reason());
    if (s.ok()) *resp->mutable_session() = *std::move(s);
    return Done(ctx, s.status());
  }
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    for (auto& w : c_->ListWorkers(req->include_dead())) *resp->add_workers() = std::move(w);
    return Done(ctx, absl::OkStatus());
  }
  grpc::ServerUnaryReactor* DrainWorker(grpc::CallbackServerContext* ctx,
                                        const v1::DrainWorkerRequest* req,
                                        v1::DrainWorkerResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto w = c_->DrainWorker(req->worker_id());
    if (w.ok()) *resp->mutable_worker() = *std::move(w);
    return Done(ctx, w.status());
  }
  grpc::ServerWriteReactor<v1::SessionEvent>* WatchSessions(
      grpc::CallbackServerContext* ctx, const v1::WatchSessionsRequest* req) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) {
      return new RefusedReactor<grpc::ServerWriteReactor<v1::SessionEvent>>(refused);
    }
    return new WatchReactor(c_, *req);
  }

 private:
  static grpc::ServerUnaryReactor* Refused(grpc::CallbackServerContext* ctx,
                                           const grpc::Status& s) {
    auto* r = ctx->DefaultReactor();
    r->Finish(s);
    return r;
  }
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& s) {
    auto* r = ctx->DefaultReactor();
    r->Finish(ToGrpc(s));
    return r;
  }
  Coordinator* c_;
  const Admission auth_;
};

}  // namespace

std::unique_ptr<v1::Sessions::CallbackService> NewSessionsService(Coordinator* coordinator,
                                                                  Admission auth) {
  return std::make_unique<SessionsService>(coordinator, std::move(auth));
}

}  // namespace bridge::controller
