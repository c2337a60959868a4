// A throwaway CA and a server certificate signed by it, made with the OpenSSL 3
// C API (no `openssl` binary needed), for TLS tests of our servers and clients.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace bridge::testing {

struct TestPki {
  std::string ca_cert;      // PEM path: the trust anchor a client is given
  std::string server_cert;  // PEM path, leaf only
  std::string server_key;   // PEM path
};

// For `sans` (e.g. "DNS:localhost,IP:127.0.0.1"), written under
// ::testing::TempDir() with names unique to this process and call.
absl::StatusOr<TestPki> MakeTestPki(const std::string& sans = "DNS:localhost,IP:127.0.0.1");

}  // namespace bridge::testing
