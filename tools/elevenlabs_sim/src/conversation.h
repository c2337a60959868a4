// One agent conversation on one WebSocket (PROTOCOLS.md B): initiation
// metadata, pings that expect pongs, user audio through the voice-activity
// detector, transcripts and paced replies with increasing event ids,
// interruptions, text turns, the limits (max duration, no input, malformed
// messages) and the injected faults. Runs on the server's io thread only.
#pragma once

#include <cstdint>
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
  void StartReply(const std::string& text);
  void SendReplyChunk(uint64_t generation, size_t index);
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
};

}  // namespace bridge::elevenlabs_sim
