#include "sim_state.h"

#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace bridge::elevenlabs_sim {
namespace {
std::string Iso(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}
}  // namespace

std::string RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes);
  return absl::BytesToHexString(raw);
}

nlohmann::json ToolCallRecord::ToJson() const {
  return {{"tool_call_id", tool_call_id}, {"tool_name", tool_name}, {"parameters", parameters},
          {"status", status},             {"result", result},       {"is_error", is_error}};
}

nlohmann::json ConversationRecord::ToJson() const {
  nlohmann::json j = {
      {"conversation_id", conversation_id},
      {"agent_id", agent_id},
      {"user_id", user_id},
      {"dynamic_variables", dynamic_variables},
      {"started_at", Iso(started_at)},
      {"ended", ended},
      {"audio_seconds_received", audio_seconds_received},
      {"messages_received", messages_received},
      {"user_messages", user_messages},
      {"contextual_updates", contextual_updates},
      {"transcripts", transcripts},
      {"agent_responses", agent_responses},
      {"user_activity", user_activity},
      {"interruptions", interruptions},
      {"pings_sent", pings_sent},
      {"pongs_received", pongs_received},
      {"replies_completed", replies_completed},
      {"reply_seconds_sent", reply_seconds_sent},
      {"reengagements", reengagements},
      {"ignored_during_greeting", ignored_during_greeting},
      {"ended_by_agent", ended_by_agent},
      {"initiation_client_data", initiation_client_data},
      {"conversation_config_override", conversation_config_override},
      {"timeline", timeline},
      {"deleted", deleted},
  };
  nlohmann::json calls = nlohmann::json::array();
  for (const ToolCallRecord& c : client_tool_calls) calls.push_back(c.ToJson());
  j["client_tool_calls"] = std::move(calls);
  if (deleted) j["deleted_at"] = Iso(deleted_at);
  if (ended) {
    j["ended_at"] = Iso(ended_at);
    j["close_code"] = close_code;
    j["close_reason"] = close_reason;
    j["closed_by"] = closed_by;
    j["error_type"] = error_type;
  }
  return j;
}

std::string SimState::IssueSignedToken(absl::Duration ttl) {
  std::string token = absl::StrCat("cvtkn_", RandomHex(16));
  absl::MutexLock lock(&mu_);
  tokens_[token] = absl::Now() + ttl;
  return token;
}

bool SimState::RedeemSignedToken(const std::string& token) {
  absl::MutexLock lock(&mu_);
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return false;
  bool fresh = absl::Now() < it->second;
  tokens_.erase(it);
  return fresh;
}

bool SimState::TryAdmit() {
  absl::MutexLock lock(&mu_);
  if (max_conversations_ > 0 && active_ >= max_conversations_) {
    ++refused_;
    return false;
  }
  ++active_;
  return true;
}

void SimState::Release() {
  absl::MutexLock lock(&mu_);
  --active_;
}

std::shared_ptr<ConversationRecord> SimState::NewConversation(const std::string& agent_id) {
  auto r = std::make_shared<ConversationRecord>();
  r->conversation_id = absl::StrCat("conv_", RandomHex(12));
  r->agent_id = agent_id;
  r->started_at = absl::Now();
  absl::MutexLock lock(&mu_);
  conversations_.push_back(r);
  return r;
}

int SimState::CountLocked(bool ended_only) const {
  if (!ended_only) return static_cast<int>(conversations_.size());
  int n = 0;
  for (const auto& c : conversations_) n += c->ended ? 1 : 0;
  return n;
}

nlohmann::json SimState::Snapshot(int min_count, bool ended_only, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || CountLocked(ended_only) >= min_count;
  };
  mu_.AwaitWithTimeout(absl::Condition(&enough), wait);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& c : conversations_) list.push_back(c->ToJson());
  return {{"conversations", list}, {"active", active_}, {"refused", refused_}};
}

bool SimState::DeleteConversation(const std::string& conversation_id) {
  absl::MutexLock lock(&mu_);
  for (const auto& c : conversations_) {
    if (c->conversation_id != conversation_id) continue;
    if (c->deleted) return false;
    c->deleted = true;
    c->deleted_at = absl::Now();
    return true;
  }
  return false;
}

void SimState::RecordTranscription(nlohmann::json entry) {
  absl::MutexLock lock(&mu_);
  transcriptions_.push_back(std::move(entry));
}

nlohmann::json SimState::Transcriptions() {
  absl::MutexLock lock(&mu_);
  return {{"transcriptions", transcriptions_}};
}

void SimState::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

std::string SimState::SetFaults(const nlohmann::json& body) {
  if (!body.is_object()) return "faults must be a JSON object";
  absl::MutexLock lock(&mu_);
  int count = body.value("count", 1);
  if (body.contains("close_after_messages") || body.contains("stall_ms")) {
    faults_.close_after_messages = body.value("close_after_messages", 0);
    faults_.close_code = body.value("close_code", 1011);
    faults_.stall_ms = body.value("stall_ms", 0);
    conversation_fault_count_ = count;
  }
  if (body.contains("signed_url_status")) {
    signed_url_status_ = body["signed_url_status"].get<int>();
    retry_after_s_ = body.value("retry_after_s", 0);
    signed_url_count_ = count;
  }
  return "";
}

void SimState::ClearFaults() {
  absl::MutexLock lock(&mu_);
  faults_ = ConversationFaults();
  conversation_fault_count_ = signed_url_count_ = signed_url_status_ = retry_after_s_ = 0;
}

ConversationFaults SimState::TakeConversationFaults() {
  absl::MutexLock lock(&mu_);
  if (conversation_fault_count_ <= 0) return ConversationFaults();
  --conversation_fault_count_;
  return faults_;
}

std::pair<int, int> SimState::TakeSignedUrlFault() {
  absl::MutexLock lock(&mu_);
  if (signed_url_count_ <= 0 || signed_url_status_ == 0) return {0, 0};
  --signed_url_count_;
  return {signed_url_status_, retry_after_s_};
}

}  // namespace bridge::elevenlabs_sim
