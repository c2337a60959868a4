// Logging: one line per event, text or JSON, to stderr. Every line and every
// field passes through the redactor, so secrets never reach a log.
#pragma once

#include <initializer_list>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bridge {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText, kJson };

bool ParseLogLevel(absl::string_view s, LogLevel* out);
bool ParseLogFormat(absl::string_view s, LogFormat* out);

void InitLogging(absl::string_view service, LogLevel level, LogFormat format);
bool LogEnabled(LogLevel level);

// A key=value pair on a log line. Values are anything absl::StrCat takes.
struct LogField {
  LogField(absl::string_view k, const absl::AlphaNum& v) : key(k), value(v.Piece()) {}
  LogField(absl::string_view k, const absl::Status& s) : key(k), value(s.ToString()) {}
  absl::string_view key;
  std::string value;
};

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

// Formats one line without writing it (tests).
std::string FormatLogLine(LogLevel level, absl::string_view msg,
                          std::initializer_list<LogField> fields);

inline void LogDebug(absl::string_view m, std::initializer_list<LogField> f = {}) {
  if (LogEnabled(LogLevel::kDebug)) Log(LogLevel::kDebug, m, f);
}
inline void LogInfo(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, m, f);
}
inline void LogWarn(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarn, m, f);
}
inline void LogError(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, m, f);
}

}  // namespace bridge
