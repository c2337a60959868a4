#include "common/controller_targets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace bridge {
namespace {
// google.rpc.ResourceInfo naming the leader (Debian's googleapis copy
// predates ErrorInfo): resource_type says what it is, resource_name where.
constexpr char kLeaderType[] = "bridge.v1.Controller/leader";
}  // namespace

grpc::Status NotLeaderStatus(const std::string& leader) {
  const std::string message =
      leader.empty() ? "this controller is a standby and no leader is elected yet; retry"
                     : absl::StrCat("this controller is a standby; the leader is ", leader);
  google::rpc::ResourceInfo info;
  info.set_resource_type(kLeaderType);
  info.set_resource_name(leader);
  info.set_description("this controller is a standby: call the leader");
  google::rpc::Status details;
  details.set_code(grpc::StatusCode::UNAVAILABLE);
  details.set_message(message);
  details.add_details()->PackFrom(info);
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, message, details.SerializeAsString());
}

std::optional<std::string> LeaderNamedIn(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE || status.error_details().empty()) {
    return std::nullopt;
  }
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return std::nullopt;
  for (const auto& any : details.details()) {
    google::rpc::ResourceInfo info;
    if (any.UnpackTo(&info) && info.resource_type() == kLeaderType) return info.resource_name();
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<ControllerTargets>> ControllerTargets::Create(
    const std::string& flag, grpc::ChannelArguments args) {
  std::unique_ptr<ControllerTargets> t(new ControllerTargets(flag, std::move(args)));
  absl::MutexLock lock(&t->mu_);
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipWhitespace())) {
    t->IndexOf(std::string(absl::StripAsciiWhitespace(part)));
  }
  if (t->picks_.empty()) {
    return absl::InvalidArgumentError(
        "--controller: expected host:port[,host:port...] or a gRPC target such as dns:///name:port");
  }
  return t;
}

size_t ControllerTargets::IndexOf(const std::string& target) {
  for (size_t i = 0; i < picks_.size(); ++i) {
    if (picks_[i].target == target) return i;
  }
  picks_.push_back(
      {target, grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args_)});
  return picks_.size() - 1;
}

ControllerTargets::Pick ControllerTargets::Current() {
  absl::MutexLock lock(&mu_);
  return picks_[current_];
}

bool ControllerTargets::Failed(const Pick& pick, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  if (picks_[current_].target != pick.target) return true;  // someone moved on already
  if (auto leader = LeaderNamedIn(status); leader && !leader->empty() && *leader != pick.target) {
    current_ = IndexOf(*leader);
    return true;
  }
  // A standby that knows no leader yet (an election is under way) is as good
  // as absent: another controller may be the new leader.
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return false;  // an answer, not an absence
  }
  current_ = (current_ + 1) % picks_.size();
  return picks_.size() > 1;
}

size_t ControllerTargets::size() const {
  absl::MutexLock lock(&mu_);
  return picks_.size();
}

grpc::Status CallLeader(
    ControllerTargets& targets,
    const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&)>& call) {
  grpc::Status status;
  for (size_t i = 0; i <= targets.size(); ++i) {
    ControllerTargets::Pick pick = targets.Current();
    status = call(pick.channel);
    if (status.ok() || !targets.Failed(pick, status)) break;
  }
  return status;
}

}  // namespace bridge
