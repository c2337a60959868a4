// The WhatsApp webhook edge: answers Meta's verification challenge, checks
// X-Hub-Signature-256 over the raw body, parses the Cloud API payload and
// hands each POST to the controller (bridge.v1.Ingest), answering 200 only
// after the controller's durable ack. Also /healthz, /readyz and /metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/service.h"

namespace bridge::gateway {

struct GatewayOptions {
  std::string listen = "0.0.0.0:3000";
  std::string controller = "127.0.0.1:7000";
  std::string verify_token;   // WHATSAPP_WEBHOOK_VERIFY_TOKEN
  std::string app_secret;     // WEBHOOK_SIGNATURE_SECRET
  std::string tls_cert_path;  // SSL_CERT_PATH: HTTPS when set with the key
  std::string tls_key_path;   // SSL_KEY_PATH
  int64_t max_body_bytes = 1 << 20;
  // Connections served at once (each holds a thread while open): slow and
  // idle clients cannot take them all below this many.
  int max_connections = 2048;
  std::string cluster_token;  // presented to the controller (BRIDGE_CLUSTER_TOKEN)
  absl::Duration ingest_deadline = absl::Seconds(5);  // then 503: WhatsApp retries
};

// Endpoints: http= (webhook, health and metrics on one port).
class GatewayServer : public Service {
 public:
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Start(const GatewayOptions& opts);

  virtual std::string http_address() const = 0;
};

}  // namespace bridge::gateway
