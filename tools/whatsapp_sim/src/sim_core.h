// What the Graph API and the /sim/ control API share: options, state, the
// webhook sender, and the few actions both sides perform.
#pragma once

#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/http_server.h"
#include "meta_format.h"
#include "sim_state.h"
#include "webhook_delivery.h"
#include "whatsapp_sim/whatsapp_sim.h"

namespace bridge::whatsapp_sim {

class SimCore {
 public:
  explicit SimCore(const SimOptions& opts);
  ~SimCore() { Close(); }

  const SimOptions& opts() const { return opts_; }
  SimState& state() { return state_; }
  WebhookDelivery& webhooks() { return webhooks_; }
  BusinessNumber business() const;

  // Set once bound: "http(s)://host:port", with a wildcard host made dialable.
  void set_base_url(std::string url) { base_url_ = std::move(url); }
  const std::string& base_url() const { return base_url_; }

  // A download URL for the media on this simulator, expiring after
  // --media_url_ttl_s of simulated time. `origin` is how the caller reached
  // us (the Host header) when known.
  std::string DownloadUrl(const std::string& media_id, const std::string& origin);

  // Queues the status webhooks Meta sends for a business message: sent,
  // delivered, read (+ played for a voice note), timestamps increasing;
  // newest first under the out-of-order fault. With `failed_code`: sent,
  // then failed with that error, posted even without --status_webhooks
  // (the fault asked for it). `wa_id` is "" for a message sent to a BSUID.
  void QueueStatuses(const std::string& wa_id, const std::string& user_id,
                     const std::string& wamid, bool voice_note,
                     std::optional<int> failed_code = std::nullopt);

  // Queues the `calls` terminate webhook Meta sends when a call ends (the
  // business's reject or terminate, the caller's hang-up). `caller` is what
  // SimState::NoteCall kept; `duration_s` is left out when not given.
  void QueueCallEnd(const std::string& call_id, const nlohmann::json& caller,
                    const std::string& status, std::optional<int> duration_s = std::nullopt);

  // Fails the calls the business has not accepted in time, as Meta does
  // (--call_accept_window_s), on a thread of its own until Close.
  void StartCallTimer();

  // Sleeps for the latency fault; returns early at shutdown.
  void ApplyLatency();
  void Close();  // wakes every wait, stops the call timer

 private:
  const SimOptions opts_;
  SimState state_;
  WebhookDelivery webhooks_;
  std::string base_url_;
  absl::Notification closing_;
  std::thread call_timer_;
};

// Graph API routes (graph_api.cc) and /sim/ routes + phone page (control_api.cc).
void AddGraphRoutes(HttpServer& server, SimCore& core);
void AddControlRoutes(HttpServer& server, SimCore& core);

// The path media download URLs use (like Meta's lookaside host).
inline constexpr char kDownloadPath[] = "/whatsapp_business/attachments/";

}  // namespace bridge::whatsapp_sim
