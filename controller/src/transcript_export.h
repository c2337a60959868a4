// The durable export of finished turns to the business's own webhook.
//
// A caller that records a turn adds the export to the same store transaction
// (Enqueue: a put of "o/<idempotency key>", the outbox, kept 7 days), so the
// export is durable exactly when the turn is. One TranscriptExporter per
// controller then drains the outbox on its own thread: it POSTs each body as
// is to the configured URL with
//   Content-Type: application/json
//   X-Bridge-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed
//                           with the secret> (common/hub_signature.h)
//   Idempotency-Key: <the key given to Enqueue>
// and deletes the entry only after a 2xx answer: delivery is at least once
// (a receiver drops repeats by the Idempotency-Key), in no particular order
// (key order within a batch). Failures are retried per entry with
// exponential backoff (min_backoff doubling up to max_backoff), for as long
// as the entry lives (7 days). Only a controller that may act (the leader)
// sends; a standby keeps looking, so it takes over what the old leader left.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/session_store.h"

namespace httplib {
class Client;
}

namespace bridge::controller {

struct TranscriptExportOptions {
  std::string url;     // http(s)://host[:port]/path of the business's webhook
  std::string secret;  // HMAC key; a secret (redacted from logs)
  // False: send nothing (a standby controller). Null: always act.
  std::function<bool()> may_act;
  absl::Duration min_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Minutes(5);
  absl::Duration request_timeout = absl::Seconds(10);
  // The outbox is read again this often without a Kick(): entries written by
  // another controller, a standby that became the leader.
  absl::Duration poll_interval = absl::Seconds(5);
  std::string ca_file;  // empty: the system's trust store
  // Called on the exporter's thread once an entry was delivered and deleted
  // (the idempotency key); keep it short. Tests await it.
  std::function<void(const std::string&)> on_delivered;
};

class TranscriptExporter {
 public:
  // The outbox entry's lifetime: a webhook down longer loses the export.
  static constexpr absl::Duration kRetention = absl::Hours(24 * 7);
  static constexpr char kOutboxPrefix[] = "o/";
  static constexpr size_t kBatch = 100;  // due entries read per pass

  // Adds "o/<idempotency_key>" = json_body (expiring now + kRetention) to the
  // caller's transaction. A key enqueued again before delivery is replaced.
  static void Enqueue(Txn* txn, const std::string& idempotency_key,
                      const std::string& json_body, absl::Time now);

  // `store` must outlive the exporter. Nothing is sent before Start().
  TranscriptExporter(SessionStore* store, TranscriptExportOptions options);
  ~TranscriptExporter();  // Stop()s

  // InvalidArgument for a URL that is not http(s).
  absl::Status Start();
  // Ends the thread; an answer in flight is abandoned (the entry stays).
  void Stop();
  // Something new was committed to the outbox: look now.
  void Kick();

 private:
  struct Backoff {
    int failures = 0;
    absl::Time due;
  };
  void Run();
  // One pass over the outbox; returns when the next entry is due.
  absl::Duration Pass();
  // POSTs one entry; true on a 2xx.
  bool Send(const std::string& key, const std::string& body);
  void Delivered(const KeyValue& kv, const std::string& key);
  // Schedules the entry's next attempt; returns how long until it.
  absl::Duration Failed(const std::string& outbox_key);
  bool Stopping();

  SessionStore* const store_;
  const TranscriptExportOptions options_;
  std::string path_;  // of the URL, for requests
  std::string host_;  // of the URL, for logs (a path may carry a token)
  std::unique_ptr<httplib::Client> client_;  // the exporter's thread only (stop() aside)
  std::map<std::string, Backoff> backoff_;   // by outbox key; the exporter's thread only
  std::thread thread_;

  absl::Mutex mu_;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

// Registers bridge_controller_transcript_exports_total at 0 even without an
// exporter: the dashboard's panel then reads "none" rather than "no data".
void RegisterTranscriptExportMetrics();

}  // namespace bridge::controller
