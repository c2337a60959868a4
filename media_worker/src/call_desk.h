// The worker's calls (docs/calls.md): takes the controller's CallOffers and
// answers each with a CallSession, or refuses it at once with `reject` and a
// reason (calls off, an offer we cannot answer, no capacity, draining); ends
// calls on the controller's CallEnd; ends them all when the worker stops.
// Owns the media threads, the DTLS certificate and the call metrics.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "call_session.h"

namespace bridge::media_worker {

// STUN_SERVER ("stun:host:port", "host:port" or "host"; port 3478 when
// none) resolved once at start-up into `net`: libnice takes an IP address.
// Empty: none (Meta's side is ICE-lite on public addresses; a worker behind
// a 1:1 NAT says --media_public_ip instead). InvalidArgument names the
// setting when it does not resolve.
absl::Status ResolveStunServer(const std::string& spec, MediaNetwork* net);

class CallDesk {
 public:
  // Generates the worker's DTLS certificate and starts the media thread.
  static absl::StatusOr<std::unique_ptr<CallDesk>> Create(
      CallSettings settings, GraphApi* graph, ws::ClientPool* ws_pool,
      std::function<void(v1::WorkerMessage)> report);
  ~CallDesk();  // ends every call (Shutdown), stops the media thread

  // From the controller link (gRPC thread): never blocks.
  void Offer(const v1::CallOffer& offer);
  void End(const v1::CallEnd& end);
  void Drain();
  int active() const;
  // Ends every call with `terminate` and waits up to `timeout` for them.
  void Shutdown(absl::Duration timeout);

 private:
  CallDesk() = default;
  void Refuse(const v1::CallOffer& offer, std::string reason);
  void Done(const std::string& call_id);

  CallEnv env_;
  CallMetrics metrics_;
  // One media thread per core (at least one): calls are spread over them,
  // so both cores carry media and each GLib loop polls fewer sockets.
  std::vector<std::unique_ptr<MediaLoop>> loops_;
  size_t next_loop_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<CallSession>> calls_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Last: joined first on destruction, while what its tasks touch (the
  // loops, mu_, calls_) is still there.
  std::unique_ptr<ThreadPool> blocking_;
};

}  // namespace bridge::media_worker
