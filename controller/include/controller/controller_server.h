// The control plane: ingests webhook batches durably, keeps the session table,
// assigns sessions to media workers attached over WorkerLink, and serves the
// operator API (bridge.v1.Sessions).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/service.h"

namespace bridge::controller {

struct ControllerOptions {
  std::string listen = "127.0.0.1:7000";
  // Credentials (docs/security.md). Without them only loopback is served.
  std::string cluster_token;  // Ingest, WorkerLink
  std::string admin_token;    // Sessions
  // The operator console (docs/console.md); "" = none. Its bearer token is
  // admin_token, else one derived from session_secret; with neither it is
  // served on loopback only.
  std::string admin_listen;
  std::string session_secret;
  std::string metrics_listen = "0.0.0.0:9100";
  std::string store = "sqlite:./data/controller.db";
  // Cluster mode (--store=etcd:...): the address standbys give clients for
  // this controller when it leads ("" = the bound one), and the lease that
  // bounds how long a dead leader keeps its place.
  std::string advertise;
  absl::Duration leader_lease = absl::Seconds(5);
  absl::Duration session_idle_timeout = absl::Minutes(30);
  absl::Duration session_max_duration = absl::Hours(24);
  absl::Duration heartbeat_timeout = absl::Seconds(15);
  // WhatsApp's 24-hour customer-service window (see CoordinatorOptions).
  absl::Duration max_message_age = absl::Hours(24);
  // See CoordinatorOptions for each one's reason.
  absl::Duration reattach_grace = absl::Seconds(5);
  int64_t max_pending_turns = 10000;
  absl::Duration ended_retention = absl::Minutes(10);
  // Transcript, memory, takeover, coalescing (docs/transcripts.md).
  int memory_turns = 10;
  absl::Duration memory_ttl = absl::Hours(24 * 30);
  absl::Duration transcript_retention = absl::Hours(24 * 30);
  bool coalesce = true;
  std::string handoff_tool = "transfer_to_human";
  std::string handoff_message;  // "" = CoordinatorOptions' default
  // Each finished exchange is POSTed here, signed with the secret.
  std::string transcript_webhook_url;
  std::string transcript_webhook_secret;
  // Erasure deletes the user's conversations at ElevenLabs.
  std::string elevenlabs_base_url = "https://api.elevenlabs.io";
  std::string elevenlabs_api_key;
};

// Endpoints: grpc=, metrics=, and admin= with a console.
class ControllerServer : public Service {
 public:
  static absl::StatusOr<std::unique_ptr<ControllerServer>> Start(const ControllerOptions& opts);

  virtual std::string grpc_address() const = 0;
  virtual std::string metrics_address() const = 0;
};

}  // namespace bridge::controller
