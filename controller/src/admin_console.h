// The operator console (docs/console.md): a web page and the JSON API it
// uses, on the controller's --admin_listen. The API is the Sessions gRPC API
// in JSON (proto field names), called over this controller's own gRPC
// listener: admission (the operator token, leader only), validation and
// behaviour are the gRPC API's, not a second copy of them. Live updates come
// from one WatchSessions stream per console, buffered for long polls, so a
// browser never holds a gRPC stream.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bridge::controller {

struct AdminConsoleOptions {
  std::string listen;          // host:port (port 0: any)
  // What callers present as `Authorization: Bearer ...`. Empty is allowed
  // only on a loopback listener (Start refuses otherwise).
  std::string bearer_token;
  std::string grpc_target;     // this controller's gRPC address
  std::string sessions_token;  // the operator token its Sessions API takes
};

class AdminConsole {
 public:
  static absl::StatusOr<std::unique_ptr<AdminConsole>> Start(const AdminConsoleOptions& options);
  virtual ~AdminConsole() = default;
  virtual std::string address() const = 0;  // host:port bound
  virtual void Stop() = 0;
};

// The console token derived from SESSION_SECRET when no --admin_token is
// set: hex HMAC-SHA256(secret, "bridge-admin-console"). Operators compute it
// with `printf bridge-admin-console | openssl dgst -sha256 -hmac "$SESSION_SECRET"`.
std::string DeriveConsoleToken(absl::string_view session_secret);

}  // namespace bridge::controller
