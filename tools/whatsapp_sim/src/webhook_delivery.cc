#include "webhook_delivery.h"

#include "common/hub_signature.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "whatsapp_sim/whatsapp_sim.h"

namespace bridge::whatsapp_sim {
namespace {

// Meta gives an endpoint a few seconds before it counts a delivery as failed;
// this also bounds how long Stop() can wait for an attempt in flight.
constexpr absl::Duration kPostTimeout = absl::Seconds(10);

}  // namespace

WebhookDelivery::WebhookDelivery(std::string url, std::string app_secret,
                                 absl::Duration retry_base, SimState* state)
    : url_(std::move(url)),
      app_secret_(std::move(app_secret)),
      retry_base_(retry_base),
      state_(state) {}

void WebhookDelivery::Start() {
  if (enabled()) thread_ = std::thread([this] { Run(); });
}

void WebhookDelivery::Stop() {
  size_t dropped = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    dropped = queue_.size();
    queue_.clear();
  }
  if (thread_.joinable()) thread_.join();
  if (dropped > 0) LogWarn("webhook deliveries dropped at shutdown", {{"count", dropped}});
}

void WebhookDelivery::Enqueue(Delivery d) {
  Job job;
  job.d = std::move(d);
  {
    absl::MutexLock lock(&mu_);
    job.number = ++deliveries_;
  }
  Schedule(std::move(job), absl::Now());
}

void WebhookDelivery::Schedule(Job job, absl::Time due) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  queue_.emplace(std::make_pair(due, ++seq_), std::move(job));
  wake_ = true;
}

absl::StatusOr<HttpResult> WebhookDelivery::PostNow(const Delivery& d) {
  Job job;
  job.d = d;
  job.attempt = 1;
  {
    absl::MutexLock lock(&mu_);
    job.number = ++deliveries_;
  }
  return Post(job, /*duplicate=*/false);
}

void WebhookDelivery::Run() {
  mu_.Lock();
  while (!stopping_) {
    if (queue_.empty()) {
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wake_; };
      wake_ = false;
      mu_.Await(absl::Condition(&ready));
      continue;
    }
    const absl::Time due = queue_.begin()->first.first;
    if (due > absl::Now()) {
      // Sleep until the head is due or something new is queued (it may be
      // due earlier).
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wake_; };
      wake_ = false;
      mu_.AwaitWithDeadline(absl::Condition(&woken), due);
      continue;
    }
    Job job = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    mu_.Unlock();
    Attempt(std::move(job));
    mu_.Lock();
  }
  mu_.Unlock();
}

void WebhookDelivery::Attempt(Job job) {
  ++job.attempt;
  // Meta sometimes delivers the same webhook twice at the same time: the
  // copy goes out concurrently with the first attempt.
  std::thread copy;
  if (job.attempt == 1 && state_->CurrentFaults().webhook_duplicate) {
    copy = std::thread([this, job] { (void)Post(job, /*duplicate=*/true); });
  }
  absl::StatusOr<HttpResult> res = Post(job, /*duplicate=*/false);
  if (copy.joinable()) copy.join();
  if (res.ok() && res->status == 200) return;
  if (job.attempt >= job.d.max_attempts) {
    LogWarn("webhook delivery given up", {{"event", job.d.event}, {"attempts", job.attempt}});
    return;
  }
  const absl::Time due = absl::Now() + WebhookRetryDelay(job.attempt + 1, retry_base_);
  Schedule(std::move(job), due);
}

absl::StatusOr<HttpResult> WebhookDelivery::Post(const Job& job, bool duplicate) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (job.d.sign != SignMode::kNone) {
    // A bad signature is the right one under a different key: well-formed,
    // so only a real HMAC check can refuse it.
    std::string key = job.d.sign == SignMode::kGood ? app_secret_ : app_secret_ + "-wrong";
    headers.emplace_back("X-Hub-Signature-256", SignBody(key, job.d.body));
  }
  headers.emplace_back("User-Agent", "facebookexternalua");
  absl::StatusOr<HttpResult> res =
      HttpSend("POST", url_, headers, job.d.body, "application/json", kPostTimeout);
  nlohmann::json rec = {{"delivery", job.number}, {"event", job.d.event}, {"id", job.d.id},
                        {"attempt", job.attempt}, {"duplicate", duplicate},
                        {"status", res.ok() ? res->status : 0}};
  if (!res.ok()) rec["error"] = std::string(res.status().message());
  state_->RecordAttempt(std::move(rec));
  LogInfo("webhook attempt", {{"event", job.d.event},
                              {"delivery", job.number},
                              {"attempt", job.attempt},
                              {"status", res.ok() ? res->status : 0},
                              {"duplicate", duplicate ? "yes" : "no"}});
  return res;
}

}  // namespace bridge::whatsapp_sim
