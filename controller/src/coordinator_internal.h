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

inline google::protobuf::Timestamp Ts(absl::Time t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// Turns that end with something sent to the user (not INFORM).
inline bool SendsToUser(const ::bridge::v1::Turn& t) {
  return t.action() != ::bridge::v1::TURN_ACTION_INFORM;
}

}  // namespace bridge::controller
