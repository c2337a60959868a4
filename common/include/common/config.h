// Configuration: flags, then the environment, then a `.env` file.
//
// Every binary declares its own absl flags and the env names (the seed guide's)
// that feed them. Precedence is command line > process env > .env file >
// default. A value that does not parse ends the process with exit code 2 and a
// one-line reason naming the flag or env var.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace bridge {

struct EnvBinding {
  std::string env;   // e.g. "WHATSAPP_ACCESS_TOKEN"
  std::string flag;  // e.g. "whatsapp_access_token"
  bool secret = false;  // registered with the log redactor
  // Optional: turns the env value into the flag's syntax (PORT -> listen).
  std::function<absl::StatusOr<std::string>(const std::string&)> convert;
};

// Parses a `.env` file: KEY=VALUE lines, `#` comments, optional `export `,
// single or double quotes. Returns the pairs in file order.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseDotEnv(
    const std::string& text);

// Applies .env and env values to the bound flags, then parses the command
// line (which wins). Returns the positional arguments (argv[0] first). Exits 2
// on a bad value. Also initialises logging from --log_level/--log_format and
// registers secret values for redaction.
std::vector<std::string> LoadConfig(int argc, char** argv, const std::string& service,
                                    const std::vector<EnvBinding>& bindings);

// Same, without exiting: for tests.
absl::StatusOr<std::vector<std::string>> LoadConfigOrError(
    int argc, char** argv, const std::vector<EnvBinding>& bindings);

// PORT=3000 -> "0.0.0.0:3000" (the seed's env for the gateway's listen address).
absl::StatusOr<std::string> PortToListen(const std::string& port);

}  // namespace bridge
