#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <deque>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/redact.h"
#include "nlohmann/json.hpp"

namespace bridge {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> g_json{false};
absl::Mutex g_write_mu;
// Never changed once published: a line being formatted on another thread
// keeps reading the name it loaded while InitLogging publishes another (tests
// call it again mid-run to change the level; TSan saw a std::string
// assignment here race with a websocket thread's log line). Names published
// are kept for the process's life; processes name themselves once.
const std::string kDefaultService = "bridge";
std::atomic<const std::string*> g_service{&kDefaultService};
absl::Mutex g_names_mu;
const std::string& ServiceName() { return *g_service.load(std::memory_order_acquire); }

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

std::string JsonString(absl::string_view s) {
  return nlohmann::json(std::string(s)).dump(-1, ' ', false,
                                             nlohmann::json::error_handler_t::replace);
}

// Text values are quoted only when they need it, so lines stay greppable.
std::string TextValue(const std::string& v) {
  bool plain = !v.empty();
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) plain = false;
  }
  return plain ? v : JsonString(v);
}

}  // namespace

bool ParseLogLevel(absl::string_view s, LogLevel* out) {
  std::string l = absl::AsciiStrToLower(s);
  if (l == "debug" || l == "trace") *out = LogLevel::kDebug;
  else if (l == "info") *out = LogLevel::kInfo;
  else if (l == "warn" || l == "warning") *out = LogLevel::kWarn;
  else if (l == "error") *out = LogLevel::kError;
  else return false;
  return true;
}

bool ParseLogFormat(absl::string_view s, LogFormat* out) {
  if (s == "text") *out = LogFormat::kText;
  else if (s == "json") *out = LogFormat::kJson;
  else return false;
  return true;
}

void InitLogging(absl::string_view service, LogLevel level, LogFormat format) {
  if (ServiceName() != service) {
    absl::MutexLock lock(&g_names_mu);
    static auto* names = new std::deque<std::string>();  // stable addresses
    names->emplace_back(service);
    g_service.store(&names->back(), std::memory_order_release);
  }
  g_level = static_cast<int>(level);
  g_json = format == LogFormat::kJson;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

std::string FormatLogLine(LogLevel level, absl::string_view msg,
                          std::initializer_list<LogField> fields) {
  std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (g_json) {
    line = absl::StrCat("{\"ts\":\"", ts, "\",\"level\":\"", LevelName(level),
                        "\",\"service\":", JsonString(ServiceName()),
                        ",\"msg\":", JsonString(Redact(msg)));
    for (const LogField& f : fields) {
      absl::StrAppend(&line, ",", JsonString(f.key), ":", JsonString(Redact(f.value)));
    }
    line += "}";
  } else {
    line = absl::StrCat(ts, " ", absl::AsciiStrToUpper(LevelName(level)), " ",
                        ServiceName(), ": ", Redact(msg));
    for (const LogField& f : fields) {
      absl::StrAppend(&line, " ", f.key, "=", TextValue(Redact(f.value)));
    }
  }
  return line;
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line = FormatLogLine(level, msg, fields);
  line += '\n';
  absl::MutexLock lock(&g_write_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace bridge
