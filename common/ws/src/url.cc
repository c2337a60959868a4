#include "url.h"

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace bridge::ws::internal {
namespace {

absl::StatusOr<uint16_t> ParsePort(const std::string& text) {
  uint32_t port = 0;
  if (text.empty() || !absl::SimpleAtoi(text, &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("invalid port \"", text, "\""));
  }
  return static_cast<uint16_t>(port);
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string WsUrl::HostPort() const { return JoinHostPort(host, port); }

absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& host_port) {
  std::string host;
  std::string port;
  if (!host_port.empty() && host_port[0] == '[') {
    size_t close = host_port.find(']');
    if (close == std::string::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("expected [ipv6]:port, got \"", host_port, "\""));
    }
    host = host_port.substr(1, close - 1);
    port = host_port.substr(close + 2);
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == std::string::npos || host_port.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected host:port, got \"", host_port, "\""));
    }
    host = host_port.substr(0, colon);
    port = host_port.substr(colon + 1);
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing host in \"", host_port, "\""));
  }
  absl::StatusOr<uint16_t> parsed = ParsePort(port);
  if (!parsed.ok()) return parsed.status();
  return std::make_pair(host, *parsed);
}

std::string JoinHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<WsUrl> ParseWsUrl(const std::string& url) {
  WsUrl out;
  size_t scheme_end = url.find("://");
  std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme == "wss") {
    out.secure = true;
  } else if (scheme != "ws") {
    return absl::InvalidArgumentError("WebSocket URL must start with ws:// or wss://");
  }
  size_t authority_start = scheme_end + 3;
  size_t authority_end = url.find_first_of("/?#", authority_start);
  std::string authority = url.substr(authority_start, authority_end == std::string::npos
                                                          ? std::string::npos
                                                          : authority_end - authority_start);
  if (authority.find('@') != std::string::npos) {
    return absl::InvalidArgumentError("WebSocket URL must not carry user info");
  }
  const uint16_t default_port = out.secure ? 443 : 80;
  bool has_port = !authority.empty() && authority.back() != ']' &&
                  authority.rfind(':') != std::string::npos;
  if (has_port) {
    absl::StatusOr<std::pair<std::string, uint16_t>> hp = SplitHostPort(authority);
    if (!hp.ok()) return absl::InvalidArgumentError("WebSocket URL has a bad host:port");
    out.host = hp->first;
    out.port = hp->second;
  } else {
    out.host = authority;
    if (out.host.size() >= 2 && out.host.front() == '[') {
      out.host = out.host.substr(1, out.host.size() - 2);
    }
    out.port = default_port;
  }
  if (out.host.empty()) return absl::InvalidArgumentError("WebSocket URL has no host");
  out.resource = authority_end == std::string::npos ? "/" : url.substr(authority_end);
  size_t fragment = out.resource.find('#');
  if (fragment != std::string::npos) out.resource.erase(fragment);
  if (out.resource.empty() || out.resource[0] != '/') out.resource.insert(0, "/");
  return out;
}

std::string UrlDecode(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 &&
               HexValue(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

}  // namespace bridge::ws::internal
