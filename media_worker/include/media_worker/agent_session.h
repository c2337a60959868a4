// One ElevenLabs Conversational AI conversation over the agent WebSocket
// (PROTOCOLS.md B), on the shared ws::ClientPool: signed URL when an API key
// is set (fetched per conversation, never logged), initiation data, pongs,
// the metadata's audio formats (PCM and μ-law), user audio/text/context out,
// agent audio, text, corrections, transcripts, interruptions and client tool
// calls in (answered with what the owner says, else as unsupported), and the
// end of a reply judged from evidence (PROTOCOLS.md B4, docs/agent-protocol.md):
// there is no end marker in ElevenLabs' contract.
//
// One real implementation, tested against elevenlabs-sim. Reconnecting is
// the caller's policy (see Reconnectable() on the close reason).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace bridge::ws {
class ClientPool;
}

namespace bridge::media_worker {

// Why a reply ended, strongest evidence first.
enum class ReplyEnd {
  kClosed,    // the conversation closed: what was said before it is the reply
  kEndCall,   // the agent's end_call system tool responded
  kAligned,   // the audio's alignment covers the whole agent_response text
  kMarker,    // is_final / agent_response_complete: not in the contract, honoured
  kQuietGap,  // nothing else told: no agent audio or text for a long while
};
const char* ReplyEndName(ReplyEnd end);

struct AgentOptions {
  std::string base_url = "https://api.elevenlabs.io";  // ELEVENLABS_BASE_URL (http(s))
  std::string agent_id;                                // ELEVENLABS_AGENT_ID
  std::string api_key;  // ELEVENLABS_API_KEY: signed URL when set, public agent otherwise
  std::string ca_file;  // PEM bundle for TLS; empty: the system store
  std::string user_id;  // derived from (never equal to) the WhatsApp id
  std::map<std::string, std::string> dynamic_variables;  // e.g. user_name
  absl::Duration connect_timeout = absl::Seconds(10);
  // The weakest evidence: no agent audio or text for this long ends a reply
  // whose audio carries no alignment. Live audio pauses mid-reply (tools,
  // slow LLM turns, fillers), so it is long. With alignment present and not
  // yet covering the text, or while a server tool runs, it is four times this.
  absl::Duration reply_quiet_gap = absl::Seconds(3);
  // Once the alignment covers the text: this long without a further
  // agent_response ends the reply (one user turn may yield two responses).
  absl::Duration reply_settle = absl::Seconds(1);
};

// A client tool call (PROTOCOLS.md B3 client_tool_call).
struct ClientToolCall {
  std::string tool_name;
  std::string tool_call_id;
  std::string parameters;  // as the agent gave them, compact JSON ("{}" when none)
};

// The answer to one (client_tool_result).
struct ClientToolResult {
  std::string result;
  bool is_error = false;
};

// Callbacks run on the ws pool's io thread, one at a time: keep them short,
// never block. They may call the session (Send*, Close, even destroy it).
// Close() waits for a callback in progress, so never call Close() (or destroy
// the session) while holding a lock that a callback takes.
struct AgentEvents {
  // The conversation started: id and audio formats (sample rates).
  std::function<void(const std::string& conversation_id, int input_rate, int output_rate)>
      on_started;
  std::function<void(const std::string& text)> on_user_transcript;
  std::function<void(const std::string& text)> on_agent_response;
  // agent_response_correction: the reply was cut short; `corrected` is what
  // the user actually heard of `original`.
  std::function<void(const std::string& original, const std::string& corrected)>
      on_agent_correction;
  // Agent audio, PCM s16le mono at output_rate, in order; stale audio after
  // an interruption is already dropped.
  std::function<void(std::vector<int16_t> pcm, int64_t event_id)> on_audio;
  // The user cut in: the reply in progress ends here (no on_reply_end for
  // it); the next reply end belongs to the user's new turn.
  std::function<void(int64_t event_id)> on_interruption;
  // The agent finished its reply (see ReplyEnd), once per reply. A close is
  // reported through on_closed instead: what arrived before it is the reply.
  std::function<void(ReplyEnd why)> on_reply_end;
  // The agent called a client tool. Every call is answered at once (an
  // unanswered call stalls the agent): with what this returns, or, when it is
  // unset or returns nothing, an error saying the tool is not supported.
  std::function<std::optional<ClientToolResult>(const ClientToolCall& call)> on_client_tool_call;
  // The socket closed (or never opened: code 0, e.g. the upgrade refused).
  // `retryable`: reconnecting can help — not after 1008 (bad input), an
  // upgrade refused with 401/403/404 (or other 4xx but 408/429), or an audio
  // format we cannot use (we close with 1003). Not called after Close().
  std::function<void(int code, const std::string& reason, bool retryable)> on_closed;
};

class AgentSession {
 public:
  virtual ~AgentSession() = default;

  // Starts connecting (signed-URL fetch, WebSocket, initiation data); events
  // follow. With an API key the signed URL is fetched here, synchronously
  // (up to connect_timeout), so call it from a thread that may block.
  // Errors returned here, never as on_closed:
  //  - InvalidArgument: configuration (no agent id, bad base URL, no pool);
  //  - FailedPrecondition: the signed-URL call was refused in a way a retry
  //    repeats (401/403 bad key, 404 unknown agent, other 4xx) or the pool
  //    is stopped;
  //  - Unavailable: the signed-URL call may succeed later (network, timeout,
  //    408, 429, 5xx).
  // Messages never hold the key or the signed URL. Everything after the
  // signed URL (the WebSocket) is reported through on_closed.
  static absl::StatusOr<std::unique_ptr<AgentSession>> Start(const AgentOptions& options,
                                                            AgentEvents events,
                                                            ws::ClientPool* pool);

  // Linear PCM s16 mono at the agent's input rate (known after on_started),
  // sent in its input encoding (PCM, or μ-law for ulaw_8000). All
  // Send* calls before on_started are queued, in order, and sent after it;
  // after Close() they are dropped. Big spans are split into 250 ms frames.
  virtual void SendAudio(absl::Span<const int16_t> pcm) = 0;
  virtual void SendText(const std::string& text) = 0;
  virtual void SendContextualUpdate(const std::string& text) = 0;
  virtual void SendUserActivity() = 0;
  // A new user turn starts: agent audio and text from before it (the tail of
  // an earlier reply, a re-engagement) are dropped from here on, by event id,
  // and the reply evidence starts afresh. Call before sending the turn.
  virtual void BeginTurn() = 0;
  // Closes the conversation (1000) after `linger` unless something is sent
  // first; reported through on_closed like any close. Agents re-engage idle
  // users and close after 60 s without input (PROTOCOLS.md B4), so a
  // conversation is held only around turns.
  virtual void CloseWhenIdle(absl::Duration linger) = 0;
  // Normal closure (1000). Any thread, any number of times, before or after
  // the socket closed. When it returns no callback is running (unless called
  // from one) and none will start. The destructor calls it.
  virtual void Close() = 0;

  virtual std::string conversation_id() const = 0;
  virtual int input_rate() const = 0;
  virtual int output_rate() const = 0;
};

// How the turn pipeline opens conversations: AgentSession::Start on the
// worker's socket pool in production, a scripted fake in tests
// (tests/fakes/fake_agent_session.h).
using AgentStarter = std::function<absl::StatusOr<std::unique_ptr<AgentSession>>(
    const AgentOptions& options, AgentEvents events)>;

}  // namespace bridge::media_worker
