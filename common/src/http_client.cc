#include "common/http_client.h"

#include "absl/strings/str_cat.h"
#include "common/url.h"
#include "httplib.h"

namespace bridge {

HttpClient::HttpClient() = default;
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
HttpClient::~HttpClient() = default;

absl::StatusOr<HttpClient> NewHttpClient(const std::string& base_url, absl::Duration timeout,
                                         const std::string& ca_file) {
  absl::StatusOr<UrlParts> url = SplitUrl(base_url);
  if (!url.ok()) return url.status();
  HttpClient out;
  out.host = HostOf(url->origin);
  out.prefix = url->path;
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  out.client = std::make_unique<httplib::Client>(url->origin);
  if (!out.client->is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot make a client for ", out.host));
  }
  if (!ca_file.empty()) out.client->set_ca_cert_path(ca_file.c_str());
  out.client->enable_server_certificate_verification(true);
  const int64_t usec = absl::ToInt64Microseconds(timeout);
  out.client->set_connection_timeout(usec / 1000000, usec % 1000000);
  out.client->set_read_timeout(usec / 1000000, usec % 1000000);
  out.client->set_write_timeout(usec / 1000000, usec % 1000000);
  return out;
}

}  // namespace bridge
