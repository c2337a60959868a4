// elevenlabs-sim: the ElevenLabs Agents API as a real server on one port — the
// signed-URL endpoint and the agent WebSocket with the message set of
// PROTOCOLS.md B — so the worker's production client runs against it
// unchanged. A deterministic agent: it hears audio through a voice-activity
// detector, transcribes a turn as a description of what it heard, and answers
// with a fixed voice reply. Everything it saw is kept under /sim/.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/service.h"

namespace bridge::elevenlabs_sim {

struct SimOptions {
  std::string listen = "127.0.0.1:0";
  std::string tls_cert;  // wss:// and https:// when both are set
  std::string tls_key;
  std::string api_key;   // if set, the signed-URL call and the socket need it
  std::string agent_id;  // if set, other agent ids are unknown (404)
  std::string input_format = "pcm_16000";   // as the metadata event names it (or ulaw_8000)
  std::string output_format = "pcm_16000";
  std::string reply_pcm;     // s16le at the output rate; empty: the fixture
  std::string fixtures_dir;  // where agent_reply_*.s16le live
  std::string first_message; // greeting spoken at the start; empty: none
  // disable_first_message_interruptions: user audio and text during the
  // greeting are ignored (not heard, not interrupting).
  bool first_message_uninterruptible = false;
  int vad_silence_ms = 600;
  int ping_interval_ms = 2000;
  int pong_timeout_ms = 10000;  // no pong for this long: close 1002
  // Not in ElevenLabs' contract (PROTOCOLS.md B3): off unless asked for.
  bool emit_final_markers = false;
  double reply_pace = 1.0;  // 1 = real time, 4 = four times faster, 0 = no pacing
  int reply_chunk_ms = 250;
  bool alignment = true;    // audio_event.alignment: the characters each chunk speaks
  // When agent_response is sent: "first" (just before the first audio, the
  // usual), "after_first_audio" or "end" (after the last chunk; seen live).
  std::string agent_response_timing = "first";
  int reply_gap_ms = 1500;       // a pause in the middle of every reply (live audio pauses)
  int responses_per_turn = 1;    // 2: a second agent_response follows the first
  int turn_timeout_s = 7;        // re-engage a silent user after this long; 0: never
  std::string end_call_phrase = "goodbye";  // a user message with it: goodbye, end_call, 1000
  // A user_message containing handoff_phrase (case-insensitive; empty:
  // never) makes the agent call the client tool handoff_tool_name, wait up
  // to client_tool_timeout_ms for its client_tool_result, then answer.
  std::string handoff_phrase = "human";
  std::string handoff_tool_name = "transfer_to_human";
  int client_tool_timeout_ms = 10000;
  // Agents allow no conversation_config_override by default (close 1008
  // override_error); true: accepted and recorded.
  bool allow_overrides = false;
  bool internal_events = true;   // internal_tentative_agent_response, vad_score, tool events
  int max_conversations = 0;  // 0: unlimited
  int max_duration_s = 600;
  int input_timeout_s = 60;
  int signed_url_ttl_s = 900;
};

// Endpoints: http= (both HTTP and WebSocket). REST: the signed URL,
// speech-to-text and DELETE /v1/convai/conversations/{id} (erasure).
class ElevenLabsSim : public Service {
 public:
  static absl::StatusOr<std::unique_ptr<ElevenLabsSim>> Start(const SimOptions& options);
  virtual std::string address() const = 0;
  // "ws://host:port" or "wss://host:port"
  virtual std::string ws_base_url() const = 0;
  virtual std::string http_base_url() const = 0;
};

}  // namespace bridge::elevenlabs_sim
