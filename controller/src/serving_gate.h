// Whether this controller serves the cluster APIs (Ingest, WorkerLink,
// Sessions) now: always on the embedded store; in cluster mode only while it
// leads and has loaded its state. Otherwise a caller is told where the leader
// is (common/controller_targets.h) and moves there by itself.
#pragma once

#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/call_auth.h"
#include "common/controller_targets.h"

namespace bridge::controller {

class ServingGate {
 public:
  // Serving from Open() on, while `may_serve()` holds (in cluster mode false
  // as soon as the lease may have lapsed, e.g. after a long pause).
  void Open(std::function<bool()> may_serve) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    may_serve_ = std::move(may_serve);
    open_ = true;
  }
  void SetLeader(std::string leader) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    leader_ = std::move(leader);
  }
  // OK to serve; else UNAVAILABLE naming the leader.
  grpc::Status Check() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (open_ && may_serve_()) return grpc::Status::OK;
    return NotLeaderStatus(open_ ? "" : leader_);
  }

 private:
  mutable absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  std::function<bool()> may_serve_ ABSL_GUARDED_BY(mu_);
  std::string leader_ ABSL_GUARDED_BY(mu_);
};

// A service's admission: its caller's token first, then leadership.
class Admission {
 public:
  Admission(CallAuth auth, const ServingGate* gate) : auth_(std::move(auth)), gate_(gate) {}
  grpc::Status Check(const grpc::CallbackServerContext* ctx) const {
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return refused;
    return gate_->Check();
  }

 private:
  const CallAuth auth_;
  const ServingGate* gate_;
};

}  // namespace bridge::controller
