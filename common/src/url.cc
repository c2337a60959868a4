#include "common/url.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/redact.h"

namespace bridge {

std::string UrlEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::StatusOr<UrlParts> SplitUrl(absl::string_view url) {
  const size_t sep = url.find("://");
  const std::string scheme =
      sep == absl::string_view::npos ? "" : absl::AsciiStrToLower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") {
    return absl::InvalidArgumentError(
        absl::StrCat("not an http(s) URL: ", Redact(StripQuery(url))));
  }
  absl::string_view rest = url.substr(sep + 3);
  const size_t end = rest.find_first_of("/?#");
  absl::string_view authority = rest.substr(0, end);
  if (authority.empty() || absl::StrContains(authority, '@')) {
    return absl::InvalidArgumentError(absl::StrCat("bad host in URL: ", Redact(StripQuery(url))));
  }
  UrlParts parts;
  parts.origin = absl::StrCat(scheme, "://", authority);
  absl::string_view tail = end == absl::string_view::npos ? "" : rest.substr(end);
  tail = tail.substr(0, tail.find('#'));
  parts.path_and_query = absl::StartsWith(tail, "/") ? std::string(tail) : absl::StrCat("/", tail);
  parts.path = parts.path_and_query.substr(0, parts.path_and_query.find('?'));
  return parts;
}

std::string StripQuery(absl::string_view url) {
  return std::string(url.substr(0, url.find_first_of("?#")));
}

std::string HostOf(absl::string_view url) {
  size_t start = url.find("://");
  start = start == absl::string_view::npos ? 0 : start + 3;
  absl::string_view host = url.substr(start, url.find_first_of("/?#", start) - start);
  const size_t at = host.rfind('@');  // user info would be a secret too
  return std::string(at == absl::string_view::npos ? host : host.substr(at + 1));
}

}  // namespace bridge
