// whatsapp-sim: the WhatsApp Cloud API as a real server (PROTOCOLS.md A) so
// that our production Graph client and gateway run against it unchanged, by
// base URL. Two halves:
//  - the business side: the Graph API under any /vNN.N/ prefix (media
//    resolve, bearer-protected download URLs that expire, multipart upload
//    that insists on Ogg/Opus mono for audio/ogg, messages, read + typing),
//    with Meta's error bodies and codes;
//  - the user side: /sim/ control endpoints that make users write (texts,
//    voice notes), build the webhook exactly as Meta does, sign it, post it to
//    the gateway and retry like Meta, plus status webhooks for what the
//    business sends, inspection (outbox, reads, webhook attempts) and faults.
// Everything it saw is kept in memory for inspection; see DESIGN.md §9.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/service.h"

namespace bridge::whatsapp_sim {

struct SimOptions {
  std::string listen = "127.0.0.1:0";
  std::string webhook_url;     // the gateway's /webhook/whatsapp; empty: no deliveries
  std::string app_secret;      // signs X-Hub-Signature-256
  std::string access_token;    // the bearer every Graph call needs; empty: any
  std::string verify_token;    // sent by /sim/verify
  std::string phone_number_id = "106540352242922";
  std::string display_phone_number = "15550783881";
  std::string waba_id = "102290129340398";  // entry[].id in webhooks
  int64_t media_url_ttl_s = 300;            // Meta: download URLs live 5 minutes
  bool status_webhooks = true;              // sent/delivered/read(/played) back
  std::string tls_cert;                     // HTTPS when both are set
  std::string tls_key;
  int64_t webhook_retry_base_ms = 1000;     // see WebhookRetryDelay
  // A call the business has not accepted this long after the connect webhook
  // fails (a FAILED terminate webhook). Meta: about 30-60 s (PROTOCOLS.md A6);
  // the low end, so a bridge that answers late learns it here, not live.
  int64_t call_accept_window_s = 30;        // simulated seconds
};

// Endpoints: http= (Graph API, media downloads, /sim/ and the phone page).
class WhatsAppSim : public Service {
 public:
  // Binds, starts serving and the webhook sender; InvalidArgument for bad
  // options (exit code 2 through RunUntilSignal).
  static absl::StatusOr<std::unique_ptr<WhatsAppSim>> Start(const SimOptions& opts);

  virtual std::string http_address() const = 0;  // host:port actually bound
  // "http(s)://host:port": what WHATSAPP_GRAPH_BASE_URL should be set to.
  virtual std::string base_url() const = 0;
};

// How long to wait before delivery attempt `attempt` (1 = the first delivery)
// of a webhook whose earlier attempts were not answered 200.
absl::Duration WebhookRetryDelay(int attempt, absl::Duration base);

}  // namespace bridge::whatsapp_sim
