#include "conversation.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"

extern "C" {
#include <spandsp/telephony.h>
#include <spandsp/bit_operations.h>
#include <spandsp/g711.h>
}

namespace bridge::elevenlabs_sim {

bool IsUlaw(const std::string& format) { return format == "ulaw_8000"; }

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

constexpr char kSecondResponse[] = "Is there anything else I can help you with?";
constexpr char kGoodbye[] = "Goodbye! It was nice talking to you.";
constexpr char kReengage[] = "Are you still there?";
constexpr char kHandoffDone[] = "Connecting you to a person.";
constexpr char kHandoffFailed[] = "Sorry, I could not reach a person right now.";

// UTF-8 text as one string per character (what alignment.chars lists).
std::vector<std::string> Characters(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    len = std::min(len, text.size() - i);
    out.push_back(text.substr(i, len));
    i += len;
  }
  return out;
}

bool ContainsIgnoringCase(const std::string& haystack, const std::string& needle) {
  if (needle.empty()) return false;
  std::string h = haystack, n = needle;
  for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (char& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return h.find(n) != std::string::npos;
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
  if (!options_.first_message.empty()) {
    StartReply({{options_.first_message}});
    greeting_playing_ = true;
  }
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
  if (greeting_playing_ && options_.first_message_uninterruptible &&
      (type == "user_audio_chunk" || type == "user_message")) {
    // The agent does not listen while it greets (PROTOCOLS.md B4).
    state_->Update(record_, [](ConversationRecord& r) { ++r.ignored_during_greeting; });
    return;
  }
  // Pongs keep the socket alive but are not user input (the 60 s timeout).
  if (type != "pong") ArmInputTimeout();
  if (type == "user_message") CancelReengage();
  if (type == "user_activity" && !replying_ && reengage_timer_ != 0) ArmReengage();
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
    OnUserMessage(msg.value("text", std::string()));
  } else if (type == "contextual_update") {
    std::string text = msg.at("text").get<std::string>();
    state_->Update(record_, [&](ConversationRecord& r) { r.contextual_updates.push_back(text); });
    AddToTimeline(type, text);
  } else if (type == "client_tool_result") {
    OnToolResult(msg);
  } else if (type == "user_activity") {
    state_->Update(record_, [](ConversationRecord& r) { ++r.user_activity; });
  }
}

void Conversation::OnUserMessage(const std::string& text) {
  state_->Update(record_, [&](ConversationRecord& r) { r.user_messages.push_back(text); });
  AddToTimeline("user_message", text);
  if (replying_) Interrupt();
  if (ContainsIgnoringCase(text, options_.handoff_phrase)) {
    RequestHandoff(text);
  } else {
    StartReply(AnswerTo(absl::StrCat("You said: ", text)));
  }
}

void Conversation::AddToTimeline(const std::string& type, const std::string& text) {
  state_->Update(record_, [&](ConversationRecord& r) {
    r.timeline.push_back({{"type", type}, {"text", text}});
  });
}

// As a live agent with a client tool: the call goes out, speech waits for
// its result (an unanswered call would stall it, so the wait is bounded).
void Conversation::RequestHandoff(const std::string& text) {
  const std::string id = absl::StrCat("toolu_", RandomHex(8));
  ToolCallRecord call;
  call.tool_call_id = id;
  call.tool_name = options_.handoff_tool_name;
  call.parameters = {{"reason", absl::StrCat("The user asked for a person: ", text)}};
  Send({{"type", "client_tool_call"},
        {"client_tool_call",
         {{"tool_name", call.tool_name}, {"tool_call_id", id},
          {"parameters", call.parameters}, {"event_id", next_event_id_++}}}});
  state_->Update(record_, [&](ConversationRecord& r) { r.client_tool_calls.push_back(call); });
  pending_tools_[id] = After(absl::Milliseconds(options_.client_tool_timeout_ms),
                             [id](Conversation& c) {
                               c.SettleToolCall(id, "timed_out", json(), /*is_error=*/true);
                             });
}

void Conversation::OnToolResult(const json& msg) {
  const std::string id = msg.at("tool_call_id").get<std::string>();
  const json result = msg.contains("result") ? msg["result"] : json();
  const bool is_error = msg.value("is_error", false);
  state_->Update(record_, [&](ConversationRecord& r) {
    r.timeline.push_back({{"type", "client_tool_result"}, {"tool_call_id", id},
                          {"result", result}, {"is_error", is_error}});
  });
  auto it = pending_tools_.find(id);
  if (it == pending_tools_.end()) return;  // unknown or late: nothing waits for it
  conn_->Cancel(it->second);
  SettleToolCall(id, "answered", result, is_error);
}

void Conversation::SettleToolCall(const std::string& id, const std::string& status,
                                  const json& result, bool is_error) {
  pending_tools_.erase(id);
  state_->Update(record_, [&](ConversationRecord& r) {
    for (ToolCallRecord& call : r.client_tool_calls) {
      if (call.tool_call_id != id) continue;
      call.status = status;
      call.result = result;
      call.is_error = is_error;
    }
  });
  Response answer{is_error ? kHandoffFailed : kHandoffDone};
  // Said after what the agent is saying now (not an interruption: no user spoke).
  if (replying_) {
    pending_responses_.push_back(answer);
  } else {
    StartReply({answer});
  }
}

void Conversation::OnInitiation(const json& msg) {
  state_->Update(record_, [&](ConversationRecord& r) {
    r.initiation_client_data = msg;
    if (msg.contains("conversation_config_override")) {
      r.conversation_config_override = msg["conversation_config_override"];
    }
  });
  if (!options_.allow_overrides && msg.contains("conversation_config_override") &&
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
  const bool ulaw = IsUlaw(options_.input_format);
  if (!chunk.is_string() || !absl::Base64Unescape(chunk.get<std::string>(), &bytes) ||
      (!ulaw && bytes.size() % 2 != 0)) {
    Fail(1008, "invalid_message",
         ulaw ? "user_audio_chunk is not base64" : "user_audio_chunk is not base64 of 16-bit PCM");
    return;
  }
  std::vector<int16_t> pcm(ulaw ? bytes.size() : bytes.size() / 2);
  if (ulaw) {
    for (size_t i = 0; i < bytes.size(); ++i) pcm[i] = ulaw_to_linear(static_cast<uint8_t>(bytes[i]));
  } else {
    std::memcpy(pcm.data(), bytes.data(), bytes.size());
  }
  state_->Update(record_, [&](ConversationRecord& r) {
    r.audio_seconds_received += static_cast<double>(pcm.size()) / input_rate_;
  });
  std::vector<TurnSummary> turns = vad_.Push(pcm);
  // The user talking over the agent interrupts it, as on a real call.
  if (vad_.voiced_now()) CancelReengage();
  if (replying_ && vad_.voiced_now()) Interrupt();
  for (const TurnSummary& t : turns) OnUserTurn(t);
}

void Conversation::OnUserTurn(const TurnSummary& turn) {
  std::string transcript = turn.Describe();
  state_->Update(record_, [&](ConversationRecord& r) { r.transcripts.push_back(transcript); });
  AddToTimeline("user_transcript", transcript);
  if (options_.internal_events) {
    Send({{"type", "vad_score"}, {"vad_score_event", {{"vad_score", 0.02}}}});
  }
  Send({{"type", "user_transcript"},
        {"user_transcription_event",
         {{"user_transcript", transcript}, {"event_id", next_event_id_++}}}});
  StartReply(AnswerTo(ReplyText(turn)));
}

std::vector<Conversation::Response> Conversation::AnswerTo(const std::string& text) {
  if (ContainsIgnoringCase(text, options_.end_call_phrase)) return {{kGoodbye, true}};
  std::vector<Response> out = {{text}};
  for (int i = 1; i < options_.responses_per_turn; ++i) out.push_back({kSecondResponse});
  return out;
}

void Conversation::StartReply(std::vector<Response> responses) {
  CancelReengage();
  pending_responses_.assign(responses.begin(), responses.end());
  NextResponse();
}

// One agent response: its own event id for the text and every audio chunk
// (as the SDKs' interruption handling assumes), alignment per chunk, the text
// before, after the first or after the last chunk, a pause in the middle.
void Conversation::NextResponse() {
  if (pending_responses_.empty()) {
    replying_ = false;
    greeting_playing_ = false;
    ArmReengage();
    return;
  }
  replying_ = true;
  current_ = pending_responses_.front();
  pending_responses_.pop_front();
  current_chars_ = Characters(current_.text);
  response_event_id_ = next_event_id_++;
  response_text_sent_ = false;
  spoken_samples_ = 0;
  const uint64_t generation = ++reply_generation_;
  state_->Update(record_, [&](ConversationRecord& r) { r.agent_responses.push_back(current_.text); });
  auto begin = [generation](Conversation& c) {
    if (generation != c.reply_generation_) return;
    if (c.options_.internal_events) {
      c.Send({{"type", "internal_tentative_agent_response"},
              {"tentative_agent_response_internal_event",
               {{"tentative_agent_response", c.current_.text}}}});
    }
    if (c.options_.agent_response_timing == "first") c.SendAgentResponse();
    c.SendReplyChunk(generation, 0);
  };
  if (faults_.stall_ms > 0 && !stalled_once_) {
    stalled_once_ = true;
    reply_timer_ = After(absl::Milliseconds(faults_.stall_ms), begin);
  } else {
    begin(*this);
  }
}

void Conversation::SendAgentResponse() {
  if (response_text_sent_) return;
  response_text_sent_ = true;
  Send({{"type", "agent_response"},
        {"agent_response_event",
         {{"agent_response", current_.text}, {"event_id", response_event_id_}}}});
}

// The characters samples [begin, begin + n) speak, spread evenly over the voice.
nlohmann::json Conversation::Alignment(size_t begin, size_t n) const {
  const size_t total = voice_->pcm.size(), count = current_chars_.size();
  const size_t first = begin * count / total;
  const size_t last = begin + n >= total ? count : (begin + n) * count / total;
  const double ms_per_char = 1000.0 * static_cast<double>(total) / count / voice_->rate;
  const double chunk_start_ms = 1000.0 * static_cast<double>(begin) / voice_->rate;
  json chars = json::array(), starts = json::array(), durations = json::array();
  for (size_t i = first; i < last; ++i) {
    chars.push_back(current_chars_[i]);
    starts.push_back(static_cast<int>(i * ms_per_char - chunk_start_ms));
    durations.push_back(static_cast<int>(ms_per_char));
  }
  return {{"chars", chars}, {"char_start_times_ms", starts}, {"char_durations_ms", durations}};
}

std::string Conversation::EncodeOutput(size_t begin, size_t n) const {
  const int16_t* pcm = voice_->pcm.data() + begin;
  if (!IsUlaw(options_.output_format)) {
    return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(pcm), n * 2));
  }
  std::string bytes(n, '\0');
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>(linear_to_ulaw(pcm[i]));
  return absl::Base64Escape(bytes);
}

void Conversation::SendReplyChunk(uint64_t generation, size_t index) {
  if (generation != reply_generation_ || closing_) return;
  const size_t chunk = static_cast<size_t>(voice_->rate) * options_.reply_chunk_ms / 1000;
  const size_t begin = index * chunk;
  const size_t n = std::min(chunk, voice_->pcm.size() - std::min(begin, voice_->pcm.size()));
  const bool last = begin + n >= voice_->pcm.size();
  json event = {{"audio_base_64", EncodeOutput(begin, n)}, {"event_id", response_event_id_}};
  if (options_.alignment && !current_chars_.empty()) event["alignment"] = Alignment(begin, n);
  spoken_samples_ = begin + n;
  if (last && options_.emit_final_markers) event["is_final"] = true;
  Send({{"type", "audio"}, {"audio_event", event}});
  if (options_.agent_response_timing == "after_first_audio") SendAgentResponse();
  state_->Update(record_, [&](ConversationRecord& r) {
    r.reply_seconds_sent += static_cast<double>(n) / voice_->rate;
    if (last) ++r.replies_completed;
  });
  if (last) {
    SendAgentResponse();  // "end" timing: after the audio, as seen live
    if (options_.emit_final_markers) {
      Send({{"type", "agent_response_complete"},
            {"agent_response_complete_event", {{"event_id", next_event_id_++}}}});
    }
    if (current_.end_call) {
      EndCall();
    } else if (pending_responses_.empty()) {
      NextResponse();  // none left: the reply is over
    } else {
      // The next response of the same turn, after a pause.
      reply_timer_ = After(absl::Milliseconds(options_.reply_gap_ms),
                           [generation](Conversation& c) {
                             if (generation == c.reply_generation_) c.NextResponse();
                           });
    }
    return;
  }
  absl::Duration gap = options_.reply_pace > 0
                           ? absl::Milliseconds(options_.reply_chunk_ms / options_.reply_pace)
                           : absl::ZeroDuration();
  // Live audio pauses mid-reply (tools, slow LLM turns): once, in the middle.
  const size_t chunks = (voice_->pcm.size() + chunk - 1) / chunk;
  if (index + 1 == chunks / 2) gap += absl::Milliseconds(options_.reply_gap_ms);
  reply_timer_ = After(gap, [generation, index](Conversation& c) {
    c.SendReplyChunk(generation, index + 1);
  });
}

// The end_call system tool: request, response, then the server closes 1000.
void Conversation::EndCall() {
  const std::string call_id = absl::StrCat("toolu_", RandomHex(8));
  Send({{"type", "agent_tool_request"},
        {"agent_tool_request",
         {{"tool_name", "end_call"}, {"tool_call_id", call_id}, {"tool_type", "system"},
          {"event_id", next_event_id_++}}}});
  Send({{"type", "agent_tool_response"},
        {"agent_tool_response",
         {{"tool_name", "end_call"}, {"tool_call_id", call_id}, {"tool_type", "system"},
          {"is_error", false}, {"is_called", true}, {"event_id", next_event_id_++}}}});
  state_->Update(record_, [](ConversationRecord& r) { r.ended_by_agent = true; });
  replying_ = false;
  closing_ = true;
  conn_->Close(1000, "end_call");
}

// The agent's turn timeout: a silent user is asked whether they are there.
void Conversation::ArmReengage() {
  CancelReengage();
  if (options_.turn_timeout_s <= 0) return;
  reengage_timer_ = After(absl::Seconds(options_.turn_timeout_s), [](Conversation& c) {
    c.reengage_timer_ = 0;
    c.state_->Update(c.record_, [](ConversationRecord& r) { ++r.reengagements; });
    c.StartReply({{kReengage}});
  });
}

void Conversation::CancelReengage() {
  if (reengage_timer_ != 0) conn_->Cancel(reengage_timer_);
  reengage_timer_ = 0;
}

void Conversation::Interrupt() {
  const bool cut_text = replying_ && response_text_sent_ && !current_chars_.empty();
  replying_ = false;
  greeting_playing_ = false;
  pending_responses_.clear();
  ++reply_generation_;
  conn_->Cancel(reply_timer_);
  state_->Update(record_, [](ConversationRecord& r) { ++r.interruptions; });
  Send({{"type", "interruption"}, {"interruption_event", {{"event_id", next_event_id_++}}}});
  if (cut_text) {
    // What the user heard of the cut response (PROTOCOLS.md B3).
    const size_t heard = spoken_samples_ * current_chars_.size() / voice_->pcm.size();
    std::string corrected;
    for (size_t i = 0; i < heard; ++i) corrected += current_chars_[i];
    Send({{"type", "agent_response_correction"},
          {"agent_response_correction_event",
           {{"original_agent_response", current_.text},
            {"corrected_agent_response", corrected},
            {"event_id", response_event_id_}}}});
  }
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
