// Secret redaction for logs and error strings.
//
// Two layers: the exact values of configured secrets (tokens, keys, app
// secret) wherever they appear, and patterns for secrets we never configured
// but may echo (bearer tokens, `sha256=` signatures, signed-URL query
// parameters, API-key headers, token fields in JSON).
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace bridge {

inline constexpr absl::string_view kRedacted = "[REDACTED]";

// Registers a secret value; values shorter than 4 characters are ignored (they
// would redact ordinary text).
void RegisterSecret(absl::string_view value);

std::string Redact(absl::string_view text);
absl::Status RedactStatus(const absl::Status& status);

}  // namespace bridge
