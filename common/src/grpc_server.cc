#include "common/grpc_server.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace bridge {

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", listen, "' is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  int port = 0;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", listen, "' has no valid port"));
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& listen, const std::vector<GrpcServiceEntry>& services) {
  auto hp = SplitHostPort(listen);
  if (!hp.ok()) return hp.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcServer> s(new GrpcServer());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &s->port_);
  // Our clients (gateway, workers) ping every 2 s, idle or not, to notice a
  // hung peer within seconds: allow it rather than answer GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // And we ping ours: a client that vanished (no FIN: power, network) has its
  // calls cancelled within ~15 s instead of holding a stream, an agent
  // conversation and a capacity slot for hours (gRPC's default is 2 h).
  // A gateway's group of webhooks (up to 2 MiB) and a big ListSessions fit.
  builder.SetMaxReceiveMessageSize(16 << 20);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  for (const auto& entry : services) {
    builder.RegisterService(entry.service);
    s->names_.push_back(entry.name);
    if (!entry.serving) s->not_serving_.push_back(entry.name);
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", listen));
  }
  bool v6 = hp->first.find(':') != std::string::npos;
  s->address_ = v6 ? absl::StrCat("[", hp->first, "]:", s->port_)
                   : absl::StrCat(hp->first, ":", s->port_);
  auto* health = s->server_->GetHealthCheckService();
  health->SetServingStatus(true);
  for (const auto& name : s->names_) health->SetServingStatus(name, true);
  for (const auto& name : s->not_serving_) health->SetServingStatus(name, false);
  return s;
}

void GrpcServer::SetServing(const std::string& name, bool serving) {
  if (!shut_down_) server_->GetHealthCheckService()->SetServingStatus(name, serving);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_.exchange(true)) return;
  // Tell load balancers and health checkers first, then stop.
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace bridge
