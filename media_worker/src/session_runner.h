// One WhatsApp session on this worker: its agent conversation and the turns
// the controller sends it, one at a time. A turn runs on a pool thread from
// start to end. What it does depends on the turn's action:
//  - REPLY: read receipt + typing (for the newest message), then the message
//    and those coalesced with it (Turn.coalesced, in arrival order) answered
//    in one agent turn: texts and other content's descriptions joined into
//    one user_message; voice notes transcribed by speech-to-text and joined
//    in, or (--voice_input=stream) decoded and streamed back to back after
//    the texts went as one contextual_update. The reply is encoded as it
//    arrives, uploaded and sent as a voice note when a voice note was
//    answered (its text as a fallback), else as text split at 4096
//    characters. Also the welcome (the agent's greeting), and a polite note
//    about what cannot be represented;
//  - INFORM: a reaction, edit or revoke told to the agent as context;
//  - RESEND_AS_TEXT: a voice reply WhatsApp failed to deliver, sent as text;
//  - APOLOGIZE: the short apology, nothing else;
//  - RECORD (a person holds the conversation): marked read, reported (a
//    voice note transcribed when speech-to-text is configured), never told
//    to the agent; an open agent conversation is closed;
//  - OPERATOR_SAY: the operator's text sent to the user; the agent
//    conversation is closed, the next one hears it as context.
// Every turn reports its lines (TurnResult.lines: one per user message, one
// per message the agent, an operator or the bridge itself sent, with its
// wamid; an agent reply that could not be delivered is one line without. The
// bridge's own (apology, notices, resends, the handoff message) are SYSTEM
// lines) and where its time went (TurnResult.latency, steady clock).
// The user, agent and operator lines are also the context ("user: …") the
// session's next agent conversation hears.
// The agent may ask for a person through the assignment's handoff client
// tool: the call is answered, the reply delivered, the user told the
// assignment's handoff_message, and the result says handoff_requested.
// The agent conversation is held only around turns: closed after
// --agent_linger, reopened on the next message with the recent exchange as
// context (docs/agent-protocol.md). Agent events arrive on the ws io thread
// and are handed over through a small mailbox so codec work never runs there;
// whatever the agent says outside a turn (re-engagement, fillers) is dropped.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  using Steady = std::chrono::steady_clock;

  struct Reply {
    std::vector<std::vector<int16_t>> audio;  // chunks not yet encoded
    std::string text;
    std::vector<std::string> user_transcripts;  // what the agent heard (streamed voice)
    bool heard = false;  // any audio or text since BeginReply (the mailbox drains)
    bool ended = false;
    ReplyEnd end = ReplyEnd::kQuietGap;
    Steady::time_point first_heard{};  // when `heard` became true
    Steady::time_point ended_at{};
  };
  // What one reply came to: the voice note (empty for text) and its text.
  struct Collected {
    std::string ogg;
    std::string text;
    std::vector<std::string> user_transcripts;
    bool handoff_only = false;  // the agent asked for a person and said nothing
    Steady::time_point first_heard{};  // unset: nothing was heard
    Steady::time_point done{};
    double encode_ms = 0;
  };
  // The agent asked for a person (the handoff client tool).
  struct Handoff {
    std::string reason;  // the call's parameters, compact JSON
    Steady::time_point at;
  };
  // One turn's context: where replies go, what was sent and said, and the
  // time each stage took.
  struct TurnCtx {
    const v1::Turn* turn = nullptr;
    const v1::InboundMessage* m = nullptr;  // the newest message: read receipt, quoted
    std::string phone_number_id;
    Recipient to;
    std::string quote;  // the wamid replies quote; empty: none
    std::vector<v1::SentMessage> sent;
    std::vector<v1::TranscriptLine> lines;
    v1::TurnLatency latency;
    Steady::time_point handed{};  // the user's words were through to the agent
    bool agent_took_part = false;
  };
  // One message of a REPLY turn and what the agent hears of it.
  struct Part {
    enum Kind { kText, kVoice, kNothing };
    const v1::InboundMessage* m;
    Kind kind;
    std::string text;  // what the agent hears: the text, a description, a transcript
    size_t line;       // its USER line in TurnCtx::lines
  };

  static double MsSince(Steady::time_point t);
  TurnCtx NewTurn(const v1::Turn& turn);
  absl::Status RunAction(TurnCtx* t, std::string* type);

  // The agent conversation (session_runner_agent.cc).
  absl::Status EnsureAgent(TurnCtx* t, bool welcome);
  absl::Status ConnectOnce();
  absl::Status HearGreeting(TurnCtx* t, bool deliver);
  AgentEvents Events();
  void Heard() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<ClientToolResult> OnToolCall(const ClientToolCall& call);
  void BeginReply();
  // Waits for the end of the agent's reply, encoding audio as it arrives.
  absl::StatusOr<Collected> CollectReply(bool want_audio, absl::Duration timeout);
  void TakeReply(Collected* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool OnlyHandoff() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Closes and destroys the agent session: the turn's thread or the destructor.
  void Close();

  // The user's voice on its way to the agent (session_runner_agent.cc);
  // each adds its stages to t->latency.
  absl::StatusOr<std::string> DownloadNote(TurnCtx* t, const v1::InboundMessage& m,
                                           bool* unplayable);
  // The note's words by speech-to-text; empty when it has none or cannot be
  // played (*unplayable).
  absl::StatusOr<std::string> TranscribeNote(TurnCtx* t, const v1::InboundMessage& m,
                                             bool* unplayable);
  absl::Status StreamVoiceNote(TurnCtx* t, const v1::InboundMessage& m, bool* unplayable);
  absl::Status StreamSilenceUntilAnswered();
  absl::Status SendPcm(const std::vector<int16_t>& pcm);

  // REPLY: the message and those coalesced with it.
  std::vector<Part> PartsOf(TurnCtx* t);
  static std::string Joined(const std::vector<Part>& parts, bool with_voice);
  absl::Status RunReply(TurnCtx* t, std::string* type);
  absl::Status RunTranscribed(TurnCtx* t, std::vector<Part>& parts);
  absl::Status RunStreamed(TurnCtx* t, std::vector<Part>& parts);
  void NoteHeardWords(TurnCtx* t, const std::vector<size_t>& lines,
                      const std::vector<std::string>& transcripts);
  // Sends `text` as a user_message; answers with a voice note when `voice`.
  absl::Status RunText(TurnCtx* t, const std::string& text, bool voice);
  void NoteAgentLatency(TurnCtx* t, const Collected& reply);
  absl::Status RunWelcome(TurnCtx* t);
  absl::Status Inform(TurnCtx* t, const v1::InboundMessage& m);

  // A person holds the conversation.
  absl::Status Record(TurnCtx* t);
  std::string RecordedText(TurnCtx* t, const v1::InboundMessage& m);
  absl::Status OperatorSay(TurnCtx* t);

  // Delivery: each adds what it sent to t->sent and its lines to t->lines.
  // Sends `text` (split for WhatsApp), a line per message sent.
  absl::Status DeliverText(TurnCtx* t, const std::string& text, v1::Speaker speaker);
  // `send` again while it fails transiently, within delivery_budget.
  absl::StatusOr<std::string> WithinBudget(
      const std::function<absl::StatusOr<std::string>()>& send);
  absl::Status DeliverReply(TurnCtx* t, const Collected& reply, bool voice);
  absl::Status SendReply(TurnCtx* t, const Collected& reply, bool voice);
  absl::StatusOr<std::string> UploadAndSend(TurnCtx* t, const std::string& ogg);
  void MarkRead(const TurnCtx& t, bool typing);

  // The end of a turn.
  void ApologizeIfSilent(TurnCtx* t, const absl::Status& s);
  absl::Status TellHandoff(TurnCtx* t, const absl::Status& s);
  // The handoff the agent asked for during this turn, if any; from here on
  // tool calls are refused (no turn would tell the user).
  std::optional<Handoff> EndOfTurn();
  void AfterTurn(bool handoff);
  // The turn's lines become the next conversation's context.
  void Remember(const std::vector<v1::TranscriptLine>& lines);
  v1::TurnResult Finish(TurnCtx* t, const absl::Status& s, const std::string& type,
                        const std::optional<Handoff>& handoff, Steady::time_point start);

  const v1::SessionAssignment assignment_;
  const TurnSettings settings_;
  const TurnServices services_;
  const size_t recent_limit_;  // lines of context kept for the next conversation
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
  bool in_turn_ ABSL_GUARDED_BY(mu_) = false;  // a handoff call is heard only then
  std::optional<Handoff> handoff_ ABSL_GUARDED_BY(mu_);
  // Context for a new conversation: earlier turns' lines ("user: …"); the
  // running turn's join at its end, so a conversation opened during it
  // never hears the turn's own message twice.
  std::deque<std::string> recent_ ABSL_GUARDED_BY(mu_);
};

// Splits text into WhatsApp-sized messages (≤ limit characters, UTF-8 safe,
// preferring to cut at a paragraph, sentence or word boundary).
std::vector<std::string> SplitForWhatsApp(const std::string& text, size_t limit = 4096);

// A stable id for the agent derived from the WhatsApp user, never equal to it.
std::string DeriveUserId(const std::string& salt, const std::string& phone_number_id,
                         const std::string& user);

// What a new agent conversation (a voice note's, a call's) is told of the
// user's earlier exchanges ("user: …", "agent: …" lines, oldest first), as a
// contextual_update; "" when there are none.
template <typename Lines>
std::string EarlierExchangesContext(const Lines& lines) {
  if (lines.empty()) return "";
  return absl::StrCat("Earlier in this WhatsApp conversation:\n", absl::StrJoin(lines, "\n"));
}

}  // namespace bridge::media_worker
