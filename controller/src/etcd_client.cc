#include "etcd_client.h"

#include <arpa/inet.h>
#include <netdb.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc_client.h"
#include "controller/session_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace bridge::controller {
namespace {

bool IsIpv4(const std::string& host) {
  in_addr a;
  return inet_pton(AF_INET, host.c_str(), &a) == 1;
}

// host:port -> the IPv4 addresses it names, as "a.b.c.d:port".
absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host, const std::string& port) {
  if (IsIpv4(host)) return std::vector<std::string>{absl::StrCat(host, ":", port)};
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("--store=etcd: cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (addrinfo* p = res; p; p = p->ai_next) {
    char buf[INET_ADDRSTRLEN];
    auto* sin = reinterpret_cast<sockaddr_in*>(p->ai_addr);
    if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) out.push_back(absl::StrCat(buf, ":", port));
  }
  freeaddrinfo(res);
  return out;
}

}  // namespace

absl::StatusOr<EtcdConfig> ParseEtcdSpec(absl::string_view spec) {
  EtcdConfig c;
  absl::string_view hosts = spec;
  if (size_t slash = spec.find('/'); slash != absl::string_view::npos) {
    hosts = spec.substr(0, slash);
    c.ns = std::string(spec.substr(slash + 1));
    if (c.ns.empty() || absl::StrContains(c.ns, '/')) {
      return absl::InvalidArgumentError(
          absl::StrCat("--store=etcd:", spec, ": the namespace after '/' must be one word"));
    }
  }
  for (absl::string_view ep : absl::StrSplit(hosts, ',', absl::SkipEmpty())) {
    size_t colon = ep.rfind(':');
    int port = 0;
    if (colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtoi(ep.substr(colon + 1), &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--store=etcd:", spec, ": '", ep, "' is not HOST:PORT (etcd's client port, e.g. 2379)"));
    }
    c.endpoints.emplace_back(ep);
  }
  if (c.endpoints.empty()) {
    return absl::InvalidArgumentError("--store=etcd: needs HOST:PORT[,HOST:PORT...]");
  }
  return c;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewEtcdChannel(const EtcdConfig& config) {
  std::vector<std::string> addresses;
  for (const std::string& ep : config.endpoints) {
    size_t colon = ep.rfind(':');
    auto r = Resolve(ep.substr(0, colon), ep.substr(colon + 1));
    if (!r.ok()) return r.status();
    addresses.insert(addresses.end(), r->begin(), r->end());
  }
  // A member that dies or freezes is noticed within ~2 s and the next one
  // used; the leader lease (default 5 s) outlives that.
  grpc::ChannelArguments args = KeepaliveChannelArgs(absl::Seconds(1), absl::Seconds(1));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Load pages ranges (EtcdStore::Range), so 16 MiB is headroom, not a limit.
  args.SetMaxReceiveMessageSize(16 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("ipv4:", absl::StrJoin(addresses, ",")),
                                   grpc::InsecureChannelCredentials(), args);
}

absl::Status EtcdError(const grpc::Status& status, absl::string_view what) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("etcd ", what, ": ", status.error_message()));
}

std::string RangeEnd(const std::string& prefix) {
  std::string end = PrefixEnd(prefix);
  return end.empty() ? std::string(1, '\0') : end;
}

etcdserverpb::Compare KeyAbsent(const std::string& key) {
  etcdserverpb::Compare c;
  c.set_key(key);
  c.set_target(etcdserverpb::Compare::CREATE);
  c.set_result(etcdserverpb::Compare::EQUAL);
  c.set_create_revision(0);
  return c;
}

}  // namespace bridge::controller
