// An HTTP client for one service's base URL (the ElevenLabs API, a
// business's webhook): TLS verified against the system's trust store (or a
// CA file), one timeout for every phase, and the base URL's path to put
// before API paths. The callers include httplib.h to make their requests.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace httplib {
class Client;
}

namespace bridge {

struct HttpClient {
  HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  ~HttpClient();

  std::unique_ptr<httplib::Client> client;
  std::string prefix;  // the base URL's path: "" or "/prefix", no trailing slash
  std::string host;    // "host[:port]": what messages may name
};

// InvalidArgument for a URL that is not absolute http(s).
absl::StatusOr<HttpClient> NewHttpClient(const std::string& base_url, absl::Duration timeout,
                                         const std::string& ca_file = "");

}  // namespace bridge
