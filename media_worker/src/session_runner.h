// One WhatsApp session on this worker: its agent conversation and the turns
// the controller sends it, one at a time. A turn runs on a pool thread from
// start to end: read receipt + typing, then a voice note (downloaded while it
// is decoded and streamed to the agent, the reply encoded as it arrives,
// uploaded and sent as a voice note in reply), a text (sent as user_message,
// answered as text split at 4096 characters), or a polite note about what is
// supported. Agent events arrive on the ws io thread and are handed over
// through a small mailbox so codec work never runs there.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bridge/v1/worker_link.pb.h"
#include "media_worker/agent_session.h"
#include "media_worker/graph_api.h"
#include "worker_metrics.h"

namespace bridge::media_worker {

namespace v1 = ::bridge::v1;

struct TurnSettings {
  AgentOptions agent;                 // base options; user id and variables filled per session
  double input_pace = 0;              // 1 = real time, 0 = as fast as possible
  absl::Duration max_pause = absl::Milliseconds(500);         // longer pauses shortened
  absl::Duration trailing_silence = absl::Milliseconds(1500);  // ends the agent's VAD turn
  absl::Duration reply_timeout = absl::Seconds(60);
  absl::Duration connect_timeout = absl::Seconds(15);
  int connect_attempts = 5;           // the seed's reconnect budget
  bool read_receipts = true;
  // The agent's first_message: "skip" drops it (the user's note interrupts
  // it), "deliver" waits up to greeting_wait for it on a new conversation and
  // sends it before answering the user's message.
  bool deliver_greeting = false;
  absl::Duration greeting_wait = absl::Seconds(2);
  std::string user_id_salt;           // SESSION_SECRET: user ids are derived, not copied
  int reply_bitrate_bps = 24000;
};

class SessionRunner {
 public:
  SessionRunner(const v1::SessionAssignment& assignment, const TurnSettings& settings,
                GraphApi* graph, ws::ClientPool* pool, WorkerMetrics* metrics);
  ~SessionRunner();

  // Blocking; on a pool thread. Never throws away a turn silently: the result
  // says done, failed (with a reason) or handed back.
  v1::TurnResult RunTurn(const v1::Turn& turn);
  // Closes the agent socket (session ended, drained or worker stopping).
  void Close();
  std::string conversation_id();
  const std::string& session_id() const { return assignment_.session_id(); }

 private:
  struct Reply {
    std::vector<std::vector<int16_t>> audio;  // chunks not yet encoded
    std::string text;
    bool heard = false;  // any audio or text since BeginReply (the mailbox drains)
    bool ended = false;
  };

  // Connects if needed; *fresh is true for a new conversation.
  absl::Status EnsureAgent(bool* fresh);
  absl::Status MaybeDeliverGreeting(const v1::InboundMessage& m, bool voice,
                                    std::vector<std::string>* sent);
  absl::Status ConnectOnce();
  AgentEvents Events();
  void BeginReply();
  // Waits for the end of the agent's reply, encoding audio as it arrives.
  absl::StatusOr<std::string> CollectReply(bool want_audio, std::string* text,
                                           absl::Duration timeout);
  absl::Status StreamVoiceNote(const v1::InboundMessage& m, bool* unplayable);
  absl::Status SendPcm(const std::vector<int16_t>& pcm);
  absl::Status DeliverVoice(const v1::InboundMessage& m, const std::string& ogg,
                            std::vector<std::string>* sent);
  absl::Status DeliverText(const v1::InboundMessage& m, const std::string& text,
                           std::vector<std::string>* sent);
  absl::Status RunVoice(const v1::InboundMessage& m, std::vector<std::string>* sent);
  absl::Status RunText(const v1::InboundMessage& m, std::vector<std::string>* sent);
  void Remember(const std::string& who, const std::string& text);

  const v1::SessionAssignment assignment_;
  const TurnSettings settings_;
  GraphApi* graph_;
  ws::ClientPool* pool_;
  WorkerMetrics* metrics_;
  std::unique_ptr<AgentSession> agent_;  // touched on the turn's thread only

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool retryable_ ABSL_GUARDED_BY(mu_) = true;
  std::string close_reason_ ABSL_GUARDED_BY(mu_);
  std::string conversation_id_ ABSL_GUARDED_BY(mu_);
  int input_rate_ ABSL_GUARDED_BY(mu_) = 16000;
  int output_rate_ ABSL_GUARDED_BY(mu_) = 16000;
  bool collecting_ ABSL_GUARDED_BY(mu_) = false;  // false: greeting or stray audio, skipped
  Reply reply_ ABSL_GUARDED_BY(mu_);
  absl::Time last_agent_event_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> recent_ ABSL_GUARDED_BY(mu_);  // context for a new conversation
};

// Splits text into WhatsApp-sized messages (≤ limit characters, UTF-8 safe,
// preferring to cut at a paragraph, sentence or word boundary).
std::vector<std::string> SplitForWhatsApp(const std::string& text, size_t limit = 4096);

// A stable id for the agent derived from the WhatsApp user, never equal to it.
std::string DeriveUserId(const std::string& salt, const std::string& phone_number_id,
                         const std::string& user);

}  // namespace bridge::media_worker
