// What the worker does with the controller's orders: holds a SessionRunner
// per assigned session, runs each turn on the pool (one at a time per
// session, as the controller dispatches them), reports results, ends
// sessions, drains.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bridge/v1/worker_link.pb.h"
#include "common/thread_pool.h"
#include "session_runner.h"

namespace bridge::media_worker {

class WorkerCore {
 public:
  using Report = std::function<void(v1::WorkerMessage)>;
  // `stt` may be null (voice_input stream).
  WorkerCore(TurnSettings settings, GraphApi* graph, SpeechToText* stt, ws::ClientPool* pool,
             int threads, Report report);
  ~WorkerCore();  // finishes running turns, closes agent sockets

  // From the controller link (gRPC thread): never blocks.
  void OnMessage(const v1::ControllerMessage& message);
  std::vector<std::string> HeldSessions();
  v1::WorkerHeartbeat Load();

 private:
  void RunTurn(const v1::Turn& turn);

  const TurnSettings settings_;
  GraphApi* graph_;
  SpeechToText* stt_;
  ws::ClientPool* pool_;
  const Report report_;
  WorkerMetrics metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<SessionRunner>> sessions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::SessionAssignment> assignments_ ABSL_GUARDED_BY(mu_);
  int active_turns_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  ThreadPool threads_;  // last: joined first on destruction
};

}  // namespace bridge::media_worker
