// bridge.v1.Media on the worker: Converse streams (one ConverseReactor each,
// on shared pools), their registry for the controller's EndSession, and an
// orderly stop. Stream sessions have ids "cv-…" and are reported to the
// controller with converse=true, which lists them while they are open.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bridge/v1/media.grpc.pb.h"
#include "bridge/v1/worker_link.pb.h"
#include "common/call_auth.h"
#include "common/thread_pool.h"
#include "converse_metrics.h"
#include "converse_reactor.h"

namespace bridge::media_worker {

class ConverseService final : public v1::Media::CallbackService {
 public:
  using Report = std::function<void(v1::WorkerMessage)>;

  // `auth` checks each Converse caller (the cluster token, common/call_auth.h).
  ConverseService(ConverseSettings settings, ws::ClientPool* ws_pool, CallAuth auth);
  ~ConverseService() override;  // Shutdown(), then waits for every stream

  // Where session reports go (the controller link); dropped until set.
  void SetReporter(Report report);
  // Streams count against the worker's capacity with the WhatsApp sessions
  // it holds (`held`), and are refused (RESOURCE_EXHAUSTED) past
  // `max_streams`, so that streams never take the last slots WhatsApp
  // users need.
  void SetCapacity(int capacity, int max_streams, std::function<int()> held);
  // The controller drained this worker: new streams are refused (UNAVAILABLE).
  void Drain();

  grpc::ServerBidiReactor<v1::ConverseRequest, v1::ConverseResponse>* Converse(
      grpc::CallbackServerContext* ctx) override;

  static bool IsConverseSession(const std::string& session_id);
  // The controller ended the session (EndSession): its stream ends ABORTED.
  void EndSession(const std::string& session_id, const std::string& reason);
  // Re-reports every live stream (the controller link is back up).
  void Reannounce();
  // Refuses new streams and ends the open ones (UNAVAILABLE). Non-blocking.
  void Shutdown();
  // Blocks until every stream is done. Needs the gRPC server to be stopping
  // (it cancels calls whose client stopped reading) or the streams to end.
  void WaitForStreams();

 private:
  void SendReport(v1::WorkerMessage m);
  // Why a new stream is refused now, or OK.
  grpc::Status Admit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<std::shared_ptr<ConverseReactor>> Open();  // the streams still open
  void Done(const std::string& session_id);

  const CallAuth auth_;
  ConverseMetrics metrics_;
  ConverseEnv env_;
  absl::Mutex mu_;
  Report report_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  int capacity_ ABSL_GUARDED_BY(mu_) = 0;  // 0: unlimited (tests)
  int max_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<int()> held_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::weak_ptr<ConverseReactor>> streams_ ABSL_GUARDED_BY(mu_);
  // Last: joined first, while everything their tasks use still exists.
  ThreadPool codec_;
  ThreadPool blocking_;
};

}  // namespace bridge::media_worker
