#include "conversation.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace bridge::elevenlabs_sim {
namespace {

using nlohmann::json;

// Every client message type of the published contract; anything else is
// answered like the real service answers an invalid message (1008).
bool KnownClientType(const std::string& t) {
  static const char* kTypes[] = {
      "pong", "user_message", "user_activity", "contextual_update",
      "conversation_initiation_client_data", "client_tool_result", "feedback",
      "mcp_tool_approval_result", "multimodal_message"};
  for (const char* k : kTypes) {
    if (t == k) return true;
  }
  return false;
}

std::string ReplyText(const TurnSummary& turn) {
  return absl::StrCat("Thanks! I heard ", absl::StrFormat("%.1f", turn.duration_s),
                      " seconds from you.");
}

}  // namespace

Conversation::Conversation(const SimOptions& options, int input_rate, const ReplyVoice* voice,
                           SimState* state, std::shared_ptr<ws::Connection> connection,
                           std::shared_ptr<ConversationRecord> record, ConversationFaults faults)
    : options_(options),
      input_rate_(input_rate),
      voice_(voice),
      state_(state),
      conn_(std::move(connection)),
      record_(std::move(record)),
      faults_(faults),
      vad_(input_rate, options.vad_silence_ms) {}

template <typename Fn>
uint64_t Conversation::After(absl::Duration d, Fn fn) {
  std::weak_ptr<Conversation> weak = shared_from_this();
  return conn_->Schedule(d, [weak, fn]() {
    if (auto self = weak.lock(); self && !self->closing_) fn(*self);
  });
}

void Conversation::OnOpen() {
  LogInfo("conversation open", {{"conversation_id", record_->conversation_id},
                                {"remote", conn_->remote()}});
  // The metadata may come before or after the client's first message; if the
  // client says nothing, the agent starts anyway.
  After(absl::Seconds(1), [](Conversation& c) { c.SendMetadata(); });
  if (options_.ping_interval_ms > 0) {
    After(absl::Milliseconds(options_.ping_interval_ms), [](Conversation& c) { c.Ping(); });
  }
  After(absl::Seconds(options_.max_duration_s), [](Conversation& c) {
    c.Fail(1000, "max_duration_exceeded", "Maximum conversation duration reached");
  });
  ArmInputTimeout();
}

void Conversation::Send(json message) {
  if (closing_) return;
  conn_->SendText(message.dump());
  ++messages_sent_;
  if (faults_.close_after_messages > 0 && messages_sent_ >= faults_.close_after_messages) {
    closing_ = true;
    conn_->Close(faults_.close_code, "injected fault");
  }
}

void Conversation::SendMetadata() {
  if (metadata_sent_) return;
  metadata_sent_ = true;
  Send({{"type", "conversation_initiation_metadata"},
        {"conversation_initiation_metadata_event",
         {{"conversation_id", record_->conversation_id},
          {"agent_output_audio_format", options_.output_format},
          {"user_input_audio_format", options_.input_format}}}});
  if (!options_.first_message.empty()) StartReply(options_.first_message);
}

void Conversation::OnBinary(const std::string&) {
  Fail(1008, "invalid_message", "Binary frames are not part of the protocol");
}

void Conversation::OnText(const std::string& text) {
  if (closing_) return;
  json msg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!msg.is_object()) {
    Fail(1008, "invalid_message", "Message is not a JSON object");
    return;
  }
  std::string type = msg.contains("user_audio_chunk") ? "user_audio_chunk"
                                                      : msg.value("type", std::string());
  state_->Update(record_, [&](ConversationRecord& r) { ++r.messages_received[type]; });
  if (type != "user_audio_chunk" && !KnownClientType(type)) {
    Fail(1008, "invalid_message", absl::StrCat("Unknown message type '", type, "'"));
    return;
  }
  // Pongs keep the socket alive but are not user input (the 60 s timeout).
  if (type != "pong") ArmInputTimeout();
  if (type != "conversation_initiation_client_data") SendMetadata();
  try {
    Dispatch(type, msg);
  } catch (const json::exception& e) {
    Fail(1008, "invalid_message", absl::StrCat("Malformed ", type, ": ", e.what()));
  }
}

void Conversation::Dispatch(const std::string& type, const json& msg) {
  if (type == "user_audio_chunk") {
    OnAudio(msg.at("user_audio_chunk"));
  } else if (type == "conversation_initiation_client_data") {
    OnInitiation(msg);
  } else if (type == "pong") {
    if (msg.at("event_id").get<int64_t>() == outstanding_ping_) outstanding_ping_ = 0;
    state_->Update(record_, [](ConversationRecord& r) { ++r.pongs_received; });
  } else if (type == "user_message") {
    std::string text = msg.value("text", std::string());
    state_->Update(record_, [&](ConversationRecord& r) { r.user_messages.push_back(text); });
    if (replying_) Interrupt();
    StartReply(absl::StrCat("You said: ", text));
  } else if (type == "contextual_update") {
    std::string text = msg.at("text").get<std::string>();
    state_->Update(record_, [&](ConversationRecord& r) { r.contextual_updates.push_back(text); });
  } else if (type == "user_activity") {
    state_->Update(record_, [](ConversationRecord& r) { ++r.user_activity; });
  }
}

void Conversation::OnInitiation(const json& msg) {
  if (msg.contains("conversation_config_override") &&
      !msg["conversation_config_override"].empty()) {
    // Agents allow no overrides by default; the real service refuses them.
    Fail(1008, "override_error", "Override for field is not allowed by config");
    return;
  }
  state_->Update(record_, [&](ConversationRecord& r) {
    r.user_id = msg.value("user_id", std::string());
    if (msg.contains("dynamic_variables")) r.dynamic_variables = msg["dynamic_variables"];
  });
  SendMetadata();
}

void Conversation::OnAudio(const json& chunk) {
  std::string bytes;
  if (!chunk.is_string() || !absl::Base64Unescape(chunk.get<std::string>(), &bytes) ||
      bytes.size() % 2 != 0) {
    Fail(1008, "invalid_message", "user_audio_chunk is not base64 of 16-bit PCM");
    return;
  }
  std::vector<int16_t> pcm(bytes.size() / 2);
  std::memcpy(pcm.data(), bytes.data(), bytes.size());
  state_->Update(record_, [&](ConversationRecord& r) {
    r.audio_seconds_received += static_cast<double>(pcm.size()) / input_rate_;
  });
  std::vector<TurnSummary> turns = vad_.Push(pcm);
  // The user talking over the agent interrupts it, as on a real call.
  if (replying_ && vad_.voiced_now()) Interrupt();
  for (const TurnSummary& t : turns) OnUserTurn(t);
}

void Conversation::OnUserTurn(const TurnSummary& turn) {
  std::string transcript = turn.Describe();
  state_->Update(record_, [&](ConversationRecord& r) { r.transcripts.push_back(transcript); });
  Send({{"type", "user_transcript"},
        {"user_transcription_event",
         {{"user_transcript", transcript}, {"event_id", next_event_id_++}}}});
  StartReply(ReplyText(turn));
}

void Conversation::StartReply(const std::string& text) {
  replying_ = true;
  const uint64_t generation = ++reply_generation_;
  state_->Update(record_, [&](ConversationRecord& r) { r.agent_responses.push_back(text); });
  auto begin = [generation, text](Conversation& c) {
    if (generation != c.reply_generation_) return;
    c.Send({{"type", "agent_response"},
            {"agent_response_event", {{"agent_response", text}, {"event_id", c.next_event_id_++}}}});
    c.SendReplyChunk(generation, 0);
  };
  if (faults_.stall_ms > 0 && !stalled_once_) {
    stalled_once_ = true;
    reply_timer_ = After(absl::Milliseconds(faults_.stall_ms), begin);
  } else {
    begin(*this);
  }
}

void Conversation::SendReplyChunk(uint64_t generation, size_t index) {
  if (generation != reply_generation_ || closing_) return;
  const size_t chunk = static_cast<size_t>(voice_->rate) * options_.reply_chunk_ms / 1000;
  const size_t begin = index * chunk;
  const size_t n = std::min(chunk, voice_->pcm.size() - std::min(begin, voice_->pcm.size()));
  const bool last = begin + n >= voice_->pcm.size();
  json event = {{"audio_base_64",
                 absl::Base64Escape(absl::string_view(
                     reinterpret_cast<const char*>(voice_->pcm.data() + begin), n * 2))},
                {"event_id", next_event_id_++}};
  if (last && options_.emit_final_markers) event["is_final"] = true;
  Send({{"type", "audio"}, {"audio_event", event}});
  state_->Update(record_, [&](ConversationRecord& r) {
    r.reply_seconds_sent += static_cast<double>(n) / voice_->rate;
    if (last) ++r.replies_completed;
  });
  if (last) {
    replying_ = false;
    if (options_.emit_final_markers) {
      Send({{"type", "agent_response_complete"},
            {"agent_response_complete_event", {{"event_id", next_event_id_++}}}});
    }
    return;
  }
  absl::Duration gap = options_.reply_pace > 0
                           ? absl::Milliseconds(options_.reply_chunk_ms / options_.reply_pace)
                           : absl::ZeroDuration();
  reply_timer_ = After(gap, [generation, index](Conversation& c) {
    c.SendReplyChunk(generation, index + 1);
  });
}

void Conversation::Interrupt() {
  replying_ = false;
  ++reply_generation_;
  conn_->Cancel(reply_timer_);
  state_->Update(record_, [](ConversationRecord& r) { ++r.interruptions; });
  Send({{"type", "interruption"}, {"interruption_event", {{"event_id", next_event_id_++}}}});
}

void Conversation::Fail(int code, const std::string& error_type, const std::string& message) {
  if (closing_) return;
  LogInfo("conversation closing", {{"conversation_id", record_->conversation_id},
                                   {"code", code}, {"error_type", error_type}});
  Send({{"type", "error"},
        {"error_event", {{"code", code}, {"error_type", error_type}, {"message", message}}}});
  state_->Update(record_, [&](ConversationRecord& r) { r.error_type = error_type; });
  closing_ = true;
  conn_->Close(code, error_type);
}

void Conversation::Ping() {
  if (outstanding_ping_ != 0 &&
      absl::Now() - outstanding_since_ >= absl::Milliseconds(options_.pong_timeout_ms)) {
    Fail(1002, "websocket_disconnect", "The client stopped answering pings");
    return;
  }
  if (outstanding_ping_ == 0) {
    outstanding_ping_ = next_event_id_++;
    outstanding_since_ = absl::Now();
    Send({{"type", "ping"}, {"ping_event", {{"event_id", outstanding_ping_}, {"ping_ms", 0}}}});
    state_->Update(record_, [](ConversationRecord& r) { ++r.pings_sent; });
  }
  After(absl::Milliseconds(options_.ping_interval_ms), [](Conversation& c) { c.Ping(); });
}

void Conversation::ArmInputTimeout() {
  if (input_timer_ != 0) conn_->Cancel(input_timer_);
  input_timer_ = After(absl::Seconds(options_.input_timeout_s), [](Conversation& c) {
    c.Fail(1002, "transport_receive_timeout", "No user input received for too long");
  });
}

void Conversation::OnClose(int code, const std::string& reason, bool remote) {
  closing_ = true;
  state_->Update(record_, [&](ConversationRecord& r) {
    r.ended = true;
    r.ended_at = absl::Now();
    r.close_code = code;
    r.close_reason = reason;
    r.closed_by = remote ? "client" : "server";
  });
  state_->Release();
  LogInfo("conversation closed", {{"conversation_id", record_->conversation_id},
                                  {"code", code}, {"by", remote ? "client" : "server"}});
  conn_.reset();  // breaks the connection <-> handler cycle
}

}  // namespace bridge::elevenlabs_sim
