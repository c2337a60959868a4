// A phone calling the business through whatsapp-sim, on the product's own
// media library (call_media.h) playing the other side: its offer is Meta's
// shape (ICE-lite, actpass) or a browser's (full ICE), posted as the user's
// call; the business's pre_accept/accept answer is read from /sim/calls and
// connected to. Used by the calls e2e tests and the calls benchmark (one
// media loop carries many callers).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "call_media.h"

namespace bridge::testing {

struct SimCallerOptions {
  std::string whatsapp_sim;  // host:port
  std::string user;          // the caller's wa_id
  bool ice_lite = true;      // Meta's side is; a browser's is not
  std::vector<std::string> local_ips = {"127.0.0.1"};
};

class SimCaller {
 public:
  SimCaller(media_worker::MediaLoop* loop, SimCallerOptions options);
  ~SimCaller();  // closes the media (not a hang-up: call Hangup for that)

  // Gathers, posts the offer; returns the call id.
  absl::StatusOr<std::string> Call();
  // Waits for the business's answer (pre_accept or accept) and connects.
  absl::Status AwaitAnswer(absl::Duration timeout);
  // Waits until DTLS-SRTP is up, or the media failed.
  absl::Status AwaitConnected(absl::Duration timeout);
  // 16 kHz PCM to say (queued, sent in real time).
  void Say(std::vector<int16_t> pcm);
  // Until `samples` loud samples (|x| >= 1000) were heard from the business.
  bool AwaitHeard(size_t loud_samples, absl::Duration timeout);
  std::vector<std::string> actions();  // what the business did with this call
  absl::Status Hangup();               // the caller hangs up (terminate webhook)
  media_worker::CallMediaStats Stats();
  const std::string& call_id() const { return call_id_; }

 private:
  media_worker::MediaLoop* const loop_;
  const SimCallerOptions options_;
  std::shared_ptr<const media_worker::DtlsIdentity> identity_;
  std::string call_id_;
  absl::Mutex mu_;
  std::shared_ptr<media_worker::CallMedia> media_ ABSL_GUARDED_BY(media_worker::media_thread);
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  size_t loud_ ABSL_GUARDED_BY(mu_) = 0;
  int actions_seen_ = 0;
};

}  // namespace bridge::testing
