// bridge-controller: the control plane (see controller/controller_server.h).
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/service.h"
#include "controller/controller_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7000",
          "gRPC listen address (port 0 picks one); off loopback it needs both tokens");
ABSL_FLAG(std::string, cluster_token, "",
          "Token gateways and workers present (env BRIDGE_CLUSTER_TOKEN)");
ABSL_FLAG(std::string, admin_token, "",
          "Token operators present to the Sessions API (env BRIDGE_ADMIN_TOKEN)");
ABSL_FLAG(std::string, admin_listen, "",
          "Operator console and its JSON API (docs/console.md), e.g. 127.0.0.1:7080; empty: "
          "none. Off loopback it needs --admin_token or SESSION_SECRET");
ABSL_FLAG(std::string, session_secret, "",
          "Derives the console's token when --admin_token is not set (env SESSION_SECRET)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9100", "Prometheus /metrics listen address");
ABSL_FLAG(std::string, store, "sqlite:./data/controller.db",
          "Session store: sqlite:PATH or etcd:HOST:PORT[,HOST:PORT]");
ABSL_FLAG(std::string, advertise, "",
          "Cluster mode: this controller's address as gateways, workers and bridgectl reach it "
          "(standbys name the leader by it); default: the --listen address, a wildcard host "
          "replaced by the host name");
ABSL_FLAG(absl::Duration, leader_lease, absl::Seconds(5),
          "Cluster mode: the leader's etcd lease. A leader that dies is replaced within about "
          "this long (plus one campaign poll, lease/10); shorter means faster takeover and more "
          "renewals (3 per lease), and etcd's floor is about 2 s");
ABSL_FLAG(absl::Duration, session_idle_timeout, absl::Minutes(30),
          "A session with no activity for this long ends (its agent socket closes)");
ABSL_FLAG(absl::Duration, session_max_duration, absl::Hours(24), "A session ends after this long");
ABSL_FLAG(absl::Duration, max_message_age, absl::Hours(24),
          "A message whose own timestamp is older is acknowledged and counted, not answered: "
          "WhatsApp's customer-service window is 24 h and Meta retries webhooks for days");
ABSL_FLAG(absl::Duration, heartbeat_timeout, absl::Seconds(15),
          "A worker silent for this long is declared dead and its turns re-run elsewhere");

ABSL_FLAG(absl::Duration, reattach_grace, absl::Seconds(5),
          "A worker whose link broke keeps its sessions and running turns this long, so that "
          "a live worker re-attaching (network blip, controller restart) is not answered twice");
ABSL_FLAG(int64_t, max_pending_turns, 10000,
          "Turns waiting or running in all; over it, Deliver is refused (the gateway answers "
          "503 + Retry-After and Meta retries) instead of queueing without bound");
ABSL_FLAG(absl::Duration, ended_retention, absl::Minutes(10),
          "Ended sessions stay listed this long, then leave memory");
ABSL_FLAG(int, memory_turns, 10,
          "A user's new agent conversation gets their last this many exchanges as context "
          "(0: none); ten exchanges are about a page, well inside an agent's prompt");
ABSL_FLAG(absl::Duration, memory_ttl, absl::Hours(24 * 30),
          "Exchanges older than this are not given as context (a month: a customer who comes "
          "back next week is remembered)");
ABSL_FLAG(absl::Duration, transcript_retention, absl::Hours(24 * 30),
          "Each exchange stays in the transcript this long, then is purged by itself");
ABSL_FLAG(bool, coalesce, true,
          "Messages that arrive while a user's turn runs are answered together in the next "
          "turn: one reply per burst, not one per message");
ABSL_FLAG(std::string, handoff_tool, "transfer_to_human",
          "The agent's client tool for asking for a person (empty: none)");
ABSL_FLAG(std::string, handoff_message, "",
          "What the user is told when the agent asks for a person (default: a short note that "
          "a member of the team will reply)");
ABSL_FLAG(std::string, transcript_webhook_url, "",
          "Each finished exchange is POSTed here as JSON, at least once, signed with "
          "--transcript_webhook_secret (X-Bridge-Signature-256)");
ABSL_FLAG(std::string, transcript_webhook_secret, "",
          "HMAC-SHA256 key of the transcript webhook's signature "
          "(env BRIDGE_TRANSCRIPT_WEBHOOK_SECRET)");
ABSL_FLAG(std::string, elevenlabs_api_key, "",
          "ElevenLabs API key, for deleting a forgotten user's conversations "
          "(env ELEVENLABS_API_KEY)");
ABSL_FLAG(std::string, elevenlabs_base_url, "https://api.elevenlabs.io",
          "ElevenLabs API base URL (env ELEVENLABS_BASE_URL)");

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  bridge::LoadConfig(argc, argv, "bridge-controller",
                     {{"BRIDGE_CLUSTER_TOKEN", "cluster_token", true},
                      {"BRIDGE_ADMIN_TOKEN", "admin_token", true},
                      {"SESSION_SECRET", "session_secret", true},
                      {"BRIDGE_TRANSCRIPT_WEBHOOK_SECRET", "transcript_webhook_secret", true},
                      {"ELEVENLABS_API_KEY", "elevenlabs_api_key", true},
                      {"ELEVENLABS_BASE_URL", "elevenlabs_base_url"}});
  bridge::controller::ControllerOptions opts;
  opts.listen = absl::GetFlag(FLAGS_listen);
  opts.cluster_token = absl::GetFlag(FLAGS_cluster_token);
  opts.admin_token = absl::GetFlag(FLAGS_admin_token);
  opts.admin_listen = absl::GetFlag(FLAGS_admin_listen);
  opts.session_secret = absl::GetFlag(FLAGS_session_secret);
  opts.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  opts.store = absl::GetFlag(FLAGS_store);
  opts.advertise = absl::GetFlag(FLAGS_advertise);
  opts.leader_lease = absl::GetFlag(FLAGS_leader_lease);
  opts.session_idle_timeout = absl::GetFlag(FLAGS_session_idle_timeout);
  opts.session_max_duration = absl::GetFlag(FLAGS_session_max_duration);
  opts.heartbeat_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  opts.max_message_age = absl::GetFlag(FLAGS_max_message_age);
  opts.reattach_grace = absl::GetFlag(FLAGS_reattach_grace);
  opts.max_pending_turns = absl::GetFlag(FLAGS_max_pending_turns);
  opts.ended_retention = absl::GetFlag(FLAGS_ended_retention);
  opts.memory_turns = absl::GetFlag(FLAGS_memory_turns);
  opts.memory_ttl = absl::GetFlag(FLAGS_memory_ttl);
  opts.transcript_retention = absl::GetFlag(FLAGS_transcript_retention);
  opts.coalesce = absl::GetFlag(FLAGS_coalesce);
  opts.handoff_tool = absl::GetFlag(FLAGS_handoff_tool);
  opts.handoff_message = absl::GetFlag(FLAGS_handoff_message);
  opts.transcript_webhook_url = absl::GetFlag(FLAGS_transcript_webhook_url);
  opts.transcript_webhook_secret = absl::GetFlag(FLAGS_transcript_webhook_secret);
  opts.elevenlabs_api_key = absl::GetFlag(FLAGS_elevenlabs_api_key);
  opts.elevenlabs_base_url = absl::GetFlag(FLAGS_elevenlabs_base_url);
  return bridge::RunUntilSignal("bridge-controller", bridge::controller::ControllerServer::Start(opts));
}
