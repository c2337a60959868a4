#include "common/call_auth.h"

#include <openssl/crypto.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "prometheus/counter.h"

namespace bridge {
namespace {

prometheus::Family<prometheus::Counter>& Refused() {
  static auto* family = &prometheus::BuildCounter()
                             .Name("bridge_grpc_refused_total")
                             .Help("Internal gRPC calls refused: no or wrong credentials")
                             .Register(*MetricsRegistry());
  return *family;
}

grpc::Status Refuse(const std::string& api, const char* reason, const std::string& message,
                    absl::string_view peer) {
  Refused().Add({{"api", api}, {"reason", reason}}).Increment();
  LogWarn("gRPC call refused", {{"api", api}, {"reason", reason}, {"peer", std::string(peer)}});
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, message);
}

}  // namespace

CallAuth::CallAuth(std::string token, std::string api)
    : token_(std::move(token)), api_(std::move(api)) {
  Refused().Add({{"api", api_}, {"reason", "wrong"}});  // at 0: an alert sees the first
}

grpc::Status CallAuth::Check(const grpc::CallbackServerContext* ctx) const {
  const std::string peer = ctx->peer();
  if (token_.empty()) {
    if (IsLoopbackPeer(peer)) return grpc::Status::OK;
    return Refuse(api_, "not_loopback", "no credentials are configured: loopback callers only",
                  peer);
  }
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return Refuse(api_, "missing", absl::StrCat(api_, ": credentials required (bearer token)"),
                  peer);
  }
  if (!BearerMatches(absl::string_view(it->second.data(), it->second.size()), token_)) {
    return Refuse(api_, "wrong", absl::StrCat(api_, ": wrong credentials"), peer);
  }
  return grpc::Status::OK;
}

bool BearerMatches(absl::string_view authorization, absl::string_view token) {
  const std::string expected = absl::StrCat("Bearer ", token);
  return authorization.size() == expected.size() &&
         CRYPTO_memcmp(authorization.data(), expected.data(), expected.size()) == 0;
}

std::string EnvOr(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

void AttachToken(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

bool IsLoopbackPeer(absl::string_view peer) {
  return absl::StartsWith(peer, "ipv4:127.") || absl::StartsWith(peer, "ipv6:[::1]") ||
         absl::StartsWith(peer, "ipv6:[::ffff:127.") || absl::StartsWith(peer, "unix:");
}

absl::Status RequireTokenOffLoopback(const std::string& listen, bool has_token,
                                     absl::string_view what_to_set) {
  if (has_token) return absl::OkStatus();
  auto hp = SplitHostPort(listen);
  if (!hp.ok()) return hp.status();
  const std::string& host = hp->first;
  if (host == "localhost" || host == "::1" || absl::StartsWith(host, "127.")) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "listening on ", listen, " (not loopback) needs credentials: set ", what_to_set,
      ", or listen on 127.0.0.1"));
}

}  // namespace bridge
