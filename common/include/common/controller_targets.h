// Finding the leading controller. `--controller` names one controller or
// several ("host:port,host:port", or a gRPC target such as dns:///name:port
// that resolves to all of them). Only the leader serves Ingest, WorkerLink
// and Sessions; a standby answers UNAVAILABLE with the leader's address in
// the status details (google.rpc.Status carrying a google.rpc.ResourceInfo of
// type "bridge.v1.Controller/leader" whose name is the address), and a client
// moves there without an operator. A controller that cannot be reached is
// left for the next one in the list.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/status.h"

namespace bridge {

// What a standby answers: UNAVAILABLE, naming the leader ("" when unknown).
grpc::Status NotLeaderStatus(const std::string& leader);
// The leader a NOT_LEADER answer names; nullopt for any other status.
std::optional<std::string> LeaderNamedIn(const grpc::Status& status);

class ControllerTargets {
 public:
  // InvalidArgument (naming --controller) when `flag` lists nothing.
  static absl::StatusOr<std::unique_ptr<ControllerTargets>> Create(
      const std::string& flag, grpc::ChannelArguments args = {});

  struct Pick {
    std::string target;
    std::shared_ptr<grpc::Channel> channel;
  };
  // The controller most likely to lead now.
  Pick Current() ABSL_LOCKS_EXCLUDED(mu_);
  // A call to `pick` failed with `status`: the next Current() is the leader
  // it named (a channel is made for an address not in the list), or else,
  // when the controller was unreachable, the next one in the list. Returns
  // true when another controller is worth trying now.
  bool Failed(const Pick& pick, const grpc::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  // The configured list, for logs.
  const std::string& flag() const { return flag_; }

 private:
  ControllerTargets(std::string flag, grpc::ChannelArguments args)
      : flag_(std::move(flag)), args_(std::move(args)) {}
  size_t IndexOf(const std::string& target) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string flag_;
  const grpc::ChannelArguments args_;
  mutable absl::Mutex mu_;
  std::vector<Pick> picks_ ABSL_GUARDED_BY(mu_);
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs `call` (which makes its own ClientContext) on the controller most
// likely to lead, following a standby's hint and skipping an unreachable
// controller: at most one try per controller, plus one. One-shot clients
// (bridgectl) use it; long-lived ones keep their ControllerTargets.
grpc::Status CallLeader(ControllerTargets& targets,
                        const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&)>& call);

}  // namespace bridge
