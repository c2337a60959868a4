#include "bridgectl/sessions_command.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
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
  out << absl::StrFormat("%-28s %-22s %-22s %8s %6s %8s\n", "WORKER", "ADDRESS", "STATE", "ACTIVE",
                         "CALLS", "CAPACITY");
  for (const auto& w : workers) {
    out << absl::StrFormat("%-28s %-22s %-22s %8d %6d %8d\n", w.worker_id(), w.address(),
                           v1::WorkerState_Name(w.state()), w.active_sessions(), w.active_calls(),
                           w.capacity());
  }
}

const char* Who(v1::Speaker s) {
  switch (s) {
    case v1::SPEAKER_USER: return "user";
    case v1::SPEAKER_AGENT: return "agent";
    case v1::SPEAKER_OPERATOR: return "operator";
    default: return "system";
  }
}

// One block per exchange: its lines, then its outcome and where its time went.
void PrintTranscript(const v1::GetTranscriptResponse& t, std::ostream& out) {
  for (const auto& e : t.entries()) {
    const absl::Time at = absl::FromUnixSeconds(e.at().seconds());
    out << absl::FormatTime("%Y-%m-%d %H:%M:%S", at, absl::UTCTimeZone()) << "  turn "
        << e.turn_id() << "  " << v1::TurnOutcome_Name(e.outcome())
        << (e.reason().empty() ? "" : absl::StrCat(" (", e.reason(), ")"))
        << (e.operator_().empty() ? "" : absl::StrCat("  operator ", e.operator_())) << "\n";
    for (const auto& l : e.lines()) {
      out << absl::StrFormat("  %-9s %s\n", absl::StrCat(Who(l.speaker()), ":"), l.text());
    }
    const v1::TurnLatency& ms = e.latency();
    out << absl::StrFormat(
        "  latency ms: queue %.0f · download %.0f · decode %.0f · agent first audio %.0f · "
        "agent done %.0f · encode %.0f · upload %.0f · send %.0f · total %.0f\n",
        ms.queue_ms(), ms.download_ms(), ms.decode_ms(), ms.agent_first_audio_ms(),
        ms.agent_done_ms(), ms.encode_ms(), ms.upload_ms(), ms.send_ms(), ms.total_ms());
  }
}

void PrintForgotten(const v1::ForgetUserResponse& f, std::ostream& out) {
  out << "sessions ended: " << f.sessions_ended_size() << "\n"
      << "transcript entries deleted: " << f.transcript_entries_deleted() << "\n"
      << "memory deleted: " << (f.memory_deleted() ? "yes" : "no") << "\n"
      << "queued turns deleted: " << f.turns_deleted() << "\n"
      << "id links deleted: " << f.links_deleted() << "\n"
      << "ElevenLabs conversations deleted: " << f.conversations_deleted_size() << "\n";
  for (const auto& c : f.conversations_failed()) out << "NOT deleted at ElevenLabs: " << c << "\n";
}

// The takeover commands: takeover ID, say ID TEXT, handback ID.
grpc::Status CallTakeover(const std::string& cmd, const std::vector<std::string>& args,
                          const SessionsCommandOptions& opts, v1::Sessions::Stub* stub,
                          grpc::ClientContext* ctx, std::ostream& out) {
  grpc::Status status;
  if (cmd == "takeover") {
    v1::TakeOverRequest req;
    req.set_session_id(args[1]);
    req.set_operator_(opts.operator_name);
    v1::TakeOverResponse resp;
    status = stub->TakeOver(ctx, req, &resp);
    if (status.ok()) out << ToJson(resp.session());
  } else if (cmd == "say") {
    v1::SayRequest req;
    req.set_session_id(args[1]);
    req.set_text(args[2]);
    v1::SayResponse resp;
    status = stub->Say(ctx, req, &resp);
    if (status.ok()) out << ToJson(resp);
  } else {
    v1::HandBackRequest req;
    req.set_session_id(args[1]);
    v1::HandBackResponse resp;
    status = stub->HandBack(ctx, req, &resp);
    if (status.ok()) out << ToJson(resp.session());
  }
  return status;
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
  } else if (cmd == "transcript") {
    // A session id, or a user (phone or BSUID) of --phone_number_id.
    v1::GetTranscriptRequest req;
    (opts.phone_number_id.empty() ? req.mutable_session_id() : req.mutable_user())->assign(args[1]);
    req.set_phone_number_id(opts.phone_number_id);
    req.set_reveal_ids(opts.reveal_ids);
    v1::GetTranscriptResponse resp;
    status = stub->GetTranscript(&ctx, req, &resp);
    if (status.ok()) opts.json ? void(out << ToJson(resp)) : PrintTranscript(resp, out);
  } else if (cmd == "forget") {
    v1::ForgetUserRequest req;
    req.set_phone_number_id(opts.phone_number_id);
    req.set_user(args[1]);
    v1::ForgetUserResponse resp;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(2)));  // ElevenLabs calls
    status = stub->ForgetUser(&ctx, req, &resp);
    if (status.ok()) opts.json ? void(out << ToJson(resp)) : PrintForgotten(resp, out);
  } else if (cmd == "takeover" || cmd == "say" || cmd == "handback") {
    status = CallTakeover(cmd, args, opts, stub, &ctx, out);
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
  const bool needs_id = cmd == "session" || cmd == "end" || cmd == "drain" ||
                        cmd == "transcript" || cmd == "takeover" || cmd == "handback" ||
                        cmd == "forget";
  const size_t want = cmd == "say" ? 3 : needs_id ? 2 : 1;
  if (args.size() != want) return 2;
  if (cmd == "forget" && opts.phone_number_id.empty()) {
    err << "bridgectl forget: give the business number with --phone_number_id" << std::endl;
    return 2;
  }
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
