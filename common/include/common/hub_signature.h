// X-Hub-Signature-256: HMAC-SHA256 of the raw body bytes keyed with the Meta
// app secret, "sha256=<64 lowercase hex>", compared in constant time. The
// gateway verifies it; whatsapp-sim signs with it, as Meta does.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace bridge {

enum class SignatureCheck { kValid, kMissing, kMalformed, kMismatch };

// "sha256=" + lowercase hex of HMAC-SHA256(secret, body).
std::string SignBody(absl::string_view secret, absl::string_view body);

SignatureCheck VerifySignature(absl::string_view secret, absl::string_view body,
                               absl::string_view header);

}  // namespace bridge
