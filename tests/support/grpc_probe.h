// gRPC client helpers for tests: health status and the service list that
// server reflection reports (what grpcurl would show an operator).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bridge/v1/sessions.pb.h"
#include "bridge/v1/types.pb.h"

namespace bridge::testing {

// SERVING / NOT_SERVING / SERVICE_UNKNOWN..., or an error.
absl::StatusOr<std::string> HealthStatus(const std::string& target, const std::string& service);

// Every service name the server lists through reflection.
absl::StatusOr<std::vector<std::string>> ReflectedServices(const std::string& target);

// bridge.v1.Sessions/ListSessions, waiting for the controller to be reachable.
// `token`: the operator token, when the controller has one.
absl::StatusOr<std::vector<bridge::v1::Session>> ListSessions(const std::string& target,
                                                              bool reveal_ids = false,
                                                              const std::string& token = "",
                                                              bool include_ended = false);

// Calls a unary RPC with an empty request through a generic stub and returns
// the gRPC status code and message (for UNIMPLEMENTED checks).
// Sessions.EndSession, as an operator (bridgectl end) calls it.
absl::Status EndSession(const std::string& target, const std::string& session_id,
                        const std::string& token = "");

// Sessions.GetTranscript of one session, as an operator.
absl::StatusOr<bridge::v1::GetTranscriptResponse> GetTranscript(const std::string& target,
                                                                const std::string& session_id,
                                                                const std::string& token = "");

std::pair<int, std::string> CallEmpty(const std::string& target, const std::string& method);

}  // namespace bridge::testing
