// Who may call an internal gRPC API (docs/security.md). With a token
// configured, a call must carry it as `authorization: Bearer TOKEN`
// metadata. Without one, only loopback peers are served, and a service
// refuses to listen anywhere else (RequireTokenOffLoopback: exit 2).
// Health and reflection are not checked: probes stay open.
//
// Two tokens exist: the cluster token (gateway -> Ingest, worker ->
// WorkerLink, clients -> Media) and the operator token (Sessions).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/server_callback.h"

namespace bridge {

class CallAuth {
 public:
  // `api` names the API in metrics and errors ("ingest", "sessions", ...).
  CallAuth(std::string token, std::string api);

  // OK, or UNAUTHENTICATED (counted in bridge_grpc_refused_total{api,reason}).
  grpc::Status Check(const grpc::CallbackServerContext* ctx) const;
  bool has_token() const { return !token_.empty(); }

 private:
  std::string token_;
  std::string api_;
};

// The environment variable's value, or "" (tokens reach clients this way,
// never in argv where `ps` shows them).
std::string EnvOr(const char* name);

// True when an `authorization` value is exactly "Bearer TOKEN", compared in
// constant time (the gRPC APIs and the operator console's HTTP API).
bool BearerMatches(absl::string_view authorization, absl::string_view token);

// Adds `authorization: Bearer TOKEN` to an outgoing call; nothing when empty.
void AttachToken(grpc::ClientContext* ctx, const std::string& token);

// InvalidArgument (exit 2) when `listen` is not a loopback address and no
// token protects what is served there; `what_to_set` says which.
absl::Status RequireTokenOffLoopback(const std::string& listen, bool has_token,
                                     absl::string_view what_to_set);

// True for "ipv4:127.x.x.x:port", "ipv6:[::1]:port" and unix sockets.
bool IsLoopbackPeer(absl::string_view grpc_peer);

// A refused call of any streaming kind: finishes with `status` at once.
template <class Base>
class RefusedReactor final : public Base {
 public:
  explicit RefusedReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace bridge
