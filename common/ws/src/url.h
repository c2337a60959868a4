// Private helpers for URLs and host:port strings. Plain C++: no Asio here.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace bridge::ws::internal {

struct WsUrl {
  bool secure = false;  // wss://
  std::string host;     // without IPv6 brackets
  uint16_t port = 0;
  std::string resource;  // path and query, at least "/"
  std::string HostPort() const;
};

// Parses ws://host[:port][/path][?query] and wss://... Error messages never
// quote the URL: its query can carry secrets (conversation_signature=...).
absl::StatusOr<WsUrl> ParseWsUrl(const std::string& url);

// "host:port", "[v6]:port". The port is required (0 allowed).
absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& host_port);

// Inverse of SplitHostPort: brackets IPv6 literals.
std::string JoinHostPort(const std::string& host, uint16_t port);

// %XX and '+' decoding for query components; malformed escapes pass through.
std::string UrlDecode(const std::string& in);

}  // namespace bridge::ws::internal
