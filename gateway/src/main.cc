// bridge-gateway: the WhatsApp webhook edge (see gateway/gateway_server.h).
#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/service.h"
#include "gateway/gateway_server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:3000", "HTTP(S) listen address (env PORT sets the port)");
ABSL_FLAG(std::string, controller, "127.0.0.1:7000",
          "Controller gRPC target, or a comma list of them (cluster mode: the leader is found)");
ABSL_FLAG(std::string, verify_token, "",
          "Webhook verification token (env WHATSAPP_WEBHOOK_VERIFY_TOKEN)");
ABSL_FLAG(std::string, app_secret, "",
          "Meta app secret for X-Hub-Signature-256 (env WEBHOOK_SIGNATURE_SECRET)");
ABSL_FLAG(std::string, tls_cert, "", "TLS certificate chain, PEM (env SSL_CERT_PATH)");
ABSL_FLAG(std::string, tls_key, "", "TLS private key, PEM (env SSL_KEY_PATH)");
ABSL_FLAG(int64_t, max_body_bytes, 1 << 20,
          "Largest webhook body accepted (413 above, enforced while reading, chunked or not)");
ABSL_FLAG(std::string, cluster_token, "",
          "Token presented to the controller's Ingest API (env BRIDGE_CLUSTER_TOKEN)");
ABSL_FLAG(int, max_connections, 2048,
          "Connections served at once; each holds a thread while open (slow and idle clients "
          "are closed after 5 s without a byte)");
ABSL_FLAG(absl::Duration, ingest_deadline, absl::Seconds(5),
          "How long to wait for the controller's durable ack before answering 503");

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  bridge::LoadConfig(argc, argv, "bridge-gateway",
                     {{"PORT", "listen", false, bridge::PortToListen},
                      {"WHATSAPP_WEBHOOK_VERIFY_TOKEN", "verify_token", true},
                      {"WEBHOOK_SIGNATURE_SECRET", "app_secret", true},
                      {"SSL_CERT_PATH", "tls_cert"},
                      {"SSL_KEY_PATH", "tls_key"},
                      {"BRIDGE_CLUSTER_TOKEN", "cluster_token", true}});
  bridge::gateway::GatewayOptions opts;
  opts.listen = absl::GetFlag(FLAGS_listen);
  opts.controller = absl::GetFlag(FLAGS_controller);
  opts.verify_token = absl::GetFlag(FLAGS_verify_token);
  opts.app_secret = absl::GetFlag(FLAGS_app_secret);
  opts.tls_cert_path = absl::GetFlag(FLAGS_tls_cert);
  opts.tls_key_path = absl::GetFlag(FLAGS_tls_key);
  opts.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  opts.ingest_deadline = absl::GetFlag(FLAGS_ingest_deadline);
  opts.max_connections = absl::GetFlag(FLAGS_max_connections);
  opts.cluster_token = absl::GetFlag(FLAGS_cluster_token);
  if (opts.max_connections < 1) {
    bridge::LogError("--max_connections must be at least 1");
    return 2;
  }
  if (opts.max_body_bytes < 1024) {
    bridge::LogError("--max_body_bytes must be at least 1024");
    return 2;
  }
  return bridge::RunUntilSignal("bridge-gateway", bridge::gateway::GatewayServer::Start(opts));
}
