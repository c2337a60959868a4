#include "common/config.h"

#include "absl/synchronization/mutex.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/redact.h"

ABSL_FLAG(std::string, env_file, ".env",
          "File of KEY=VALUE lines read when it exists (process env wins over it)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error (env LOG_LEVEL)");
ABSL_FLAG(std::string, log_format, "text", "text or json (one JSON object per line)");

namespace bridge {
namespace {

std::string Unquote(absl::string_view v) {
  v = absl::StripAsciiWhitespace(v);
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    return std::string(v.substr(1, v.size() - 2));
  }
  // An unquoted value ends at an inline comment.
  size_t hash = v.find(" #");
  if (hash != absl::string_view::npos) v = absl::StripTrailingAsciiWhitespace(v.substr(0, hash));
  return std::string(v);
}

// --env_file has to be known before the command line is parsed, because the
// file's values must sit under the command line's.
std::string PeekEnvFileFlag(int argc, char** argv) {
  std::string path = absl::GetFlag(FLAGS_env_file);
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (a == "--") break;
    if (absl::ConsumePrefix(&a, "--env_file=") || absl::ConsumePrefix(&a, "-env_file=")) {
      path = std::string(a);
    } else if ((a == "--env_file" || a == "-env_file") && i + 1 < argc) {
      path = argv[i + 1];
    }
  }
  return path;
}

absl::Status ApplyValue(const EnvBinding& b, const std::string& raw, absl::string_view origin) {
  std::string value = raw;
  if (b.convert) {
    auto converted = b.convert(raw);
    if (!converted.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(b.env, " (", origin, "): ", converted.status().message()));
    }
    value = *converted;
  }
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(b.flag);
  if (flag == nullptr) {
    return absl::InternalError(absl::StrCat("no flag --", b.flag, " for ", b.env));
  }
  std::string error;
  if (!flag->ParseFrom(value, &error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        b.env, " (", origin, "): ", b.secret ? "invalid value" : Redact(error)));
  }
  if (b.secret) RegisterSecret(raw);
  return absl::OkStatus();
}

absl::Status ApplyEnvironment(const std::string& env_file,
                              const std::vector<EnvBinding>& bindings) {
  std::vector<std::pair<std::string, std::string>> file_values;
  std::ifstream in(env_file);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    auto parsed = ParseDotEnv(ss.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(env_file, ": ", parsed.status().message()));
    }
    file_values = *std::move(parsed);
  }
  for (const EnvBinding& b : bindings) {
    if (const char* v = std::getenv(b.env.c_str()); v != nullptr && *v != '\0') {
      if (auto s = ApplyValue(b, v, "env"); !s.ok()) return s;
      continue;
    }
    for (const auto& [key, value] : file_values) {
      if (key != b.env || value.empty()) continue;
      if (auto s = ApplyValue(b, value, env_file); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseDotEnv(
    const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream lines(text);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l.front() == '#') continue;
    absl::ConsumePrefix(&l, "export ");
    size_t eq = l.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat("line ", n, ": expected KEY=VALUE"));
    }
    std::string key(absl::StripAsciiWhitespace(l.substr(0, eq)));
    if (key.empty()) {  // "export  =x": only blanks before the '='
      return absl::InvalidArgumentError(absl::StrCat("line ", n, ": expected KEY=VALUE"));
    }
    out.emplace_back(std::move(key), Unquote(l.substr(eq + 1)));
  }
  return out;
}

absl::StatusOr<std::string> PortToListen(const std::string& port) {
  int p = 0;
  if (!absl::SimpleAtoi(port, &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("not a port number: '", port, "'"));
  }
  return absl::StrCat("0.0.0.0:", p);
}

absl::StatusOr<std::vector<std::string>> LoadConfigOrError(
    int argc, char** argv, const std::vector<EnvBinding>& bindings) {
  std::vector<EnvBinding> all = bindings;
  all.push_back({"LOG_LEVEL", "log_level"});
  if (auto s = ApplyEnvironment(PeekEnvFileFlag(argc, argv), all); !s.ok()) return s;
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  // Secrets given as flags are redacted too.
  for (const EnvBinding& b : bindings) {
    if (!b.secret) continue;
    if (absl::CommandLineFlag* f = absl::FindCommandLineFlag(b.flag)) {
      RegisterSecret(f->CurrentValue());
    }
  }
  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log_level/LOG_LEVEL: '", absl::GetFlag(FLAGS_log_level),
        "' is not one of debug, info, warn, error"));
  }
  LogFormat format;
  if (!ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log_format: '", absl::GetFlag(FLAGS_log_format), "' is not text or json"));
  }
  return std::vector<std::string>(positional.begin(), positional.end());
}

std::vector<std::string> LoadConfig(int argc, char** argv, const std::string& service,
                                    const std::vector<EnvBinding>& bindings) {
  // Debian builds Abseil with its debug-mode mutex deadlock detection on: a
  // lock-order graph updated on every acquisition (GraphCycles), a visible
  // share of the CPU per webhook. Lock order is checked where it belongs, by
  // clang's -Wthread-safety at build time and TSan in the test suite.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(absl::StrCat(
      service, ": part of whatsapp-elevenlabs-bridge. Flags override env vars, which "
               "override the .env file."));
  auto args = LoadConfigOrError(argc, argv, bindings);
  if (!args.ok()) {
    std::cerr << service << ": configuration error: " << Redact(args.status().message())
              << std::endl;
    std::exit(2);
  }
  LogLevel level;
  LogFormat format;
  ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level);
  ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format);
  InitLogging(service, level, format);
  return *std::move(args);
}

}  // namespace bridge
