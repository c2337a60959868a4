// Reaching etcd v3 (Debian's etcd-server 3.4) through its own gRPC API, whose
// C++ stubs are generated at build time from the .proto files Debian's
// golang-etcd-server-dev ships (protos/CMakeLists.txt). The store and the
// leader election share one channel to the cluster.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "etcd/etcdserver/etcdserverpb/rpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace bridge::controller {

struct EtcdConfig {
  std::vector<std::string> endpoints;  // host:port, client URLs of the members
  // Every key lives under "<ns>/": several bridges (or tests) share one etcd.
  std::string ns = "bridge";
};

// The part of --store after "etcd:": HOST:PORT[,HOST:PORT...][/NAMESPACE].
// InvalidArgument, naming the flag, when malformed.
absl::StatusOr<EtcdConfig> ParseEtcdSpec(absl::string_view spec);

// One channel over every member: pick_first walks the list, so a member that
// stops (restart, partition) is left for the next within a keepalive period.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewEtcdChannel(const EtcdConfig& config);

// "etcd <what>: <message>" with the gRPC code mapped: the controller treats
// UNAVAILABLE and DEADLINE_EXCEEDED as "try again", the rest as errors.
absl::Status EtcdError(const grpc::Status& status, absl::string_view what);

// etcd's range_end for every key starting with `prefix` ("\0", etcd's "to
// the end of the key space", when no key is greater than all of them).
std::string RangeEnd(const std::string& prefix);

// A compare that holds while `key` does not exist (its create revision is 0).
etcdserverpb::Compare KeyAbsent(const std::string& key);


}  // namespace bridge::controller
