#include "bridgectl/sessions_command.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "common/call_auth.h"
#include "common/controller_targets.h"
#include "grpcpp/grpcpp.h"

namespace bridge::bridgectl {
namespace {

namespace v1 = ::bridge::v1;

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void PrintSessions(const google::protobuf::RepeatedPtrField<v1::Session>& sessions,
                   std::ostream& out) {
  out << absl::StrFormat("%-36s %-16s %-14s %-20s %-22s %6s %6s\n", "SESSION", "PHONE_NUMBER_ID",
                         "WA_ID", "WORKER", "STATE", "DONE", "FAILED");
  for (const auto& s : sessions) {
    out << absl::StrFormat("%-36s %-16s %-14s %-20s %-22s %6d %6d\n", s.session_id(),
                           s.phone_number_id(), s.wa_id(), s.worker_id(),
                           v1::SessionState_Name(s.state()), s.turns_done(), s.turns_failed());
  }
}

void PrintWorkers(const google::protobuf::RepeatedPtrField<v1::Worker>& workers,
                  std::ostream& out) {
  out << absl::StrFormat("%-28s %-22s %-22s %8s %8s\n", "WORKER", "ADDRESS", "STATE", "ACTIVE",
                         "CAPACITY");
  for (const auto& w : workers) {
    out << absl::StrFormat("%-28s %-22s %-22s %8d %8d\n", w.worker_id(), w.address(),
                           v1::WorkerState_Name(w.state()), w.active_sessions(), w.capacity());
  }
}

// One Sessions call for `cmd`, its answer printed to `out`; UNIMPLEMENTED
// for an unknown command.
grpc::Status Call(const std::string& cmd, const std::vector<std::string>& args,
                  const SessionsCommandOptions& opts, v1::Sessions::Stub* stub, std::ostream& out) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  AttachToken(&ctx, EnvOr("BRIDGE_ADMIN_TOKEN"));  // the operator token (docs/security.md)
  grpc::Status status;
  if (cmd == "sessions") {
    v1::ListSessionsRequest req;
    req.set_reveal_ids(opts.reveal_ids);
    v1::ListSessionsResponse resp;
    status = stub->ListSessions(&ctx, req, &resp);
    if (status.ok()) opts.json ? void(out << ToJson(resp)) : PrintSessions(resp.sessions(), out);
  } else if (cmd == "session") {
    v1::GetSessionRequest req;
    req.set_session_id(args[1]);
    req.set_reveal_ids(opts.reveal_ids);
    v1::GetSessionResponse resp;
    status = stub->GetSession(&ctx, req, &resp);
    if (status.ok()) out << ToJson(resp.session());
  } else if (cmd == "end") {
    v1::EndSessionRequest req;
    req.set_session_id(args[1]);
    req.set_reason("bridgectl end");
    v1::EndSessionResponse resp;
    status = stub->EndSession(&ctx, req, &resp);
    if (status.ok()) out << ToJson(resp.session());
  } else if (cmd == "workers") {
    v1::ListWorkersResponse resp;
    status = stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
    if (status.ok()) opts.json ? void(out << ToJson(resp)) : PrintWorkers(resp.workers(), out);
  } else if (cmd == "drain") {
    v1::DrainWorkerRequest req;
    req.set_worker_id(args[1]);
    v1::DrainWorkerResponse resp;
    status = stub->DrainWorker(&ctx, req, &resp);
    if (status.ok()) out << ToJson(resp.worker());
  } else {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, cmd);
  }
  return status;
}

}  // namespace

int RunSessionsCommand(const std::vector<std::string>& args, const SessionsCommandOptions& opts,
                       std::ostream& out, std::ostream& err) {
  const std::string& cmd = args[0];
  const bool needs_id = cmd == "session" || cmd == "end" || cmd == "drain";
  if (needs_id != (args.size() == 2) || args.size() > 2) return 2;
  auto targets = ControllerTargets::Create(opts.controller);
  if (!targets.ok()) {
    err << "bridgectl: " << targets.status().message() << std::endl;
    return 2;
  }
  // Whichever controller leads answers (a standby names it).
  grpc::Status status = CallLeader(**targets, [&](const std::shared_ptr<grpc::Channel>& channel) {
    return Call(cmd, args, opts, v1::Sessions::NewStub(channel).get(), out);
  });
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) return 2;
  if (!status.ok()) {
    err << "bridgectl " << cmd << ": " << opts.controller << ": " << status.error_message()
        << " (" << status.error_code() << ")" << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace bridge::bridgectl
