// whatsapp-sim: the WhatsApp Cloud API simulator (see whatsapp_sim/whatsapp_sim.h).
#include "absl/flags/flag.h"
#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/service.h"
#include "whatsapp_sim/whatsapp_sim.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "HTTP(S) listen address (port 0: any free port)");
ABSL_FLAG(std::string, webhook_url, "",
          "Where to post webhooks: the gateway's /webhook/whatsapp URL");
ABSL_FLAG(std::string, app_secret, "",
          "Meta app secret signing X-Hub-Signature-256 (env WEBHOOK_SIGNATURE_SECRET)");
ABSL_FLAG(std::string, access_token, "",
          "Bearer token every Graph call must carry (env WHATSAPP_ACCESS_TOKEN); empty: any");
ABSL_FLAG(std::string, verify_token, "",
          "Token /sim/verify sends (env WHATSAPP_WEBHOOK_VERIFY_TOKEN)");
ABSL_FLAG(std::string, phone_number_id, "106540352242922",
          "The business phone number id (env WHATSAPP_PHONE_NUMBER_ID)");
ABSL_FLAG(std::string, display_phone_number, "15550783881", "The business phone number");
ABSL_FLAG(int64_t, media_url_ttl_s, 300, "Lifetime of media download URLs (simulated seconds)");
ABSL_FLAG(bool, status_webhooks, true,
          "Post sent/delivered/read (+played for voice notes) for every business message");
ABSL_FLAG(std::string, tls_cert, "", "TLS certificate chain, PEM: serve HTTPS");
ABSL_FLAG(std::string, tls_key, "", "TLS private key, PEM");
ABSL_FLAG(int64_t, webhook_retry_base_ms, 1000,
          "Webhook retry backoff base: a failed delivery is retried at once, then after "
          "base, 2x base, 4x base ...");
ABSL_FLAG(int64_t, call_accept_window_s, 30,
          "A call not accepted this long after its connect webhook fails, as on Meta "
          "(about 30-60 s; simulated seconds)");

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  // The seed's env names, so one .env configures the bridge and its simulator
  // alike. Not SSL_CERT_PATH/PORT: those are the gateway's.
  bridge::LoadConfig(argc, argv, "whatsapp-sim",
                     {{"WEBHOOK_SIGNATURE_SECRET", "app_secret", true},
                      {"WHATSAPP_ACCESS_TOKEN", "access_token", true},
                      {"WHATSAPP_WEBHOOK_VERIFY_TOKEN", "verify_token", true},
                      {"WHATSAPP_PHONE_NUMBER_ID", "phone_number_id"}});
  bridge::whatsapp_sim::SimOptions opts;
  opts.listen = absl::GetFlag(FLAGS_listen);
  opts.webhook_url = absl::GetFlag(FLAGS_webhook_url);
  opts.app_secret = absl::GetFlag(FLAGS_app_secret);
  opts.access_token = absl::GetFlag(FLAGS_access_token);
  opts.verify_token = absl::GetFlag(FLAGS_verify_token);
  opts.phone_number_id = absl::GetFlag(FLAGS_phone_number_id);
  opts.display_phone_number = absl::GetFlag(FLAGS_display_phone_number);
  opts.media_url_ttl_s = absl::GetFlag(FLAGS_media_url_ttl_s);
  opts.status_webhooks = absl::GetFlag(FLAGS_status_webhooks);
  opts.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  opts.tls_key = absl::GetFlag(FLAGS_tls_key);
  opts.webhook_retry_base_ms = absl::GetFlag(FLAGS_webhook_retry_base_ms);
  opts.call_accept_window_s = absl::GetFlag(FLAGS_call_accept_window_s);
  return bridge::RunUntilSignal("whatsapp-sim", bridge::whatsapp_sim::WhatsAppSim::Start(opts));
}
