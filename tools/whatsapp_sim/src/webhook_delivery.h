// Posts webhooks to the gateway like Meta: signed raw bytes, retried on any
// answer but 200 (at once, then with backoff: WebhookRetryDelay), one
// background thread so deliveries leave in the order they were queued, and
// every attempt recorded in SimState for /sim/webhooks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/http_server.h"
#include "sim_state.h"

namespace bridge::whatsapp_sim {

enum class SignMode { kGood, kBad, kNone };

struct Delivery {
  std::string event;  // "message", "sent", "delivered", "read", "played", "raw"
  std::string id;     // the wamid it carries
  std::string body;   // the exact bytes to post and sign
  SignMode sign = SignMode::kGood;
  int max_attempts = 6;  // the first delivery + retries
};

class WebhookDelivery {
 public:
  WebhookDelivery(std::string url, std::string app_secret, absl::Duration retry_base,
                  SimState* state);
  ~WebhookDelivery() { Stop(); }

  bool enabled() const { return !url_.empty(); }
  void Start();
  // Drops what has not been delivered yet (logged) and joins the thread.
  void Stop();

  // Queues a delivery; attempts happen on the background thread.
  void Enqueue(Delivery d);
  // One attempt now, on the caller's thread (recorded like the others).
  absl::StatusOr<HttpResult> PostNow(const Delivery& d);

 private:
  struct Job {
    Delivery d;
    uint64_t number = 0;  // delivery number, shown in /sim/webhooks
    int attempt = 0;      // attempts made so far
  };

  void Run();
  void Attempt(Job job);
  absl::StatusOr<HttpResult> Post(const Job& job, bool duplicate);
  void Schedule(Job job, absl::Time due) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string url_;
  const std::string app_secret_;
  const absl::Duration retry_base_;
  SimState* const state_;

  absl::Mutex mu_;
  // Ordered by due time, then by queueing order: equal due times keep FIFO.
  std::map<std::pair<absl::Time, uint64_t>, Job> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t deliveries_ ABSL_GUARDED_BY(mu_) = 0;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace bridge::whatsapp_sim
