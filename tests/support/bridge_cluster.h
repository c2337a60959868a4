// The whole product on loopback for end-to-end tests: the real controller,
// gateway and workers with both simulators at the edges (elevenlabs-sim as a
// private agent with an API key, whatsapp-sim signing its webhooks), every
// process on port 0. A test acts as a WhatsApp user and awaits events — READY
// lines, the outbox long poll, the simulators' records, metrics, the Sessions
// API — never a sleep.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bridge/v1/types.pb.h"
#include "child_process.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {

struct ClusterOptions {
  double reply_pace = 0;                 // the simulated agent's speed (0 unpaced, 1 real time)
  int workers = 2;
  std::vector<std::string> sim_args;     // extra elevenlabs-sim flags
  std::vector<std::string> worker_args;  // extra bridge-worker flags
  std::vector<std::string> controller_args;  // extra bridge-controller flags
  // Run with a cluster token and an operator token (docs/security.md), as a
  // production cluster off loopback must; every e2e test runs so.
  bool credentials = true;
  // Cluster mode: the controllers' store ("etcd:ENDPOINTS/NAMESPACE", see
  // EtcdProcess::StoreSpec); "" is a fresh SQLite file. Every controller is
  // given to the gateway, the workers and Sessions() as one comma list.
  std::string store;
  int controllers = 1;
};

class BridgeCluster {
 public:
  explicit BridgeCluster(ClusterOptions options = {});
  ~BridgeCluster();

  // A user's message through whatsapp-sim: `kind` is text, voice, reaction,
  // edit, revoke or welcome; `query` e.g. "?voice=false". Returns its wamid.
  std::string UserSays(const std::string& user, const std::string& kind, const std::string& body,
                       const std::string& query = "");
  // What was sent to `user`, once there are `min_count` messages (long poll).
  nlohmann::json Outbox(const std::string& user, int min_count);
  std::string Media(const std::string& media_id);  // bytes the worker uploaded
  void PostFault(const std::string& body);         // whatsapp-sim /sim/faults
  void PostAgentFault(const std::string& body);    // elevenlabs-sim /sim/faults

  // elevenlabs-sim's records: conversations (once `min_count` exist, ended
  // ones only if asked) and speech-to-text calls.
  nlohmann::json Conversations(int min_count, bool ended_only = false);
  nlohmann::json Transcriptions();

  std::vector<v1::Session> Sessions(bool include_ended = false);
  // The sessions once `turns` turns are done in total (the Sessions API is
  // the event: a reply reaches the user just before the worker reports it).
  std::vector<v1::Session> SessionsAfterTurns(int64_t turns);
  // The only session once `done(session)` holds.
  v1::Session AwaitSession(const std::function<bool(const v1::Session&)>& done,
                           bool include_ended = false);

  // True once /metrics of any worker, the controller or the gateway shows `line`.
  bool AwaitWorkerMetric(const std::string& line);
  bool AwaitControllerMetric(const std::string& line);
  bool AwaitGatewayMetric(const std::string& line);

  void StartController(const std::string& listen) { StartControllerAt(0, listen); }
  // (Re)starts controller `i` on `listen` (its old address to come back where
  // the others look for it).
  void StartControllerAt(int i, const std::string& listen);
  ChildProcess& controller(int i) { return *controllers_[i]; }
  const std::string& controller_grpc(int i) const { return controller_grpcs_[i]; }
  int controllers() const { return static_cast<int>(controllers_.size()); }
  // The index of the controller whose /metrics says it leads, once one does
  // and `excluded` is not it; -1 if none does within the hang guard.
  int AwaitLeader(int excluded = -1);
  const std::string& cluster_token() const { return cluster_token_; }
  const std::string& admin_token() const { return admin_token_; }
  const std::string& gateway_http() const { return gateway_http_; }
  const std::string& whatsapp_sim_http() const { return wa_http_; }
  // Controller i's operator console (--admin_listen), host:port.
  const std::string& controller_admin(int i) const { return controller_admins_[i]; }
  // Every /metrics address: gateway, controllers, workers.
  std::vector<std::string> MetricsAddresses() const;
  ChildProcess& controller() { return *controllers_[0]; }
  ChildProcess& worker(int i) { return *workers_[i]; }
  const std::string& worker_grpc(int i) const { return worker_grpc_[i]; }  // Media.Converse
  const std::string& controller_address() const { return controller_grpc_; }
  // Everything the processes printed, for failure messages.
  std::string Logs() const;

  // (Re)starts worker i; a running one must have exited first.
  void StartWorker(int i);

 private:
  bool AwaitMetric(const std::vector<std::string>& addresses, const std::string& line);

  const ClusterOptions options_;
  std::string db_, el_http_, controller_grpc_, gateway_http_, wa_http_;
  std::vector<std::string> controller_grpcs_, controller_metrics_, controller_admins_;
  std::vector<std::string> worker_metrics_, worker_grpc_;
  std::string cluster_token_, admin_token_;  // empty without `credentials`
  std::unique_ptr<ChildProcess> el_, gateway_, wa_;
  std::vector<std::unique_ptr<ChildProcess>> controllers_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

// A file from ../shared/fixtures/audio.
std::string AudioFixture(const std::string& name);

}  // namespace bridge::testing
