// What the simulator remembers across connections: every conversation and
// what happened in it (for /sim/conversations), issued signed-URL tokens, the
// concurrency count and the faults operators or tests asked for. Shared by the
// io thread and /sim/ long polls, so everything is under one mutex.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace bridge::elevenlabs_sim {

// A client tool call the agent made (the handoff) and what came of it.
struct ToolCallRecord {
  std::string tool_call_id;
  std::string tool_name;
  nlohmann::json parameters = nlohmann::json::object();
  std::string status = "pending";  // "answered" or "timed_out" once settled
  nlohmann::json result;           // client_tool_result.result as sent
  bool is_error = false;

  nlohmann::json ToJson() const;
};

struct ConversationRecord {
  std::string conversation_id;
  std::string agent_id;
  std::string user_id;
  nlohmann::json dynamic_variables = nlohmann::json::object();
  // conversation_initiation_client_data as received (null: none came), and
  // its conversation_config_override (null: none), even when refused.
  nlohmann::json initiation_client_data;
  nlohmann::json conversation_config_override;
  absl::Time started_at;
  absl::Time ended_at;
  bool ended = false;
  int close_code = 0;
  std::string close_reason;
  std::string closed_by;  // "client" or "server"
  std::string error_type; // of the error event the server sent, if any
  double audio_seconds_received = 0;
  std::map<std::string, int> messages_received;  // by type
  std::vector<std::string> user_messages;
  std::vector<std::string> contextual_updates;
  std::vector<std::string> transcripts;
  std::vector<std::string> agent_responses;
  int user_activity = 0;
  int interruptions = 0;
  int pings_sent = 0;
  int pongs_received = 0;
  int replies_completed = 0;
  double reply_seconds_sent = 0;
  int reengagements = 0;  // "are you still there?" after the turn timeout
  int ignored_during_greeting = 0;  // messages an uninterruptible greeting ignored
  bool ended_by_agent = false;  // end_call
  std::vector<ToolCallRecord> client_tool_calls;
  // The text-bearing turns in arrival order ({"type","text"}: user_message,
  // contextual_update, user_transcript; client_tool_result with its
  // tool_call_id): what a memory test checks the order of.
  nlohmann::json timeline = nlohmann::json::array();
  // DELETE /v1/convai/conversations/{id}: kept listed, marked.
  bool deleted = false;
  absl::Time deleted_at;

  nlohmann::json ToJson() const;
};

// Faults one conversation runs with (taken when it opens).
struct ConversationFaults {
  int close_after_messages = 0;  // close after sending this many messages
  int close_code = 1011;
  int stall_ms = 0;              // the first reply starts this late
};

class SimState {
 public:
  explicit SimState(int max_conversations) : max_conversations_(max_conversations) {}

  std::string IssueSignedToken(absl::Duration ttl);
  // A token is good once, before it expires.
  bool RedeemSignedToken(const std::string& token);

  // Counts an open conversation against --max_conversations; false: refused.
  bool TryAdmit();
  void Release();

  std::shared_ptr<ConversationRecord> NewConversation(const std::string& agent_id);
  template <typename Fn>
  void Update(const std::shared_ptr<ConversationRecord>& r, Fn fn) {
    absl::MutexLock lock(&mu_);
    fn(*r);
  }
  // Waits up to `wait` until at least `min_count` conversations exist (ended
  // ones only when `ended_only`), then returns all of them as JSON.
  nlohmann::json Snapshot(int min_count, bool ended_only, absl::Duration wait);

  // Wakes every Snapshot() wait: the server is going away.
  void Stop();

  // POST /sim/faults body; returns an error message or "".
  std::string SetFaults(const nlohmann::json& body);
  void ClearFaults();
  ConversationFaults TakeConversationFaults();
  // Non-zero: answer the signed-URL call with this status (and retry-after).
  std::pair<int, int> TakeSignedUrlFault();

  // DELETE /v1/convai/conversations/{id}: false when no such conversation
  // exists or it was deleted already (the API's 404).
  bool DeleteConversation(const std::string& conversation_id);

  // POST /v1/speech-to-text calls, for /sim/transcriptions.
  void RecordTranscription(nlohmann::json entry);
  nlohmann::json Transcriptions();

 private:
  int CountLocked(bool ended_only) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_conversations_;
  absl::Mutex mu_;
  std::vector<std::shared_ptr<ConversationRecord>> conversations_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> tokens_ ABSL_GUARDED_BY(mu_);
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  int refused_ ABSL_GUARDED_BY(mu_) = 0;
  ConversationFaults faults_ ABSL_GUARDED_BY(mu_);
  int conversation_fault_count_ ABSL_GUARDED_BY(mu_) = 0;
  int signed_url_status_ ABSL_GUARDED_BY(mu_) = 0;
  int signed_url_count_ ABSL_GUARDED_BY(mu_) = 0;
  int retry_after_s_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  nlohmann::json transcriptions_ ABSL_GUARDED_BY(mu_) = nlohmann::json::array();
};

// Random lower-case hex, for ids and tokens.
std::string RandomHex(int bytes);

}  // namespace bridge::elevenlabs_sim
