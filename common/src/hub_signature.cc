#include "common/hub_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"

namespace bridge {
namespace {
constexpr absl::string_view kPrefix = "sha256=";

std::string Hmac(absl::string_view secret, absl::string_view body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}
}  // namespace

std::string SignBody(absl::string_view secret, absl::string_view body) {
  return std::string(kPrefix) + absl::BytesToHexString(Hmac(secret, body));
}

SignatureCheck VerifySignature(absl::string_view secret, absl::string_view body,
                               absl::string_view header) {
  header = absl::StripAsciiWhitespace(header);
  if (header.empty()) return SignatureCheck::kMissing;
  if (!absl::StartsWith(header, kPrefix) || header.size() != kPrefix.size() + 64) {
    return SignatureCheck::kMalformed;
  }
  absl::string_view hex = header.substr(kPrefix.size());
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return SignatureCheck::kMalformed;
  }
  const std::string got = absl::HexStringToBytes(hex);
  const std::string want = Hmac(secret, body);
  // Constant time: the position of the first wrong byte must not leak.
  return CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0 ? SignatureCheck::kValid
                                                                   : SignatureCheck::kMismatch;
}

}  // namespace bridge
