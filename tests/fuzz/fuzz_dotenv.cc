// The `.env` parser (common/include/common/config.h) on arbitrary files, and
// the PORT conversion on each value. Checked: no crash, no UB; every pair has
// a non-empty key without surrounding whitespace (a line without one is
// "expected KEY=VALUE").
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto pairs = bridge::ParseDotEnv(text);
  if (!pairs.ok()) return 0;
  for (const auto& [key, value] : *pairs) {
    if (key.empty()) abort();
    if (absl::ascii_isspace(key.front()) || absl::ascii_isspace(key.back())) abort();
    if (key.find('=') != std::string::npos) abort();
    (void)bridge::PortToListen(value);
  }
  return 0;
}
