// elevenlabs-sim: the ElevenLabs Agents API on loopback for tests, benchmarks
// and demos without an account (see elevenlabs_sim/elevenlabs_sim.h).
#include "absl/flags/flag.h"
#include "common/config.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/process.h"
#include "common/service.h"
#include "elevenlabs_sim/elevenlabs_sim.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "HTTP + WebSocket listen address");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve https/wss");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(std::string, api_key, "", "If set, the signed-URL call (xi-api-key) and sockets need it (env ELEVENLABS_API_KEY)");
ABSL_FLAG(std::string, agent_id, "", "If set, the only agent id known");
ABSL_FLAG(std::string, input_format, "pcm_16000",
          "user_input_audio_format (pcm_8000..pcm_48000, ulaw_8000)");
ABSL_FLAG(std::string, output_format, "pcm_16000",
          "agent_output_audio_format (pcm_8000..pcm_48000, ulaw_8000)");
ABSL_FLAG(std::string, reply_pcm, "", "Agent voice: raw s16le mono at the output rate (default: fixture)");
ABSL_FLAG(std::string, fixtures_dir, BRIDGE_FIXTURES_AUDIO_DIR, "Where agent_reply_*.s16le live");
ABSL_FLAG(std::string, first_message, "", "Greeting the agent speaks first (default: none)");
ABSL_FLAG(bool, first_message_uninterruptible, false,
          "disable_first_message_interruptions: input during the greeting is ignored");
ABSL_FLAG(int, vad_silence_ms, 600, "Silence that ends the user's turn");
ABSL_FLAG(int, ping_interval_ms, 2000, "Ping period; 0 disables pings");
ABSL_FLAG(int, pong_timeout_ms, 10000, "Close 1002 when a ping stays unanswered this long");
ABSL_FLAG(bool, emit_final_markers, false,
          "Mark the last audio is_final and send agent_response_complete (not in the contract)");
ABSL_FLAG(bool, alignment, true, "Send audio_event.alignment (the characters each chunk speaks)");
ABSL_FLAG(std::string, agent_response_timing, "first",
          "When agent_response is sent: first (before the first audio), after_first_audio, end");
ABSL_FLAG(int, reply_gap_ms, 1500, "A pause in the middle of every reply (and between responses)");
ABSL_FLAG(int, responses_per_turn, 1, "Agent responses to one user turn (2: a follow-up)");
ABSL_FLAG(int, turn_timeout_s, 7, "Re-engage a silent user after this long (0: never)");
ABSL_FLAG(std::string, end_call_phrase, "goodbye",
          "A user message containing it gets a goodbye, end_call and close 1000 (empty: never)");
ABSL_FLAG(std::string, handoff_phrase, "human",
          "A user message containing it (any case) makes the agent call the handoff client "
          "tool (empty: never)");
ABSL_FLAG(std::string, handoff_tool_name, "transfer_to_human",
          "Name of the client tool the agent calls to hand over to a person");
ABSL_FLAG(int, client_tool_timeout_ms, 10000,
          "How long the agent waits for a client_tool_result before answering without it");
ABSL_FLAG(bool, allow_overrides, false,
          "Accept conversation_config_override (default: refused with 1008 override_error, as "
          "an agent that allows none)");
ABSL_FLAG(bool, internal_events, true,
          "Send internal and newer event types (vad_score, internal_tentative_agent_response)");
ABSL_FLAG(double, reply_pace, 1.0, "Reply audio speed: 1 real time, 4 four times faster, 0 unpaced");
ABSL_FLAG(int, reply_chunk_ms, 250, "Audio per agent audio event");
ABSL_FLAG(int, max_conversations, 0, "Concurrent conversations allowed (0: unlimited)");
ABSL_FLAG(int, max_duration_s, 600, "Conversation length limit (error event, close 1000)");
ABSL_FLAG(int, input_timeout_s, 60, "No client message for this long: close 1002");
ABSL_FLAG(int, signed_url_ttl_s, 900, "Signed URLs must be used within this time");

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  // The key travels in the environment (ELEVENLABS_API_KEY), as for the worker.
  bridge::LoadConfig(argc, argv, "elevenlabs-sim", {{"ELEVENLABS_API_KEY", "api_key", true}});
  bridge::elevenlabs_sim::SimOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.api_key = absl::GetFlag(FLAGS_api_key);
  o.agent_id = absl::GetFlag(FLAGS_agent_id);
  o.input_format = absl::GetFlag(FLAGS_input_format);
  o.output_format = absl::GetFlag(FLAGS_output_format);
  o.reply_pcm = absl::GetFlag(FLAGS_reply_pcm);
  o.fixtures_dir = absl::GetFlag(FLAGS_fixtures_dir);
  o.first_message = absl::GetFlag(FLAGS_first_message);
  o.first_message_uninterruptible = absl::GetFlag(FLAGS_first_message_uninterruptible);
  o.vad_silence_ms = absl::GetFlag(FLAGS_vad_silence_ms);
  o.ping_interval_ms = absl::GetFlag(FLAGS_ping_interval_ms);
  o.pong_timeout_ms = absl::GetFlag(FLAGS_pong_timeout_ms);
  o.emit_final_markers = absl::GetFlag(FLAGS_emit_final_markers);
  o.alignment = absl::GetFlag(FLAGS_alignment);
  o.agent_response_timing = absl::GetFlag(FLAGS_agent_response_timing);
  if (o.agent_response_timing != "first" && o.agent_response_timing != "after_first_audio" &&
      o.agent_response_timing != "end") {
    bridge::LogError("--agent_response_timing must be first, after_first_audio or end");
    return 2;
  }
  o.reply_gap_ms = absl::GetFlag(FLAGS_reply_gap_ms);
  o.responses_per_turn = absl::GetFlag(FLAGS_responses_per_turn);
  o.turn_timeout_s = absl::GetFlag(FLAGS_turn_timeout_s);
  o.end_call_phrase = absl::GetFlag(FLAGS_end_call_phrase);
  o.internal_events = absl::GetFlag(FLAGS_internal_events);
  o.handoff_phrase = absl::GetFlag(FLAGS_handoff_phrase);
  o.handoff_tool_name = absl::GetFlag(FLAGS_handoff_tool_name);
  o.client_tool_timeout_ms = absl::GetFlag(FLAGS_client_tool_timeout_ms);
  o.allow_overrides = absl::GetFlag(FLAGS_allow_overrides);
  if (o.handoff_tool_name.empty()) {
    bridge::LogError("--handoff_tool_name must not be empty");
    return 2;
  }
  o.reply_pace = absl::GetFlag(FLAGS_reply_pace);
  o.reply_chunk_ms = absl::GetFlag(FLAGS_reply_chunk_ms);
  o.max_conversations = absl::GetFlag(FLAGS_max_conversations);
  o.max_duration_s = absl::GetFlag(FLAGS_max_duration_s);
  o.input_timeout_s = absl::GetFlag(FLAGS_input_timeout_s);
  o.signed_url_ttl_s = absl::GetFlag(FLAGS_signed_url_ttl_s);
  if (!o.api_key.empty()) bridge::RegisterSecret(o.api_key);
  return bridge::RunUntilSignal("elevenlabs-sim", bridge::elevenlabs_sim::ElevenLabsSim::Start(o));
}
