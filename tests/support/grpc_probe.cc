#include "common/call_auth.h"
#include "grpc_probe.h"

#include "common/controller_targets.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace bridge::testing {
namespace {
std::shared_ptr<grpc::Channel> Channel(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}
void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
}
absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

// One Sessions RPC to `target`, as an operator with `token`.
template <typename Req, typename Resp>
absl::StatusOr<Resp> CallSessions(
    const std::string& target, const std::string& token,
    grpc::Status (bridge::v1::Sessions::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Req& req) {
  auto stub = bridge::v1::Sessions::NewStub(Channel(target));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  AttachToken(&ctx, token);
  Resp resp;
  if (grpc::Status s = ((*stub).*method)(&ctx, req, &resp); !s.ok()) return FromGrpc(s);
  return resp;
}
}  // namespace

absl::StatusOr<std::string> HealthStatus(const std::string& target, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(Channel(target));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) return std::string("SERVICE_UNKNOWN");
    return absl::UnavailableError(s.error_message());
  }
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

absl::StatusOr<std::vector<std::string>> ReflectedServices(const std::string& target) {
  using namespace grpc::reflection::v1alpha;
  auto stub = ServerReflection::NewStub(Channel(target));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub->ServerReflectionInfo(&ctx);
  ServerReflectionRequest req;
  req.set_list_services("");
  stream->Write(req);
  stream->WritesDone();
  ServerReflectionResponse resp;
  std::vector<std::string> names;
  while (stream->Read(&resp)) {
    for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  }
  grpc::Status s = stream->Finish();
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return names;
}

absl::StatusOr<std::vector<bridge::v1::Session>> ListSessions(const std::string& target,
                                                              bool reveal_ids,
                                                              const std::string& token,
                                                              bool include_ended) {
  // `target` may list several controllers: whichever leads answers.
  auto targets = ControllerTargets::Create(target);
  if (!targets.ok()) return targets.status();
  bridge::v1::ListSessionsResponse resp;
  grpc::Status s = CallLeader(**targets, [&](const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    ctx.set_wait_for_ready(targets.value()->size() == 1);
    AttachToken(&ctx, token);
    bridge::v1::ListSessionsRequest req;
    req.set_reveal_ids(reveal_ids);
    req.set_include_ended(include_ended);
    return bridge::v1::Sessions::NewStub(channel)->ListSessions(&ctx, req, &resp);
  });
  if (!s.ok()) return FromGrpc(s);
  return std::vector<bridge::v1::Session>(resp.sessions().begin(), resp.sessions().end());
}

absl::Status EndSession(const std::string& target, const std::string& session_id,
                        const std::string& token) {
  bridge::v1::EndSessionRequest req;
  req.set_session_id(session_id);
  req.set_reason("operator");
  return CallSessions(target, token, &bridge::v1::Sessions::Stub::EndSession, req).status();
}

absl::StatusOr<bridge::v1::GetTranscriptResponse> GetTranscript(const std::string& target,
                                                                const std::string& session_id,
                                                                const std::string& token) {
  bridge::v1::GetTranscriptRequest req;
  req.set_session_id(session_id);
  return CallSessions(target, token, &bridge::v1::Sessions::Stub::GetTranscript, req);
}

std::pair<int, std::string> CallEmpty(const std::string& target, const std::string& method) {
  grpc::GenericStub stub(Channel(target));
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::ByteBuffer request, response;  // empty message
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  absl::Mutex mu;
  bool done = false;
  grpc::Status result;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   absl::MutexLock lock(&mu);
                   result = s;
                   done = true;
                 });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  return {result.error_code(), result.error_message()};
}

}  // namespace bridge::testing
