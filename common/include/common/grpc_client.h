// Settings shared by our long-lived gRPC client channels.
#pragma once

#include "absl/time/time.h"
#include "grpcpp/support/channel_arguments.h"

namespace bridge {

// Pings every `every`, idle or not, and drops a connection whose peer stays
// silent `timeout` longer: a frozen peer (paused, partitioned: no FIN) is
// noticed within seconds instead of gRPC's default two hours. Our servers
// allow pings this often (common/grpc_server.cc).
grpc::ChannelArguments KeepaliveChannelArgs(absl::Duration every, absl::Duration timeout);

}  // namespace bridge
