// The few URL operations the services need, in one place: percent-encoding
// query values, splitting an absolute http(s) URL, and the parts that are safe
// to log (download and signed URLs carry secrets in their query strings).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bridge {

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string UrlEncode(absl::string_view s);

// "scheme://host[:port]" and "/path?query" of an absolute http(s) URL.
struct UrlParts {
  std::string origin;
  std::string path_and_query;
  std::string path;  // without the query: safe to log
};
// InvalidArgument for other schemes and for user info in the authority.
absl::StatusOr<UrlParts> SplitUrl(absl::string_view url);

// The URL without its query and fragment.
std::string StripQuery(absl::string_view url);

// "host[:port]" of a URL of any scheme, user info dropped: what logs may name.
std::string HostOf(absl::string_view url);

}  // namespace bridge
