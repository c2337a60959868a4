// HttpRequest accessors: plain string work, no networking headers.
#include <optional>
#include <string>

#include "url.h"
#include "ws/websocket.h"

namespace bridge::ws {

std::string HttpRequest::Path() const {
  size_t query = resource.find('?');
  return query == std::string::npos ? resource : resource.substr(0, query);
}

std::optional<std::string> HttpRequest::Query(const std::string& key) const {
  size_t query = resource.find('?');
  if (query == std::string::npos) return std::nullopt;
  size_t end = resource.find('#', query);
  std::string params = resource.substr(query + 1, end == std::string::npos ? end : end - query - 1);
  size_t pos = 0;
  while (pos <= params.size()) {
    size_t amp = params.find('&', pos);
    std::string pair = params.substr(pos, amp == std::string::npos ? amp : amp - pos);
    size_t eq = pair.find('=');
    std::string name = internal::UrlDecode(pair.substr(0, eq));
    if (!pair.empty() && name == key) {
      return eq == std::string::npos ? std::string() : internal::UrlDecode(pair.substr(eq + 1));
    }
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return std::nullopt;
}

std::optional<std::string> HttpRequest::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

}  // namespace bridge::ws
