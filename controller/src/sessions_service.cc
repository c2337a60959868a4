#include <deque>

#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "conversation_eraser.h"
#include "services.h"

namespace bridge::controller {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::FAILED_PRECONDITION;
  if (absl::IsNotFound(s)) code = grpc::StatusCode::NOT_FOUND;
  if (absl::IsInvalidArgument(s)) code = grpc::StatusCode::INVALID_ARGUMENT;
  if (absl::IsUnavailable(s)) code = grpc::StatusCode::UNAVAILABLE;
  return grpc::Status(code, std::string(s.message()));
}


// WatchSessions: the Coordinator's change notifications, queued and written
// one at a time; a slow watcher is cut off rather than growing memory.
class WatchReactor final : public grpc::ServerWriteReactor<v1::SessionEvent> {
 public:
  static constexpr size_t kMaxQueued = 10000;

  WatchReactor(Coordinator* c, const v1::WatchSessionsRequest& req) : coordinator_(c) {
    // Headers now, not with the first event: a client learns that it is
    // watching (the console shows "live") before anything happens.
    StartSendInitialMetadata();
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
  SessionsService(Coordinator* c, Admission auth, ConversationEraser* eraser)
      : c_(c), auth_(std::move(auth)), eraser_(eraser) {}

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
  grpc::ServerUnaryReactor* GetTranscript(grpc::CallbackServerContext* ctx,
                                          const v1::GetTranscriptRequest* req,
                                          v1::GetTranscriptResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto* r = ctx->DefaultReactor();
    slow_.Submit([this, r, req, resp] {
      auto t = c_->GetTranscript(*req);
      if (t.ok()) *resp = *std::move(t);
      r->Finish(ToGrpc(t.status()));
    });
    return r;
  }
  grpc::ServerUnaryReactor* TakeOver(grpc::CallbackServerContext* ctx,
                                     const v1::TakeOverRequest* req,
                                     v1::TakeOverResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto s = c_->TakeOver(req->session_id(), req->operator_());
    if (s.ok()) *resp->mutable_session() = *std::move(s);
    return Done(ctx, s.status());
  }
  grpc::ServerUnaryReactor* Say(grpc::CallbackServerContext* ctx, const v1::SayRequest* req,
                                v1::SayResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto* r = ctx->DefaultReactor();
    slow_.Submit([this, r, req, resp] {  // a synchronous commit
      auto s = c_->Say(req->session_id(), req->text());
      if (s.ok()) *resp = *std::move(s);
      r->Finish(ToGrpc(s.status()));
    });
    return r;
  }
  grpc::ServerUnaryReactor* HandBack(grpc::CallbackServerContext* ctx,
                                     const v1::HandBackRequest* req,
                                     v1::HandBackResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto s = c_->HandBack(req->session_id());
    if (s.ok()) *resp->mutable_session() = *std::move(s);
    return Done(ctx, s.status());
  }
  grpc::ServerUnaryReactor* ForgetUser(grpc::CallbackServerContext* ctx,
                                       const v1::ForgetUserRequest* req,
                                       v1::ForgetUserResponse* resp) override {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return Refused(ctx, refused);
    auto* r = ctx->DefaultReactor();
    slow_.Submit([this, r, req, resp] {
      std::vector<std::string> conversations;
      auto f = c_->ForgetUser(req->phone_number_id(), req->user(), &conversations);
      absl::Status s = f.status();
      if (f.ok()) {
        *resp = *std::move(f);
        DeleteConversations(conversations, resp);
        s = c_->RecordErasure(req->phone_number_id(), *resp);
      }
      r->Finish(ToGrpc(s));
    });
    return r;
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
  // At ElevenLabs; what cannot be deleted now is reported (and kept in the
  // erasure record) for the operator to follow up.
  void DeleteConversations(const std::vector<std::string>& ids, v1::ForgetUserResponse* resp) {
    for (const std::string& id : ids) {
      absl::Status s = eraser_ == nullptr
                           ? absl::FailedPreconditionError("no ELEVENLABS_API_KEY on the controller")
                           : eraser_->Delete(id);
      if (s.ok()) {
        resp->add_conversations_deleted(id);
      } else {
        resp->add_conversations_failed(absl::StrCat(id, ": ", s.message()));
        LogWarn("cannot delete a forgotten user's conversation at ElevenLabs",
                {{"conversation_id", id}, {"error", s}});
      }
    }
  }

  Coordinator* c_;
  const Admission auth_;
  ConversationEraser* eraser_;
  // Calls that read or write the store and the network while they run
  // (transcripts, operator texts, erasure) go to this one thread, never a
  // gRPC one. Last: it finishes its queue before what the calls use goes.
  ThreadPool slow_{1};
};

}  // namespace

std::unique_ptr<v1::Sessions::CallbackService> NewSessionsService(Coordinator* coordinator,
                                                                  Admission auth,
                                                                  ConversationEraser* eraser) {
  return std::make_unique<SessionsService>(coordinator, std::move(auth), eraser);
}

}  // namespace bridge::controller
