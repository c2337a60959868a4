#include "sim_core.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace bridge::whatsapp_sim {

SimCore::SimCore(const SimOptions& opts)
    : opts_(opts),
      webhooks_(opts.webhook_url, opts.app_secret,
                absl::Milliseconds(opts.webhook_retry_base_ms), &state_) {}

BusinessNumber SimCore::business() const {
  return {opts_.waba_id, opts_.display_phone_number, opts_.phone_number_id};
}

std::string SimCore::DownloadUrl(const std::string& media_id, const std::string& origin) {
  int64_t expires = 0;
  std::string ticket =
      state_.IssueTicket(media_id, absl::Seconds(opts_.media_url_ttl_s), &expires);
  std::string base = base_url_;
  if (!origin.empty()) base = absl::StrCat(opts_.tls_cert.empty() ? "http://" : "https://", origin);
  // Shaped like Meta's lookaside URLs: mid, ext (the expiry), hash.
  return absl::StrCat(base, kDownloadPath, "?mid=", UrlEncode(media_id), "&ext=", expires,
                      "&hash=", ticket);
}

void SimCore::QueueStatuses(const std::string& wa_id, const std::string& user_id,
                            const std::string& wamid, bool voice_note,
                            std::optional<int> failed_code) {
  if (!webhooks_.enabled() || (!opts_.status_webhooks && !failed_code)) return;
  std::vector<std::string> order = {"sent", "delivered", "read"};
  if (voice_note) order.push_back("played");
  if (failed_code) order = {"sent", "failed"};
  const int64_t t0 = state_.NowUnix();
  std::vector<Delivery> out;
  for (size_t i = 0; i < order.size(); ++i) {
    StatusUpdate s{wamid, order[i], t0 + static_cast<int64_t>(i), wa_id, user_id,
                   order[i] == "failed" ? *failed_code : 0};
    out.push_back(Delivery{order[i], wamid, SerializeLikeMeta(StatusWebhook(business(), s))});
  }
  // Meta does not promise order (a `read` can come before `delivered`);
  // consumers must sort by timestamp. The fault makes that happen every time.
  if (state_.CurrentFaults().webhook_out_of_order) std::reverse(out.begin(), out.end());
  for (Delivery& d : out) webhooks_.Enqueue(std::move(d));
}

void SimCore::ApplyLatency() {
  const int ms = state_.CurrentFaults().latency_ms;
  if (ms > 0) closing_.WaitForNotificationWithTimeout(absl::Milliseconds(ms));
}

void SimCore::Close() {
  if (!closing_.HasBeenNotified()) closing_.Notify();
  state_.Close();
  if (call_timer_.joinable()) call_timer_.join();
}

void SimCore::StartCallTimer() {
  call_timer_ = std::thread([this] {
    while (!closing_.HasBeenNotified()) {
      for (auto& [call_id, caller] : state_.EndUnacceptedCalls()) {
        LogInfo("call failed: not accepted in time",
                {{"call_id", call_id}, {"window_s", absl::StrCat(opts_.call_accept_window_s)}});
        QueueCallEnd(call_id, caller, "FAILED");
      }
      // Simulated time: /sim/clock can jump past a deadline, so look at
      // least once a second rather than sleeping until the deadline.
      absl::Duration wait = absl::Seconds(1);
      if (std::optional<absl::Time> next = state_.NextAcceptDeadline()) {
        wait = std::clamp(*next - state_.Now(), absl::Milliseconds(10), wait);
      }
      closing_.WaitForNotificationWithTimeout(wait);
    }
  });
}

void SimCore::QueueCallEnd(const std::string& call_id, const nlohmann::json& caller,
                           const std::string& status, std::optional<int> duration_s) {
  state_.EndCall(call_id);
  const std::string wa_id = caller.value("wa_id", "");
  ojson end = {{"id", call_id}, {"from", wa_id}, {"event", "terminate"},
               {"timestamp", absl::StrCat(state_.NowUnix())}, {"status", status}};
  if (duration_s) end["duration"] = *duration_s;
  Delivery d;
  d.event = "call";
  d.id = call_id;
  d.body = SerializeLikeMeta(CallWebhook(business(), std::move(end), wa_id, caller.value("name", "")));
  webhooks_.Enqueue(std::move(d));
}

}  // namespace bridge::whatsapp_sim
