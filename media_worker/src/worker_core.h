// What the worker does with the controller's orders: holds a SessionRunner
// per assigned session, runs each turn on the pool (one at a time per
// session, as the controller dispatches them), reports results, ends
// sessions, drains.
//
// Exactly once: every turn it ran is remembered by id with its result until
// the controller acknowledges it (and a while after). A turn dispatched again
// (the controller restarted, or never got the result) is not run again: its
// result is reported again. Results not yet acknowledged, and turns still
// running, are told in the next hello (FillHello), so a broken link or a
// controller restart neither loses an answer nor runs it twice.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
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
  // What a (re-)attaching hello says: held sessions, running turns, results
  // not acknowledged.
  void FillHello(v1::WorkerHello* hello);
  v1::WorkerHeartbeat Load();
  // SIGTERM: takes no more turns, stops the running ones (a turn that sent
  // nothing is reported HANDED_BACK, to run elsewhere at once) and waits up
  // to `timeout` for their results to be reported.
  void HandBack(absl::Duration timeout);

 private:
  struct Ran {
    v1::TurnRef turn;
    bool finished = false;
    bool acked = false;
    absl::Time finished_at;
    v1::TurnResult result;
  };
  static std::string Key(const std::string& session_id, const std::string& turn_id) {
    return session_id + "/" + turn_id;
  }
  void RunTurn(const v1::Turn& turn);
  void EndSession(const v1::SessionEnd& end);
  void Forget(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TurnSettings settings_;
  GraphApi* graph_;
  SpeechToText* stt_;
  ws::ClientPool* pool_;
  const Report report_;
  WorkerMetrics metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<SessionRunner>> sessions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::SessionAssignment> assignments_ ABSL_GUARDED_BY(mu_);
  // Turns run here, by Key(): running, or finished with their result.
  std::map<std::string, Ran> ran_ ABSL_GUARDED_BY(mu_);
  int active_turns_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool leaving_ ABSL_GUARDED_BY(mu_) = false;
  ThreadPool threads_;  // last: joined first on destruction
};

}  // namespace bridge::media_worker
