// What the coordinator's .cc files share and nothing else may use: the
// store's key layout, timestamps, and which turns reach the user.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bridge/v1/worker_link.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"

namespace bridge::controller {

// Sessions that live as long as a worker's stream or call: never stored,
// never timed out as idle, never moved to another worker.
inline bool Ephemeral(const v1::Session& s) {
  return s.kind() == v1::SESSION_KIND_CONVERSE || s.kind() == v1::SESSION_KIND_CALL;
}

// Store keys. Sessions and turns sort by id and sequence, so a prefix range
// returns a session's queue in arrival order.
inline std::string SessionKey(const std::string& id) { return absl::StrCat("s/", id); }
inline std::string TurnPrefix(const std::string& session) {
  return absl::StrCat("t/", session, "/");
}
inline std::string TurnKey(const std::string& session, const std::string& turn_id) {
  return absl::StrCat(TurnPrefix(session), turn_id);
}
inline std::string DedupKey(const std::string& message_id) {
  return absl::StrCat("d/", message_id);
}
// What a worker sent (a TurnResult with that one message), and the mark that
// a `failed` status for it was handled: both outlive a restart.
inline std::string SentKey(const std::string& wamid) { return absl::StrCat("m/", wamid); }
inline std::string FailedKey(const std::string& wamid) { return absl::StrCat("f/", wamid); }

// A user's exchanges (transcript: "h/<user>/<turn id>") and memory
// ("r/<user>"), by the user's key within a business number: the BSUID when
// known (stable), else the phone.
inline std::string BsuidKey(const std::string& phone_number_id, const std::string& user_id) {
  return absl::StrCat(phone_number_id, "/u:", user_id);
}
inline std::string PhoneKey(const std::string& phone_number_id, const std::string& wa_id) {
  return absl::StrCat(phone_number_id, "/", wa_id);
}
inline std::string UserKey(const ::bridge::v1::Session& s) {
  return s.user_id().empty() ? PhoneKey(s.phone_number_id(), s.wa_id())
                             : BsuidKey(s.phone_number_id(), s.user_id());
}
inline std::string TranscriptPrefix(const std::string& user_key) {
  return absl::StrCat("h/", user_key, "/");
}
inline std::string MemoryKey(const std::string& user_key) { return absl::StrCat("r/", user_key); }
// The user's other key ("l/<key>" = the other key): transcripts and memory
// outlive the session records that link a BSUID and a phone.
inline std::string LinkKey(const std::string& user_key) { return absl::StrCat("l/", user_key); }
// An erasure, recorded without content (audit).
inline std::string ErasureKey(const std::string& id) { return absl::StrCat("e/", id); }

inline google::protobuf::Timestamp Ts(absl::Time t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

inline absl::Time FromTs(const google::protobuf::Timestamp& t) {
  return absl::FromUnixMicros(google::protobuf::util::TimeUtil::TimestampToMicroseconds(t));
}

// A person holds the conversation, or the agent asked for one.
inline bool HeldForPerson(const ::bridge::v1::Session& s) {
  return !s.operator_().empty() || !s.handoff_reason().empty();
}

// Turns that end with something sent to the user (not INFORM, not RECORD).
inline bool SendsToUser(const ::bridge::v1::Turn& t) {
  return t.action() != ::bridge::v1::TURN_ACTION_INFORM &&
         t.action() != ::bridge::v1::TURN_ACTION_RECORD;
}

}  // namespace bridge::controller
