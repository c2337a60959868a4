#include "transcript_export.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/hub_signature.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/redact.h"
#include "common/url.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"

namespace bridge::controller {
namespace {

struct ExportMetrics {
  prometheus::Counter* delivered;
  prometheus::Counter* failed;  // attempts that got no 2xx
};

// Registered once per process, whatever the number of exporters.
const ExportMetrics& Metrics() {
  static const ExportMetrics metrics = [] {
    auto& family = prometheus::BuildCounter()
                       .Name("bridge_controller_transcript_exports_total")
                       .Help("Transcript exports to the business webhook, by outcome "
                             "(failed counts attempts; each is retried)")
                       .Register(*MetricsRegistry());
    return ExportMetrics{&family.Add({{"outcome", "delivered"}}),
                         &family.Add({{"outcome", "failed"}})};
  }();
  return metrics;
}

absl::Duration Clamp(absl::Duration d, absl::Duration lo, absl::Duration hi) {
  return std::max(lo, std::min(d, hi));
}

}  // namespace

void RegisterTranscriptExportMetrics() { (void)Metrics(); }

void TranscriptExporter::Enqueue(Txn* txn, const std::string& idempotency_key,
                                 const std::string& json_body, absl::Time now) {
  txn->Put(absl::StrCat(kOutboxPrefix, idempotency_key), json_body, now + kRetention);
}

TranscriptExporter::TranscriptExporter(SessionStore* store, TranscriptExportOptions options)
    : store_(store), options_(std::move(options)) {}

TranscriptExporter::~TranscriptExporter() { Stop(); }

absl::Status TranscriptExporter::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("exporter already started");
  absl::StatusOr<UrlParts> url = SplitUrl(options_.url);
  if (!url.ok()) return url.status();
  path_ = url->path_and_query;
  if (!options_.secret.empty()) RegisterSecret(options_.secret);
  absl::StatusOr<HttpClient> http = NewHttpClient(url->origin, options_.request_timeout,
                                                  options_.ca_file);
  if (!http.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("transcript webhook: ", http.status().message()));
  }
  host_ = http->host;
  client_ = std::move(http->client);
  Metrics();
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void TranscriptExporter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (!thread_.joinable()) return;
  client_->stop();  // abandons a request in flight (httplib allows it from another thread)
  thread_.join();
}

void TranscriptExporter::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

bool TranscriptExporter::Stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void TranscriptExporter::Run() {
  while (!Stopping()) {
    const absl::Duration wait = Pass();
    absl::MutexLock lock(&mu_);
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
    kicked_ = false;
  }
}

absl::Duration TranscriptExporter::Pass() {
  auto may_act = [this] { return !options_.may_act || options_.may_act(); };
  if (!may_act()) return options_.poll_interval;
  // Entries waiting out a backoff do not use up the batch: due ones behind
  // them are still found.
  const size_t limit = kBatch + backoff_.size();
  absl::StatusOr<std::vector<KeyValue>> entries = store_->Range(kOutboxPrefix, limit);
  if (!entries.ok()) {
    LogWarn("transcript export: cannot read the outbox", {{"error", entries.status()}});
    return options_.min_backoff;
  }
  absl::Time next = absl::Now() + options_.poll_interval;
  std::set<std::string> seen;
  int delivered = 0;
  for (const KeyValue& kv : *entries) {
    if (Stopping() || !may_act()) return options_.poll_interval;
    seen.insert(kv.key);
    auto it = backoff_.find(kv.key);
    if (it != backoff_.end() && it->second.due > absl::Now()) {
      next = std::min(next, it->second.due);
      continue;
    }
    const std::string key = kv.key.substr(sizeof(kOutboxPrefix) - 1);
    if (Send(key, kv.value)) {
      Delivered(kv, key);
      ++delivered;
    } else {
      next = std::min(next, absl::Now() + Failed(kv.key));
    }
  }
  if (entries->size() < limit) {
    std::erase_if(backoff_, [&](const auto& e) { return seen.count(e.first) == 0; });
  } else if (delivered > 0) {
    return absl::ZeroDuration();  // a full batch went out: more may wait
  }
  return std::max(absl::ZeroDuration(), next - absl::Now());
}

bool TranscriptExporter::Send(const std::string& key, const std::string& body) {
  const httplib::Headers headers = {{"X-Bridge-Signature-256", SignBody(options_.secret, body)},
                                    {"Idempotency-Key", key}};
  httplib::Result res = client_->Post(path_, headers, body, "application/json");
  if (res && res->status >= 200 && res->status < 300) return true;
  // The host only: a webhook path may carry a token. The body is the user's words.
  LogWarn("transcript export refused; will retry",
          {{"host", host_}, {"idempotency_key", key},
           {"answer", res ? absl::StrCat("HTTP ", res->status) : httplib::to_string(res.error())}});
  return false;
}

void TranscriptExporter::Delivered(const KeyValue& kv, const std::string& key) {
  Metrics().delivered->Increment();
  backoff_.erase(kv.key);
  // Only the version that was sent: one enqueued again meanwhile goes out too.
  absl::StatusOr<int64_t> done =
      store_->Commit(Txn().IfRevision(kv.key, kv.mod_revision).Delete(kv.key));
  if (!done.ok()) {
    if (!absl::IsFailedPrecondition(done.status())) {
      LogWarn("transcript export: delivered but not removed; it will be sent again",
              {{"idempotency_key", key}, {"error", done.status()}});
    }
    return;
  }
  if (options_.on_delivered) options_.on_delivered(key);
}

absl::Duration TranscriptExporter::Failed(const std::string& outbox_key) {
  Metrics().failed->Increment();
  Backoff& b = backoff_[outbox_key];
  const absl::Duration delay =
      Clamp(options_.min_backoff * (int64_t{1} << std::min(b.failures, 30)), options_.min_backoff,
            options_.max_backoff);
  ++b.failures;
  b.due = absl::Now() + delay;
  return delay;
}

}  // namespace bridge::controller
