// One WhatsApp call answered by the agent (docs/calls.md): the caller's SDP
// offer answered through the Graph API (`pre_accept`, then `accept` once
// media is up), the media (call_media.h) bridged to an AgentSession both
// ways in real time, barge-in, and the end of the call whoever ends it:
// the agent (`end_call`, its socket closing: `terminate` after what it said
// has played), the caller (Meta's terminate webhook, via the controller),
// a failure, or the call's time limit.
//
// Threads: media and call state on the media loop; agent events hop there;
// Graph calls and the agent's start and close (both block) run on the
// blocking pool. Owns itself (queued work holds it) until finished.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "bridge/v1/worker_link.pb.h"
#include "call_media.h"
#include "call_metrics.h"
#include "common/thread_pool.h"
#include "media_worker/agent_session.h"
#include "media_worker/graph_api.h"

namespace bridge::ws {
class ClientPool;
}

namespace bridge::media_worker {

namespace v1 = ::bridge::v1;

struct CallSettings {
  bool enabled = true;  // --calls
  MediaNetwork network;
  int max_calls = 50;   // --max_calls
  absl::Duration max_duration = absl::Hours(1);      // --call_max_duration
  absl::Duration connect_timeout = absl::Seconds(20);  // offer to DTLS up
  AgentOptions agent;
  std::string user_id_salt;
  // Caller speech that starts while agent audio is queued cuts that audio
  // (barge-in): a frame peaking above this level, for this long.
  int barge_in_level = 1000;  // about -30 dBFS
  absl::Duration barge_in_after = absl::Milliseconds(100);
  // The agent's last words play before `terminate`, for at most this long.
  absl::Duration goodbye_max = absl::Seconds(30);
};

// What every call on a worker shares (CallDesk owns it).
struct CallEnv {
  CallSettings settings;
  std::shared_ptr<const DtlsIdentity> identity;
  GraphApi* graph = nullptr;
  ws::ClientPool* ws_pool = nullptr;
  ThreadPool* blocking = nullptr;
  CallMetrics* metrics = nullptr;
  std::function<void(v1::WorkerMessage)> report;
  std::function<void(const std::string& call_id)> on_done;
};

class CallSession : public std::enable_shared_from_this<CallSession> {
 public:
  // Starts answering a checked offer on `loop` (one of the worker's media
  // threads). Any thread.
  static std::shared_ptr<CallSession> Answer(const CallEnv* env, MediaLoop* loop,
                                             v1::CallOffer offer, SdpOffer sdp);
  // Ends the call now; `terminate`: tell Meta (not when it told us). Any thread.
  void End(std::string reason, bool terminate);

  CallSession(const CallEnv* env, MediaLoop* loop, v1::CallOffer offer, SdpOffer sdp);  // via Answer
  ~CallSession();

 private:
  enum class Phase { kAnswering, kLive, kEnding, kDone };
  // These run on the call's loop (media_loop.h). AgentCallbacks runs on a
  // blocking thread: it only hops to the loop.
  void Begin() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Gathered(absl::StatusOr<LocalDescription> local)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void PreAccepted(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void MediaUp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Accepted(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void StartAgent() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  AgentEvents AgentCallbacks();
  void AgentStarted(int input_rate, int output_rate) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void CallerAudio(absl::Span<const int16_t> pcm, absl::Duration waited)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void BargeIn(absl::Span<const int16_t> pcm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void CutAgentAudio() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void AgentAudio(const std::vector<int16_t>& pcm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // Keeps a line of what was said, for the call's transcript.
  void Said(v1::Speaker who, const std::string& text) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void EndAfterPlayout(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void GoodbyePoll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Finish(v1::CallOutcome outcome, std::string reason, bool tell_meta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Graph(CallAction action, std::function<void(absl::Status)> then)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);

  const CallEnv* const env_;
  MediaLoop* const loop_;
  const v1::CallOffer offer_;
  const SdpOffer sdp_;
  const absl::Time offered_at_;
  // Media-loop state (media_loop.h).
  Phase phase_ ABSL_GUARDED_BY(media_thread) = Phase::kAnswering;
  std::string answer_sdp_ ABSL_GUARDED_BY(media_thread);
  bool pre_accepted_ ABSL_GUARDED_BY(media_thread) = false;
  std::shared_ptr<CallMedia> media_ ABSL_GUARDED_BY(media_thread);
  std::shared_ptr<AgentSession> agent_ ABSL_GUARDED_BY(media_thread);
  std::unique_ptr<class CallResampling> resampling_ ABSL_GUARDED_BY(media_thread);
  absl::Time live_at_ ABSL_GUARDED_BY(media_thread);
  absl::Duration speech_run_ ABSL_GUARDED_BY(media_thread);
  bool speaking_ ABSL_GUARDED_BY(media_thread) = false;
  // The agent transcribed the caller once.
  bool caller_had_turn_ ABSL_GUARDED_BY(media_thread) = false;
  unsigned limit_timer_ ABSL_GUARDED_BY(media_thread) = 0;
  unsigned goodbye_timer_ ABSL_GUARDED_BY(media_thread) = 0;
  absl::Time goodbye_since_ ABSL_GUARDED_BY(media_thread);
  std::string goodbye_reason_ ABSL_GUARDED_BY(media_thread);
  // What was said (CallReport.lines) and the agent's conversation.
  std::vector<v1::TranscriptLine> said_ ABSL_GUARDED_BY(media_thread);
  std::string conversation_id_ ABSL_GUARDED_BY(media_thread);
  std::shared_ptr<CallSession> self_ ABSL_GUARDED_BY(media_thread);  // until Finish
};

}  // namespace bridge::media_worker
