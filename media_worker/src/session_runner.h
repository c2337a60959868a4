// One WhatsApp session on this worker: its agent conversation and the turns
// the controller sends it, one at a time. A turn runs on a pool thread from
// start to end. What it does depends on the turn's action:
//  - REPLY: read receipt + typing, then a voice note (transcribed by
//    speech-to-text, or decoded and streamed to the agent; the reply encoded
//    as it arrives, uploaded and sent as a voice note, its text as a fallback),
//    a text (sent as user_message, answered as text split at 4096 characters),
//    other content described to the agent as text, the welcome (the agent's
//    greeting), or a polite note about what cannot be represented;
//  - INFORM: a reaction, edit or revoke told to the agent as context;
//  - RESEND_AS_TEXT: a voice reply WhatsApp failed to deliver, sent as text.
// The agent conversation is held only around turns: closed after
// --agent_linger, reopened on the next message with the recent exchange as
// context (docs/agent-protocol.md). Agent events arrive on the ws io thread
// and are handed over through a small mailbox so codec work never runs there;
// whatever the agent says outside a turn (re-engagement, fillers) is dropped.
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
#include "media_worker/speech_to_text.h"
#include "worker_metrics.h"

namespace bridge::media_worker {

namespace v1 = ::bridge::v1;

enum class VoiceInput {
  kTranscribe,  // speech-to-text, then user_message (default: see README)
  kStream,      // decoded PCM streamed to the agent, then real-time silence
};

struct TurnSettings {
  AgentOptions agent;                 // base options; user id and variables filled per session
  VoiceInput voice_input = VoiceInput::kTranscribe;
  double input_pace = 1;              // stream: 1 = real time, 0 = as fast as possible
  absl::Duration max_pause = absl::Milliseconds(500);         // longer pauses shortened
  // stream: real-time silence after the note until the agent answers, at most this long.
  absl::Duration silence_tail_max = absl::Seconds(5);
  absl::Duration trailing_silence = absl::Milliseconds(1500);  // Media.Converse's turn end
  absl::Duration reply_timeout = absl::Seconds(60);
  absl::Duration connect_timeout = absl::Seconds(15);
  int connect_attempts = 5;           // the seed's reconnect budget
  bool read_receipts = true;
  // The agent's first_message, heard out on every new conversation (never
  // talked over: an agent with disable_first_message_interruptions would not
  // hear the user). "deliver" sends it before the first answer of a session;
  // otherwise it is dropped. A welcome turn always sends it.
  bool deliver_greeting = false;
  absl::Duration greeting_wait = absl::Seconds(2);
  // How long a conversation stays open after a reply (0: closed at once).
  // Shorter than the agent's default turn timeout (7 s), so an idle agent is
  // closed before it re-engages (and bills for speech nobody hears).
  absl::Duration agent_linger = absl::Seconds(5);
  // A send the Graph API keeps refusing with a transient error (5xx, 429,
  // connection failures: each call already retried ~7.5 s) is tried again
  // until this much time has passed since the first try: a late reply is
  // still in the 24-hour window, and the user sees nothing while we retry.
  absl::Duration delivery_budget = absl::Minutes(2);
  std::string user_id_salt;           // SESSION_SECRET: user ids are derived, not copied
  int reply_bitrate_bps = 24000;
};

// The external services a turn uses; owned by the worker.
struct TurnServices {
  GraphApi* graph = nullptr;
  SpeechToText* stt = nullptr;  // null unless voice_input is transcribe
  AgentStarter start_agent;
  WorkerMetrics* metrics = nullptr;
};

class SessionRunner {
 public:
  SessionRunner(const v1::SessionAssignment& assignment, const TurnSettings& settings,
                TurnServices services);
  ~SessionRunner();

  // Blocking; on a pool thread. Never throws away a turn silently: the result
  // says done or failed (with a reason) and lists what was sent.
  v1::TurnResult RunTurn(const v1::Turn& turn);
  // The session ended (EndSession, drain): any thread, even while a turn
  // runs. Closes the agent socket without destroying it under the turn, wakes
  // a turn that waits on the agent (it ends as failed, nothing more is sent)
  // and keeps later turns from opening a conversation.
  void End();
  std::string conversation_id();
  const std::string& session_id() const { return assignment_.session_id(); }

 private:
  struct Reply {
    std::vector<std::vector<int16_t>> audio;  // chunks not yet encoded
    std::string text;
    bool heard = false;  // any audio or text since BeginReply (the mailbox drains)
    bool ended = false;
    ReplyEnd end = ReplyEnd::kQuietGap;
  };
  // What one reply came to: the voice note (empty for text) and its text.
  struct Collected {
    std::string ogg;
    std::string text;
  };
  // One turn's context: where replies go and what was sent.
  struct TurnCtx {
    const v1::InboundMessage* m;
    Recipient to;
    std::vector<v1::SentMessage> sent;
  };

  absl::Status EnsureAgent(TurnCtx* t, bool welcome);
  absl::Status ConnectOnce();
  absl::Status HearGreeting(TurnCtx* t, bool deliver);
  AgentEvents Events();
  void BeginReply();
  // Waits for the end of the agent's reply, encoding audio as it arrives.
  absl::StatusOr<Collected> CollectReply(bool want_audio, absl::Duration timeout);
  absl::StatusOr<std::string> DownloadNote(const v1::InboundMessage& m, bool* unplayable);
  absl::Status StreamVoiceNote(const v1::InboundMessage& m, bool* unplayable);
  absl::Status StreamSilenceUntilAnswered(int rate);
  absl::Status SendPcm(const std::vector<int16_t>& pcm);
  absl::Status DeliverText(TurnCtx* t, const std::string& text);
  // `send` again while it fails transiently, within delivery_budget.
  absl::StatusOr<std::string> WithinBudget(
      const std::function<absl::StatusOr<std::string>()>& send);
  absl::Status DeliverReply(TurnCtx* t, const Collected& reply, bool voice);
  absl::Status RunVoice(TurnCtx* t);
  absl::Status RunTranscribed(TurnCtx* t);
  // Sends `text` as a user_message; answers with a voice note when `voice`.
  absl::Status RunText(TurnCtx* t, const std::string& text, bool voice);
  absl::Status RunWelcome(TurnCtx* t);
  absl::Status Inform(const v1::InboundMessage& m);
  // Closes and destroys the agent session: the turn's thread or the destructor.
  void Close();
  absl::Status RunReply(TurnCtx* t, std::string* type);
  void AfterTurn();
  // Adds a line to the exchange (the next conversation's context) and to
  // this turn's TurnResult.transcript.
  void Remember(const std::string& who, const std::string& text);

  const v1::SessionAssignment assignment_;
  const TurnSettings settings_;
  const TurnServices services_;
  // Written (connect, close) on the turn's thread under agent_mu_, read there
  // without it; End() reads it under agent_mu_ from any thread.
  absl::Mutex agent_mu_;
  std::unique_ptr<AgentSession> agent_;
  bool greeting_delivered_ = false;      // turn thread only
  bool agent_has_greeting_ = true;       // turn thread only: learned per session

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // End() was called
  bool retryable_ ABSL_GUARDED_BY(mu_) = true;
  std::string close_reason_ ABSL_GUARDED_BY(mu_);
  std::string conversation_id_ ABSL_GUARDED_BY(mu_);
  int input_rate_ ABSL_GUARDED_BY(mu_) = 16000;
  int output_rate_ ABSL_GUARDED_BY(mu_) = 16000;
  bool collecting_ ABSL_GUARDED_BY(mu_) = false;  // false: outside a turn, dropped
  Reply reply_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> recent_ ABSL_GUARDED_BY(mu_);  // context for a new conversation
  std::vector<std::string> turn_lines_ ABSL_GUARDED_BY(mu_);  // added by the running turn
  bool had_conversation_ ABSL_GUARDED_BY(mu_) = false;    // recent_ belongs to an earlier one
};

// Splits text into WhatsApp-sized messages (≤ limit characters, UTF-8 safe,
// preferring to cut at a paragraph, sentence or word boundary).
std::vector<std::string> SplitForWhatsApp(const std::string& text, size_t limit = 4096);

// A stable id for the agent derived from the WhatsApp user, never equal to it.
std::string DeriveUserId(const std::string& salt, const std::string& phone_number_id,
                         const std::string& user);

}  // namespace bridge::media_worker
