// One agent conversation on one WebSocket (PROTOCOLS.md B): initiation
// metadata, pings that expect pongs, user audio through the voice-activity
// detector, transcripts and paced replies with increasing event ids,
// interruptions, text turns, the limits (max duration, no input, malformed
// messages) and the injected faults. Runs on the server's io thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "elevenlabs_sim/elevenlabs_sim.h"
#include "nlohmann/json.hpp"
#include "sim_state.h"
#include "voice_activity.h"
#include "ws/websocket.h"

namespace bridge::elevenlabs_sim {

// The agent's fixed voice, at the output rate.
struct ReplyVoice {
  int rate = 16000;
  std::vector<int16_t> pcm;
};

// "ulaw_8000" formats carry G.711 μ-law bytes instead of s16le PCM.
bool IsUlaw(const std::string& format);

class Conversation : public ws::ConnectionHandler,
                     public std::enable_shared_from_this<Conversation> {
 public:
  Conversation(const SimOptions& options, int input_rate, const ReplyVoice* voice,
               SimState* state, std::shared_ptr<ws::Connection> connection,
               std::shared_ptr<ConversationRecord> record, ConversationFaults faults);

  void OnOpen() override;
  void OnText(const std::string& text) override;
  void OnBinary(const std::string& data) override;
  void OnClose(int code, const std::string& reason, bool remote) override;

 private:
  void Send(nlohmann::json message);
  void SendMetadata();
  void Dispatch(const std::string& type, const nlohmann::json& msg);
  void OnInitiation(const nlohmann::json& msg);
  void OnAudio(const nlohmann::json& chunk);
  void OnUserTurn(const TurnSummary& turn);
  void OnUserMessage(const std::string& text);
  void AddToTimeline(const std::string& type, const std::string& text);
  // The handoff: a client_tool_call, then the answer once its result came
  // (or client_tool_timeout_ms passed).
  void RequestHandoff(const std::string& text);
  void OnToolResult(const nlohmann::json& msg);
  void SettleToolCall(const std::string& id, const std::string& status,
                      const nlohmann::json& result, bool is_error);
  struct Response {
    std::string text;
    bool end_call = false;  // the agent hangs up after saying it
  };
  // What a user turn gets: one response, or more (--responses_per_turn), or
  // a goodbye and end_call.
  std::vector<Response> AnswerTo(const std::string& text);
  void StartReply(std::vector<Response> responses);
  void NextResponse();
  void SendAgentResponse();
  void SendReplyChunk(uint64_t generation, size_t index);
  nlohmann::json Alignment(size_t begin, size_t n) const;
  std::string EncodeOutput(size_t begin, size_t n) const;
  void EndCall();
  void ArmReengage();
  void CancelReengage();
  void Interrupt();
  void Fail(int code, const std::string& error_type, const std::string& message);
  void Ping();
  void ArmInputTimeout();
  template <typename Fn>
  uint64_t After(absl::Duration d, Fn fn);

  const SimOptions& options_;
  const int input_rate_;
  const ReplyVoice* voice_;
  SimState* state_;
  std::shared_ptr<ws::Connection> conn_;
  std::shared_ptr<ConversationRecord> record_;
  ConversationFaults faults_;
  VoiceActivity vad_;

  bool metadata_sent_ = false;
  bool closing_ = false;
  int64_t next_event_id_ = 1;
  int messages_sent_ = 0;
  int64_t outstanding_ping_ = 0;  // event id of an unanswered ping, 0: none
  absl::Time outstanding_since_;
  uint64_t input_timer_ = 0;
  // A reply in progress; `generation` invalidates its timers on interruption.
  bool replying_ = false;
  uint64_t reply_generation_ = 0;
  uint64_t reply_timer_ = 0;
  bool stalled_once_ = false;
  std::deque<Response> pending_responses_;  // of the turn being answered
  Response current_;                        // the response being spoken
  std::vector<std::string> current_chars_;  // its UTF-8 characters (alignment)
  int64_t response_event_id_ = 0;           // shared by its agent_response and audio
  bool response_text_sent_ = false;
  size_t spoken_samples_ = 0;               // of the current response, sent so far
  uint64_t reengage_timer_ = 0;
  bool greeting_playing_ = false;  // the first_message is being spoken
  std::map<std::string, uint64_t> pending_tools_;  // tool_call_id -> its timeout timer
};

}  // namespace bridge::elevenlabs_sim
