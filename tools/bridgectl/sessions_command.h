// bridgectl's operator commands over bridge.v1.Sessions on the controller.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace bridge::bridgectl {

struct SessionsCommandOptions {
  std::string controller;
  bool json = false;
  bool reveal_ids = false;
  std::string phone_number_id;  // transcript USER, forget USER
  std::string operator_name;    // takeover
};

// args: {"sessions"} | {"session", ID} | {"end", ID} | {"workers"} | {"drain", ID} |
// {"transcript", ID or USER} | {"takeover", ID} | {"say", ID, TEXT} | {"handback", ID} |
// {"forget", USER}.
// Returns the exit code: 0 ok, 1 the call failed, 2 bad usage.
int RunSessionsCommand(const std::vector<std::string>& args, const SessionsCommandOptions& opts,
                       std::ostream& out, std::ostream& err);

}  // namespace bridge::bridgectl
