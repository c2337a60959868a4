// One bridge.v1.Media/Converse stream: a gRPC callback reactor (no thread of
// its own) around one AgentSession.
//
// Threads: gRPC reactions (reads, writes, cancel, done), the ws io thread
// (agent events, which only post work), a shared codec pool (the stream's two
// strands: input transcoding + sends to the agent, output transcoding into
// the outbox) and a pool for blocking calls (AgentSession::Start, Close).
// Codec work is tiny per chunk (tens of microseconds for 250 ms of PCM,
// about a millisecond for 250 ms of Opus), but the io thread serves every
// agent socket and gRPC threads serve every stream, so neither runs it.
//
// Lifetime: the reactor owns itself (self_) until OnDone; queued tasks and
// agent callbacks hold it too, so nothing touches freed memory, and every
// task checks `ending_` first, so nothing acts on a finished call. The agent
// is closed before Finish, and AgentSession::Close() means no callback runs
// afterwards. Finish runs exactly once, when the stream is ending, the
// agent is closed, no read or write is being started and (unless the call
// is cancelled) every queued message has been written.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bridge/v1/media.grpc.pb.h"
#include "bridge/v1/worker_link.pb.h"
#include "common/thread_pool.h"
#include "converse_input_budget.h"
#include "converse_metrics.h"
#include "converse_outbox.h"
#include "converse_strand.h"
#include "converse_transcode.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "media_worker/agent_session.h"
#include "session_runner.h"

namespace bridge::media_worker {

struct ConverseSettings {
  TurnSettings turn;  // agent options, user id salt, trailing silence, timeouts, bitrate
  absl::Duration max_out_lag = absl::Seconds(2);     // see converse_outbox.h
  absl::Duration max_out_audio = absl::Seconds(30);
  absl::Duration max_input_lead = absl::Seconds(60);  // see converse_input_budget.h
  // A stream that has not sent `start` by then ends DEADLINE_EXCEEDED: an
  // open stream holds a capacity slot.
  absl::Duration start_timeout = absl::Seconds(10);
};

// What every stream shares; owned by the ConverseService.
struct ConverseEnv {
  ConverseSettings settings;
  ws::ClientPool* ws_pool = nullptr;
  std::function<void(v1::WorkerMessage)> report;  // to the controller
  ConverseMetrics* metrics = nullptr;
  ThreadPool* codec = nullptr;
  ThreadPool* blocking = nullptr;
  std::function<void(const std::string& session_id)> on_done;
};

class ConverseReactor final
    : public grpc::ServerBidiReactor<v1::ConverseRequest, v1::ConverseResponse>,
      public std::enable_shared_from_this<ConverseReactor> {
 public:
  // A stream that owns itself until OnDone; gRPC gets the raw pointer.
  static std::shared_ptr<ConverseReactor> Open(const ConverseEnv* env,
                                               grpc::CallbackServerContext* ctx,
                                               std::string session_id);
  ConverseReactor(const ConverseEnv* env, grpc::CallbackServerContext* ctx,
                  std::string session_id);  // via Open

  // Ends the stream now with `status` (controller EndSession, worker
  // stopping): queued audio is dropped. Any thread.
  void Abort(const grpc::Status& status, const std::string& reason);
  // Tells the controller again about a live session (after the controller
  // link reconnects: reports sent while it was down are lost).
  void Reannounce() { Report(/*ended=*/false); }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Phase { kAwaitStart, kConnecting, kLive };

  // Input (gRPC reactions, then the input strand).
  void OnStart(const v1::ConverseRequest& req);
  void Connect();
  AgentEvents Events();
  void ReadNext();
  void HandleInput(const v1::ConverseRequest& req);
  void SendToAgent(const std::vector<int16_t>& pcm);
  void EndOfInput();
  std::shared_ptr<AgentSession> agent();

  // Agent events (the output strand).
  void OnStarted(const std::string& conversation_id, int input_rate, int output_rate);
  void MaybeGoLive();
  void StartInput(v1::AudioFormat format, int rate);
  void OnAgentAudio(const std::vector<int16_t>& pcm, absl::Time arrived, uint64_t generation);
  void OnInterrupted(int64_t event_id);
  void OnReplyEnd();
  void EnqueueAudio(std::vector<AudioChunk> chunks, absl::Time arrived, uint64_t generation);
  void Enqueue(v1::ConverseResponse msg);

  // Writing and ending.
  void MaybeWrite();
  void EndStream(const grpc::Status& status, const std::string& reason, bool drop_audio = false);
  void Teardown(std::shared_ptr<AgentSession> agent);
  void Report(bool ended);
  void OpStarted();
  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Arm(grpc::Alarm* alarm, absl::Duration after, void (ConverseReactor::*fn)())
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnStartTimeout();
  void OnConnectTimeout();
  void OnReplyTimeout();

  const ConverseEnv* const env_;
  grpc::CallbackServerContext* const ctx_;
  const std::string session_id_;
  const std::shared_ptr<Strand> in_;   // input transcoding, sends to the agent
  const std::shared_ptr<Strand> out_;  // output transcoding into the outbox
  // gRPC's buffers: one read and one write at a time.
  v1::ConverseRequest request_;
  v1::ConverseResponse writing_;
  // Bumped (before anything else) on an interruption: output work queued
  // for an older generation is stale and skipped.
  std::atomic<uint64_t> generation_{0};

  // Input strand only (set before the first read that feeds it).
  std::unique_ptr<InputTranscoder> input_;
  InputBudget budget_;
  int in_rate_ = 0;
  bool sent_input_ = false;
  bool input_ended_ = false;
  bool logged_input_drop_ = false;
  // Output strand only.
  std::unique_ptr<OutputTranscoder> output_;
  int64_t turns_ = 0;

  // Held while reporting to the controller; taken before mu_, never after.
  absl::Mutex report_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  bool ended_reported_ ABSL_GUARDED_BY(report_mu_) = false;

  absl::Mutex mu_;
  std::shared_ptr<ConverseReactor> self_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kAwaitStart;
  v1::ConverseStart start_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<AgentSession> agent_ ABSL_GUARDED_BY(mu_);
  std::string conversation_id_ ABSL_GUARDED_BY(mu_);
  int input_rate_ ABSL_GUARDED_BY(mu_) = 0;
  int output_rate_ ABSL_GUARDED_BY(mu_) = 0;
  bool agent_started_ ABSL_GUARDED_BY(mu_) = false;  // its metadata arrived
  bool reported_ ABSL_GUARDED_BY(mu_) = false;  // the controller lists the session
  bool awaiting_turn_end_ ABSL_GUARDED_BY(mu_) = false;  // input over: next turn_end ends it
  bool input_closed_ ABSL_GUARDED_BY(mu_) = false;       // the client half-closed
  Outbox outbox_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  int ops_starting_ ABSL_GUARDED_BY(mu_) = 0;  // StartRead/StartWrite calls in progress
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;  // nothing more can be written
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::string end_reason_ ABSL_GUARDED_BY(mu_);
  bool torn_down_ ABSL_GUARDED_BY(mu_) = false;  // agent closed, end reported
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Alarm start_alarm_ ABSL_GUARDED_BY(mu_);
  grpc::Alarm connect_alarm_ ABSL_GUARDED_BY(mu_);
  grpc::Alarm reply_alarm_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bridge::media_worker
