// AgentSession over ws::ClientPool. Three pieces:
//  - Core: the conversation's state, shared by the session object, the
//    handler and the timers. Protocol state touched only by the io thread
//    needs no lock; what callers' threads touch is under `mu_`.
//  - Handler: what the pool owns; it holds the Core weakly, so a session
//    that is gone is simply not told about the rest of its socket's life.
//  - SessionImpl: the caller's handle; destroying it closes the conversation.
//
// User callbacks run under `cb_mu_` and only while not detached, so once
// Close() returns (from any thread but a callback, which cannot wait for
// itself) no callback is running and none will start.
#include "media_worker/agent_session.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent_protocol.h"
#include "elevenlabs_rest.h"
#include "event_counters.h"
#include "reply_evidence.h"
#include "common/log.h"
#include "common/redact.h"
#include "nlohmann/json.hpp"
#include "ws/websocket.h"

namespace bridge::media_worker {
namespace {

using nlohmann::json;
namespace ai = agent_internal;

// Sends made before the conversation starts wait here; a server that never
// starts one must not grow it without bound (≈ 8 min of 16 kHz audio).
constexpr size_t kMaxQueuedBytes = 20 << 20;
// Close reasons travel in a control frame: at most 123 bytes.
constexpr size_t kMaxCloseReason = 123;

// Server messages we understand but do not use (PROTOCOLS.md B3).
bool KnownIgnoredType(const std::string& type) {
  static const std::set<std::string> kTypes = {
      "tentative_user_transcript", "vad_score",       "agent_chat_response_part",
      "context_usage",             "queue_status",    "agent_typing",
      "asr_initiation_metadata",   "guardrail_triggered", "rich_content"};
  return kTypes.count(type) > 0 || absl::StartsWith(type, "internal_") ||
         absl::StartsWith(type, "mcp_");
}

// The event object of a message ({"type":"x","x_event":{...}}), or an empty one.
const json& EventOf(const json& msg, const char* key) {
  static const json kEmpty = json::object();
  auto it = msg.find(key);
  return it != msg.end() && it->is_object() ? *it : kEmpty;
}

std::string StringField(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A server-side tool event's object: keyed by the type, or by type + "_event".
const json& ToolEventOf(const json& msg, const std::string& type) {
  const json& ev = EventOf(msg, type.c_str());
  return ev.empty() ? EventOf(msg, (type + "_event").c_str()) : ev;
}

// The characters an audio chunk speaks (audio_event.alignment.chars).
std::optional<std::string> AlignedChars(const json& audio_event) {
  auto al = audio_event.find("alignment");
  if (al == audio_event.end() || !al->is_object()) return std::nullopt;
  auto chars = al->find("chars");
  if (chars == al->end() || !chars->is_array()) return std::nullopt;
  std::string out;
  for (const json& c : *chars) {
    if (c.is_string()) out += c.get_ref<const std::string&>();
  }
  return out;
}

// A float id is taken when it fits int64; converting one that does not
// (1e300, from a hostile or broken server) would be undefined behaviour.
std::optional<int64_t> IdField(const json& obj) {
  auto it = obj.find("event_id");
  if (it == obj.end() || !it->is_number()) return std::nullopt;
  if (it->is_number_float()) {
    const double d = it->get<double>();
    constexpr double kLimit = 9223372036854775808.0;  // 2^63
    if (!(d >= -kLimit && d < kLimit)) return std::nullopt;
    return static_cast<int64_t>(d);
  }
  return it->get<int64_t>();
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(const AgentOptions& options, AgentEvents events, std::string host)
      : options_(options), host_(std::move(host)), events_(std::move(events)) {}

  absl::Status Connect(ws::ClientPool* pool, const std::string& url);

  // Any thread.
  void SendUser(std::string message);
  void Close();
  void BeginTurn();
  void CloseWhenIdle(absl::Duration linger);
  std::string conversation_id() const {
    absl::MutexLock lock(&mu_);
    return conversation_id_;
  }
  int input_rate() const {
    absl::MutexLock lock(&mu_);
    return input_rate_;
  }
  int output_rate() const {
    absl::MutexLock lock(&mu_);
    return output_rate_;
  }
  // Audio sent before the metadata names the format goes as PCM.
  bool input_ulaw() const {
    absl::MutexLock lock(&mu_);
    return input_ulaw_;
  }

  // io thread.
  void OnText(const std::string& text);
  void OnClose(int code, const std::string& reason, bool remote);
  void OnFail(const std::string& error, int http_status);
  void CountIgnored(const std::string& type);

 private:
  template <typename Fn>
  void Emit(Fn&& fn);
  void Detach();
  void SendNow(std::string message);
  std::shared_ptr<ws::Connection> connection() const {
    absl::MutexLock lock(&mu_);
    return conn_;
  }

  void Dispatch(const std::string& type, const json& msg);
  void OnMetadata(const json& msg);
  void Flush();
  void OnAudio(const json& msg);
  void OnAgentResponse(const json& msg);
  void OnCorrection(const json& msg);
  void OnToolEvent(const std::string& type, const json& msg);
  void OnInterruption(const json& msg);
  void OnToolCall(const json& msg);
  void OnError(const json& msg);
  void Fatal(int code, const std::string& reason);
  bool Stale(std::optional<int64_t> event_id);
  void ApplyTurnStart();
  void Reassess();
  void ArmReplyTimer(absl::Duration after, ReplyEnd why);
  void CancelQuietGap();
  void OnReplyTimer(uint64_t generation, ReplyEnd why);
  void EndReply(ReplyEnd why);
  void OnIdle(uint64_t generation);

  const AgentOptions options_;
  const std::string host_;  // host[:port] only: the URL's query may be a secret

  // Held while a user callback runs; see the file comment.
  absl::Mutex cb_mu_;
  AgentEvents events_ ABSL_GUARDED_BY(cb_mu_);
  // Written under cb_mu_ (by Detach, which on the emitting thread already
  // holds it), read under it by Emit; atomic so that proof needs no analysis.
  std::atomic<bool> detached_{false};
  std::atomic<std::thread::id> emitting_thread_{};

  mutable absl::Mutex mu_;
  std::shared_ptr<ws::Connection> conn_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // queued sends flushed
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // Close() was called
  std::vector<std::string> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool queue_full_logged_ ABSL_GUARDED_BY(mu_) = false;
  std::string conversation_id_ ABSL_GUARDED_BY(mu_);
  int input_rate_ ABSL_GUARDED_BY(mu_) = 0;
  int output_rate_ ABSL_GUARDED_BY(mu_) = 0;
  bool input_ulaw_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t turn_generation_ ABSL_GUARDED_BY(mu_) = 0;  // BeginTurn() calls
  uint64_t idle_generation_ ABSL_GUARDED_BY(mu_) = 0;  // CloseWhenIdle timers

  // io thread only.
  bool metadata_seen_ = false;
  bool output_ulaw_ = false;        // the agent speaks μ-law (set with the metadata)
  bool finished_ = false;           // on_closed delivered (or due)
  std::string fatal_reason_;        // we closed: retrying cannot help
  std::string last_error_;          // from the server's error event
  bool interrupted_ = false;
  int64_t last_interruption_ = 0;   // audio at or below this id is stale
  int64_t stale_dropped_ = 0;
  bool reply_open_ = false;         // a reply began and has not ended
  uint64_t quiet_generation_ = 0;   // invalidates reply timers
  uint64_t quiet_timer_ = 0;
  int64_t last_event_id_ = 0;       // highest agent audio/text event id seen
  uint64_t applied_turn_ = 0;       // the turn_generation_ the evidence belongs to
  int64_t turn_fence_ = 0;          // agent events at or below it predate the turn
  agent_internal::ReplyEvidence evidence_;
  std::map<std::string, int64_t> ignored_;  // by type
};

class Handler : public ws::ConnectionHandler {
 public:
  explicit Handler(std::weak_ptr<Core> core) : core_(std::move(core)) {}
  void OnText(const std::string& text) override {
    if (auto core = core_.lock()) core->OnText(text);
  }
  void OnBinary(const std::string&) override {
    if (auto core = core_.lock()) core->CountIgnored("binary frame");
  }
  void OnClose(int code, const std::string& reason, bool remote) override {
    if (auto core = core_.lock()) core->OnClose(code, reason, remote);
  }
  void OnFail(const std::string& error, int http_status) override {
    if (auto core = core_.lock()) core->OnFail(error, http_status);
  }

 private:
  const std::weak_ptr<Core> core_;
};

// ---- lifetime ----

template <typename Fn>
void Core::Emit(Fn&& fn) {
  absl::MutexLock lock(&cb_mu_);
  if (detached_.load()) return;
  emitting_thread_.store(std::this_thread::get_id());
  fn(events_);
  emitting_thread_.store(std::thread::id());
}

void Core::Detach() {
  // Inside one of our callbacks (Close() or the destructor from a callback)
  // this thread already holds cb_mu_; locking again would deadlock.
  if (emitting_thread_.load() == std::this_thread::get_id()) {
    detached_.store(true);
    return;
  }
  absl::MutexLock lock(&cb_mu_);
  detached_.store(true);
}

absl::Status Core::Connect(ws::ClientPool* pool, const std::string& url) {
  ws::ClientOptions co;
  co.url = url;
  co.ca_file = options_.ca_file;
  co.open_timeout = options_.connect_timeout;
  {
    // Held across Connect so io-thread handlers (a ping's pong) wait for conn_.
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<ws::Connection>> conn =
        pool->Connect(co, std::make_shared<Handler>(weak_from_this()));
    if (!conn.ok()) return RedactStatus(conn.status());
    conn_ = *std::move(conn);
    // Queued before anything a caller sends, so it is the first frame on the
    // socket, as the protocol wants.
    conn_->SendText(ai::InitiationMessage(options_.user_id, options_.dynamic_variables));
  }
  LogInfo("agent connecting", {{"host", host_}, {"signed", options_.api_key.empty() ? "no" : "yes"}});
  return absl::OkStatus();
}

void Core::Close() {
  Detach();
  absl::MutexLock lock(&mu_);
  if (closing_) return;
  closing_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  // Posts to the io thread; before open it closes as soon as it opens.
  if (conn_) conn_->Close(ws::kCloseNormal, "client closed");
}

void Core::BeginTurn() {
  absl::MutexLock lock(&mu_);
  ++turn_generation_;
}

void Core::CloseWhenIdle(absl::Duration linger) {
  absl::MutexLock lock(&mu_);
  if (closing_ || !conn_) return;
  const uint64_t generation = ++idle_generation_;
  conn_->Schedule(linger, [weak = weak_from_this(), generation] {
    if (auto core = weak.lock()) core->OnIdle(generation);
  });
}

// io thread: nothing was sent since CloseWhenIdle. Closed without Detach, so
// the owner hears on_closed and opens a new conversation for the next turn.
void Core::OnIdle(uint64_t generation) {
  std::shared_ptr<ws::Connection> conn;
  {
    absl::MutexLock lock(&mu_);
    if (generation != idle_generation_ || closing_ || !conn_) return;
    conn = conn_;
  }
  LogInfo("closing idle agent conversation", {{"host", host_}});
  conn->Close(ws::kCloseNormal, "idle");
}

// ---- sending ----

void Core::SendUser(std::string message) {
  absl::MutexLock lock(&mu_);
  if (closing_ || !conn_) return;
  ++idle_generation_;  // input cancels a pending idle close
  if (started_) {
    conn_->SendText(std::move(message));
    return;
  }
  // Until the metadata names the input format, keep user input in order.
  if (queued_bytes_ + message.size() > kMaxQueuedBytes) {
    if (!queue_full_logged_) {
      LogWarn("agent send queue full before the conversation started; dropping input",
              {{"host", host_}});
      queue_full_logged_ = true;
    }
    return;
  }
  queued_bytes_ += message.size();
  queue_.push_back(std::move(message));
}

// Protocol answers (pong, tool result): not user input, never queued.
void Core::SendNow(std::string message) {
  absl::MutexLock lock(&mu_);
  if (conn_) conn_->SendText(std::move(message));
}

void Core::Flush() {
  absl::MutexLock lock(&mu_);
  started_ = true;
  if (closing_ || !conn_) return;
  for (std::string& m : queue_) conn_->SendText(std::move(m));
  queue_.clear();
  queued_bytes_ = 0;
}

// ---- receiving (io thread) ----

void Core::OnText(const std::string& text) {
  if (!fatal_reason_.empty()) return;  // closing: what follows is in a format we refused
  json msg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!msg.is_object()) {
    CountIgnored("not a JSON object");
    return;
  }
  const std::string type = StringField(msg, "type");
  ApplyTurnStart();
  try {
    Dispatch(type, msg);
  } catch (const json::exception& e) {
    // A field of an unexpected type: skip the message, keep the conversation.
    LogWarn("malformed agent message", {{"type", type}, {"error", e.what()}});
    CountIgnored(type);
  }
}

void Core::Dispatch(const std::string& type, const json& msg) {
  if (type == "ping") {
    // At once, whatever ping_ms says: a late pong only risks the socket.
    if (auto id = IdField(EventOf(msg, "ping_event"))) SendNow(ai::PongMessage(*id));
  } else if (type == "audio") {
    OnAudio(msg);
  } else if (type == "agent_response") {
    OnAgentResponse(msg);
  } else if (type == "user_transcript") {
    std::string t = StringField(EventOf(msg, "user_transcription_event"), "user_transcript");
    Emit([&](AgentEvents& ev) {
      if (ev.on_user_transcript) ev.on_user_transcript(t);
    });
  } else if (type == "interruption") {
    OnInterruption(msg);
  } else if (type == "agent_response_correction") {
    OnCorrection(msg);
  } else if (type == "agent_tool_request" || type == "agent_tool_response") {
    OnToolEvent(type, msg);
  } else if (type == "agent_response_complete") {
    EndReply(ReplyEnd::kMarker);
  } else if (type == "conversation_initiation_metadata") {
    OnMetadata(msg);
  } else if (type == "client_tool_call") {
    OnToolCall(msg);
  } else if (type == "error") {
    OnError(msg);
  } else {
    CountIgnored(type);
  }
}

void Core::CountIgnored(const std::string& type) {
  if (++ignored_[type] == 1 && !KnownIgnoredType(type)) {
    LogDebug("ignoring unknown agent message type", {{"type", type}, {"host", host_}});
  }
}

void Core::OnMetadata(const json& msg) {
  if (metadata_seen_) return;  // the protocol sends it once; a repeat changes nothing
  metadata_seen_ = true;
  const json& ev = EventOf(msg, "conversation_initiation_metadata_event");
  const std::string id = StringField(ev, "conversation_id");
  std::string in_format = StringField(ev, "user_input_audio_format");
  std::string out_format = StringField(ev, "agent_output_audio_format");
  absl::StatusOr<ai::AudioFormat> in =
      ai::ParseAudioFormat(in_format.empty() ? "pcm_16000" : in_format);
  absl::StatusOr<ai::AudioFormat> out =
      ai::ParseAudioFormat(out_format.empty() ? "pcm_16000" : out_format);
  if (!in.ok() || !out.ok()) {
    Fatal(ai::kCloseUnsupportedData, std::string((in.ok() ? out : in).status().message()));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    conversation_id_ = id;
    input_rate_ = in->rate;
    output_rate_ = out->rate;
    input_ulaw_ = in->ulaw;
  }
  output_ulaw_ = out->ulaw;
  LogInfo("agent conversation started", {{"conversation_id", id}, {"host", host_},
                                         {"input_format", in_format},
                                         {"output_format", out_format}});
  Emit([&](AgentEvents& e) {
    if (e.on_started) e.on_started(id, in->rate, out->rate);
  });
  Flush();
}

// Audio or text from before the user cut in or before the current turn
// began: playing it would talk over the user or leak into the wrong reply.
bool Core::Stale(std::optional<int64_t> event_id) {
  if (!event_id) return false;
  if ((interrupted_ && *event_id <= last_interruption_) || *event_id <= turn_fence_) {
    ++stale_dropped_;
    return true;
  }
  last_event_id_ = std::max(last_event_id_, *event_id);
  return false;
}

void Core::ApplyTurnStart() {
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    generation = turn_generation_;
  }
  if (generation == applied_turn_) return;
  applied_turn_ = generation;
  turn_fence_ = last_event_id_;
  reply_open_ = false;
  evidence_.Reset();
  CancelQuietGap();
}

void Core::OnAudio(const json& msg) {
  const json& ev = EventOf(msg, "audio_event");
  std::optional<int64_t> id = IdField(ev);
  auto final_it = ev.find("is_final");
  const bool is_final = final_it != ev.end() && final_it->is_boolean() && final_it->get<bool>();
  if (Stale(id)) return;
  std::optional<std::vector<int16_t>> pcm =
      ai::DecodeAudio(StringField(ev, "audio_base_64"), output_ulaw_);
  if (!pcm) {
    LogWarn("agent audio is not base64; skipped", {{"host", host_}});
  } else if (!pcm->empty()) {
    reply_open_ = true;
    Emit([&](AgentEvents& e) {
      if (e.on_audio) e.on_audio(std::move(*pcm), id.value_or(0));
    });
  }
  if (std::optional<std::string> chars = AlignedChars(ev)) evidence_.AddAligned(*chars);
  if (is_final) {
    EndReply(ReplyEnd::kMarker);
  } else {
    Reassess();
  }
}

void Core::OnAgentResponse(const json& msg) {
  const json& ev = EventOf(msg, "agent_response_event");
  if (Stale(IdField(ev))) return;
  std::string text = StringField(ev, "agent_response");
  Emit([&](AgentEvents& e) {
    if (e.on_agent_response) e.on_agent_response(text);
  });
  // It may come before, with or after the audio; either way it opens a reply
  // (a text-only reply too) and tells what the alignment must cover.
  reply_open_ = true;
  evidence_.AddText(text);
  Reassess();
}

void Core::OnCorrection(const json& msg) {
  const json& ev = EventOf(msg, "agent_response_correction_event");
  const std::string original = StringField(ev, "original_agent_response");
  const std::string corrected = StringField(ev, "corrected_agent_response");
  evidence_.Correct(original, corrected);
  Emit([&](AgentEvents& e) {
    if (e.on_agent_correction) e.on_agent_correction(original, corrected);
  });
}

// Server-side tools: speech pauses while one runs; end_call ends the reply
// (the close 1000 that follows ends the conversation).
void Core::OnToolEvent(const std::string& type, const json& msg) {
  const json& ev = ToolEventOf(msg, type);
  const std::string tool = StringField(ev, "tool_name");
  if (type == "agent_tool_request") {
    evidence_.ToolRequested();
    if (reply_open_) Reassess();
    return;
  }
  evidence_.ToolResponded();
  if (tool == "end_call") {
    LogInfo("agent ended the call", {{"host", host_}});
    EndReply(ReplyEnd::kEndCall);
  } else if (reply_open_) {
    Reassess();
  }
}

void Core::OnInterruption(const json& msg) {
  std::optional<int64_t> id = IdField(EventOf(msg, "interruption_event"));
  if (id) {
    interrupted_ = true;
    last_interruption_ = std::max(last_interruption_, *id);
  }
  // The cut reply ends here, with on_interruption rather than on_reply_end:
  // the next reply end belongs to the user's new turn.
  reply_open_ = false;
  evidence_.Reset();
  CancelQuietGap();
  Emit([&](AgentEvents& e) {
    if (e.on_interruption) e.on_interruption(id.value_or(0));
  });
}

// The owner decides (e.g. the handoff tool); anything it does not take is
// answered as unsupported, since an agent waiting for a result waits forever.
void Core::OnToolCall(const json& msg) {
  const json& ev = EventOf(msg, "client_tool_call");
  ClientToolCall call;
  call.tool_name = StringField(ev, "tool_name");
  call.tool_call_id = StringField(ev, "tool_call_id");
  auto params = ev.find("parameters");
  call.parameters = params != ev.end() && !params->is_null() ? params->dump() : "{}";
  std::optional<ClientToolResult> answer;
  Emit([&](AgentEvents& e) {
    if (e.on_client_tool_call) answer = e.on_client_tool_call(call);
  });
  if (!answer) {
    LogInfo("agent asked for a client tool we do not have",
            {{"tool", call.tool_name}, {"host", host_}});
    answer = ClientToolResult{absl::StrCat("Client tool '", call.tool_name, "' is not supported"),
                              /*is_error=*/true};
  }
  SendNow(ai::ToolResultMessage(call.tool_call_id, answer->result, answer->is_error));
}

void Core::OnError(const json& msg) {
  const json& ev = EventOf(msg, "error_event");
  last_error_ = StringField(ev, "error_type");
  if (last_error_.empty()) last_error_ = StringField(ev, "reason");
  if (last_error_.empty()) last_error_ = StringField(ev, "message");
  LogWarn("agent sent an error", {{"host", host_}, {"error_type", StringField(ev, "error_type")},
                                  {"message", StringField(ev, "message")}});
}

void Core::Fatal(int code, const std::string& reason) {
  fatal_reason_ = reason;
  LogWarn("closing agent conversation", {{"host", host_}, {"reason", reason}});
  if (auto conn = connection()) conn->Close(code, reason.substr(0, kMaxCloseReason));
}

// ---- the end of a reply (PROTOCOLS.md B4) ----

// Weighs the evidence after every agent event of an open reply and arms the
// one timer that ends it: a short settle once the text is covered, else a
// quiet gap, four times longer while alignment says there is more to come or
// a tool runs.
void Core::Reassess() {
  if (!reply_open_) return;
  const absl::Duration gap = options_.reply_quiet_gap;
  const bool covered = evidence_.Covered();
  if (evidence_.tool_running() || (evidence_.alignment_seen() && !covered)) {
    // A tool runs, or the alignment says there is more to come: the gap is
    // only a last resort here (text-to-speech may spell out what the text
    // abbreviates, and then the alignment never quite covers it).
    ArmReplyTimer(gap * 4, ReplyEnd::kQuietGap);
  } else if (covered) {
    ArmReplyTimer(options_.reply_settle, ReplyEnd::kAligned);
  } else {
    ArmReplyTimer(gap, ReplyEnd::kQuietGap);
  }
}

void Core::ArmReplyTimer(absl::Duration after, ReplyEnd why) {
  CancelQuietGap();
  std::shared_ptr<ws::Connection> conn = connection();
  if (!conn) return;
  const uint64_t generation = quiet_generation_;
  quiet_timer_ = conn->Schedule(after, [weak = weak_from_this(), generation, why] {
    if (auto core = weak.lock()) core->OnReplyTimer(generation, why);
  });
}

void Core::CancelQuietGap() {
  // The generation bump covers a timer whose expiry is already queued.
  ++quiet_generation_;
  if (quiet_timer_ == 0) return;
  if (auto conn = connection()) conn->Cancel(quiet_timer_);
  quiet_timer_ = 0;
}

void Core::OnReplyTimer(uint64_t generation, ReplyEnd why) {
  if (generation != quiet_generation_) return;
  quiet_timer_ = 0;
  EndReply(why);
}

void Core::EndReply(ReplyEnd why) {
  if (!reply_open_) return;  // one end per reply, whichever signal comes first
  reply_open_ = false;
  evidence_.Reset();
  CancelQuietGap();
  Emit([why](AgentEvents& e) {
    if (e.on_reply_end) e.on_reply_end(why);
  });
}

// ---- the end of the socket ----

void Core::OnClose(int code, const std::string& reason, bool remote) {
  if (finished_) return;
  finished_ = true;
  if (remote) CountAgentClose(code);  // the agent's doing (or the network's), not ours
  reply_open_ = false;
  CancelQuietGap();
  const bool retryable = fatal_reason_.empty() && ai::RetryableCloseCode(code);
  std::string why = !fatal_reason_.empty() ? fatal_reason_ : reason.empty() ? last_error_ : reason;
  why = Redact(why);
  std::string conversation;
  {
    absl::MutexLock lock(&mu_);
    conversation = conversation_id_;
    queue_.clear();
    queued_bytes_ = 0;
  }
  int64_t ignored = 0;
  for (const auto& [type, n] : ignored_) ignored += n;
  LogInfo("agent conversation closed",
          {{"conversation_id", conversation}, {"host", host_}, {"code", code}, {"reason", why},
           {"retryable", retryable ? "yes" : "no"}, {"ignored_messages", ignored},
           {"stale_audio_dropped", stale_dropped_}});
  Emit([&](AgentEvents& e) {
    if (e.on_closed) e.on_closed(code, why, retryable);
  });
}

void Core::OnFail(const std::string& error, int http_status) {
  if (finished_) return;
  finished_ = true;
  if (http_status != 0) CountAgentRefusal(http_status);  // 429: the plan's concurrency limit
  const bool retryable = ai::RetryableConnectFailure(http_status);
  const std::string why = Redact(error);  // names host:port only; redacted all the same
  LogWarn("agent connect failed", {{"host", host_}, {"error", why},
                                   {"retryable", retryable ? "yes" : "no"}});
  Emit([&](AgentEvents& e) {
    if (e.on_closed) e.on_closed(0, why, retryable);
  });
}

// ---- the caller's handle ----

class SessionImpl final : public AgentSession {
 public:
  explicit SessionImpl(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~SessionImpl() override { core_->Close(); }

  void SendAudio(absl::Span<const int16_t> pcm) override {
    // The SDKs send 25-250 ms chunks; a whole note in one frame is untested
    // ground, so split big spans (at 16 kHz until the real rate is known).
    const int known = core_->input_rate();
    const int rate = known > 0 ? known : 16000;
    const size_t chunk = static_cast<size_t>(rate) / 4;
    const bool ulaw = core_->input_ulaw();
    for (size_t off = 0; off < pcm.size(); off += chunk) {
      core_->SendUser(
          ai::AudioMessage(pcm.subspan(off, std::min(chunk, pcm.size() - off)), ulaw));
    }
  }
  void SendText(const std::string& text) override { core_->SendUser(ai::UserMessage(text)); }
  void SendContextualUpdate(const std::string& text) override {
    core_->SendUser(ai::ContextualUpdateMessage(text));
  }
  void SendUserActivity() override { core_->SendUser(ai::UserActivityMessage()); }
  void BeginTurn() override { core_->BeginTurn(); }
  void CloseWhenIdle(absl::Duration linger) override { core_->CloseWhenIdle(linger); }
  void Close() override { core_->Close(); }

  std::string conversation_id() const override { return core_->conversation_id(); }
  int input_rate() const override { return core_->input_rate(); }
  int output_rate() const override { return core_->output_rate(); }

 private:
  const std::shared_ptr<Core> core_;
};

absl::StatusOr<std::string> ConversationUrl(const AgentOptions& options, const std::string& base) {
  if (options.api_key.empty()) return ai::PublicAgentUrl(base, options.agent_id);
  if (!absl::StartsWithIgnoreCase(base, "http")) {
    return absl::InvalidArgumentError("a signed URL needs an http(s):// ELEVENLABS_BASE_URL");
  }
  absl::StatusOr<std::string> url = ai::FetchSignedUrl(
      {base, options.agent_id, options.api_key, options.ca_file, options.connect_timeout});
  if (!url.ok()) {
    absl::Status status = RedactStatus(url.status());
    LogWarn("agent signed URL request failed", {{"host", ai::HostOf(base)}, {"error", status}});
    return status;
  }
  return url;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AgentSession>> AgentSession::Start(const AgentOptions& options,
                                                                 AgentEvents events,
                                                                 ws::ClientPool* pool) {
  if (pool == nullptr) return absl::InvalidArgumentError("AgentSession needs a ws::ClientPool");
  if (options.agent_id.empty()) return absl::InvalidArgumentError("ELEVENLABS_AGENT_ID is not set");
  if (options.reply_quiet_gap <= absl::ZeroDuration() ||
      options.reply_settle <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("reply_quiet_gap and reply_settle must be positive");
  }
  absl::StatusOr<std::string> base = ai::NormalizeBaseUrl(options.base_url);
  if (!base.ok()) return base.status();
  // Before anything could echo it: the logger redacts registered secrets.
  if (!options.api_key.empty()) RegisterSecret(options.api_key);
  absl::StatusOr<std::string> url = ConversationUrl(options, *base);
  if (!url.ok()) return url.status();
  auto core = std::make_shared<Core>(options, std::move(events), ai::HostOf(*url));
  if (absl::Status s = core->Connect(pool, *url); !s.ok()) return s;
  return std::unique_ptr<AgentSession>(new SessionImpl(std::move(core)));
}

}  // namespace bridge::media_worker
