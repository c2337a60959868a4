// The controller's brain: the session table (one conversation per business
// number and user), each session's ordered turn queue, the worker registry
// and assignment, turn dispatch and results. Durable state goes through the
// SessionStore before anything is acknowledged; the in-memory tables are a
// cache rebuilt from the store at start-up, so a restart loses nothing.
//
// Thread-safe. Never blocks on disk: store writes are asynchronous and their
// callbacks re-enter here.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bridge/v1/ingest.pb.h"
#include "bridge/v1/sessions.pb.h"
#include "bridge/v1/worker_link.pb.h"
#include "controller/session_store.h"
#include "controller_metrics.h"

namespace bridge::controller {

namespace v1 = ::bridge::v1;

struct CoordinatorOptions {
  absl::Duration session_idle_timeout = absl::Minutes(30);
  absl::Duration session_max_duration = absl::Hours(24);
  absl::Duration heartbeat_timeout = absl::Seconds(15);
  absl::Duration dedup_ttl = absl::Hours(24 * 7);  // Meta retries for up to 7 days
  int max_turn_attempts = 5;
  // WhatsApp's customer-service window: a free-form reply to a message older
  // than 24 h fails with 131047, and Meta retries a webhook for days, so a
  // message whose own timestamp is older than this is recorded, not answered.
  absl::Duration max_message_age = absl::Hours(24);
  // What workers sent is kept this long so that status webhooks (which can
  // come days later, and after a restart) find the message they are about.
  absl::Duration sent_ttl = absl::Hours(24 * 7);
  // A `failed` status can overtake the worker's TurnResult naming its wamid:
  // it waits this long in memory for it.
  absl::Duration unmatched_failure_ttl = absl::Hours(1);
};

// Failed voice notes whose text would fail just the same (the window is
// closed, the account is blocked, the token expired, marketing-only limits)
// are not resent as text; every other failure of a voice note is, once.
bool ResendsVoiceAsText(int error_code);

// The controller's side of one worker's WorkerLink stream.
class WorkerChannel {
 public:
  virtual ~WorkerChannel() = default;
  // Queues a message to the worker; never blocks.
  virtual void Send(v1::ControllerMessage message) = 0;
  // Ends the stream (the worker was declared dead); never blocks.
  virtual void Close(const std::string& why) = 0;
};

class Coordinator {
 public:
  Coordinator(SessionStore* store, CoordinatorOptions options);
  ~Coordinator();

  // Rebuilds sessions and pending turns from the store.
  absl::Status Load();

  // Ingest.Deliver: every inbound message is durably queued (or recognised as
  // a duplicate) before `done` runs. Runs `done` on a store thread.
  void Ingest(const v1::DeliverRequest& request,
              std::function<void(absl::StatusOr<v1::DeliverResponse>)> done);

  // WorkerLink.
  absl::Status Attach(WorkerChannel* channel, const v1::WorkerHello& hello);
  void Heartbeat(WorkerChannel* channel, const v1::WorkerHeartbeat& heartbeat);
  void OnTurnResult(WorkerChannel* channel, const v1::TurnResult& result);
  void OnSessionReport(WorkerChannel* channel, const v1::SessionReport& report);
  void Detach(WorkerChannel* channel, const std::string& why);

  // Sessions API.
  std::vector<v1::Session> ListSessions(const v1::ListSessionsRequest& request);
  absl::StatusOr<v1::Session> GetSession(const std::string& id, bool reveal_ids);
  absl::StatusOr<v1::Session> EndSession(const std::string& id, const std::string& reason);
  std::vector<v1::Worker> ListWorkers(bool include_dead);
  absl::StatusOr<v1::Worker> DrainWorker(const std::string& id);
  // Session changes as they happen; returns an id for Unwatch.
  int Watch(std::function<void(const v1::SessionEvent&)> fn, bool reveal_ids);
  void Unwatch(int id);

  // Periodic housekeeping: dead workers, idle and over-long sessions.
  void Tick(absl::Time now);

 private:
  struct SessionEntry {
    v1::Session session;  // wa_id unmasked; masked on the way out
    std::deque<v1::Turn> pending;  // in arrival order
    std::deque<absl::Time> enqueued_at;  // parallel to pending (queue-wait metric)
    std::optional<v1::Turn> inflight;
    absl::Time inflight_since;
    bool durable = false;  // the session record has been committed
    // The last lines of the exchange (TurnResult.transcript), for a new
    // worker's first conversation. In memory only: user content is not
    // written to the store, so a controller restart forgets it.
    std::deque<std::string> recent;
  };
  struct WorkerEntry {
    WorkerChannel* channel = nullptr;  // null once dead
    v1::Worker worker;
    absl::Time last_heartbeat;
  };
  struct Watcher {
    std::function<void(const v1::SessionEvent&)> fn;
    bool reveal_ids;
  };

  // What a committed ingest transaction turned out to be (DeliverResponse).
  enum class Outcome { kAccepted, kDuplicate, kTooOld, kApplied, kStatus, kIgnored };
  // A store transaction and what to do in memory once it committed. `apply`
  // runs under mu_ (each lambda says ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_), so
  // its body is checked; the analysis cannot follow the std::function, so the
  // callers that run it lock mu_ by hand); `on_conflict` is the outcome when a
  // compare failed.
  struct Planned {
    Txn txn;
    std::function<Outcome()> apply;
    Outcome on_conflict = Outcome::kDuplicate;
  };
  struct SentRecord {
    std::string session_id;
    v1::SentMessage sent;
  };
  struct UnmatchedFailure {
    v1::StatusUpdate status;
    absl::Time seen;
  };
  class IngestBatch;  // coordinator_ingest.cc

  // Session index (coordinator_index.cc).
  SessionEntry* FindSession(const v1::UserRef& from, const std::string& phone_number_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionEntry* FindOrCreateSession(const v1::InboundMessage& m, bool* created, bool* changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Link(SessionEntry* s, const v1::UserRef& from) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Index(const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unindex(const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionEntry* Find(const std::string& session_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Ingest planning (coordinator_ingest.cc).
  v1::Turn NewTurn(const SessionEntry& s, const v1::InboundMessage& m, v1::TurnAction action)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Planned> PlanMessage(const v1::InboundMessage& m, Outcome* now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Planned PlanTooOld(SessionEntry* s, const v1::InboundMessage& m, Txn txn)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Planned> PlanSystem(const v1::InboundMessage& m, Outcome* now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Rekey(SessionEntry* s, const std::string& new_wa_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Outcome ApplyTurn(const v1::Turn& turn, Outcome outcome) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ApplyEdit(SessionEntry* s, const v1::Turn& edit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ApplyRevoke(SessionEntry* s, const v1::Turn& revoke) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Delivery tracking (coordinator_delivery.cc).
  std::optional<Planned> PlanStatus(const v1::StatusUpdate& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Planned PlanFailure(const SentRecord& rec, const v1::StatusUpdate& st)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordSent(const v1::TurnResult& r, Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MatchLateFailures(const v1::TurnResult& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommitPlanned(Planned p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SkipWhileWindowClosed(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Queue, dispatch, workers and session lifecycle (coordinator.cc).
  void Enqueue(SessionEntry* s, v1::Turn turn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DispatchAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  WorkerEntry* PickWorker(const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  WorkerEntry* WorkerOf(WorkerChannel* channel) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unassign(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void End(SessionEntry* s, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartConverseSession(WorkerChannel* channel, const v1::SessionReport& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const SessionEntry& s, Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistAsync(const SessionEntry& s, Txn txn = {}) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Watchers and masking (coordinator_sessions_api.cc).
  void Notify(v1::SessionEventType type, const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Session Public(const v1::Session& s, bool reveal_ids) const;

  SessionStore* store_;
  const CoordinatorOptions options_;
  ControllerMetrics metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<SessionEntry>> sessions_ ABSL_GUARDED_BY(mu_);
  // User keys -> session id: a session is indexed by its BSUID and by its
  // phone, so that it is found by either (PROTOCOLS.md A2).
  std::map<std::string, std::string> by_key_ ABSL_GUARDED_BY(mu_);
  // What workers sent (wamid -> record), for status correlation; a copy of
  // the store's "m/" keys, pruned in expiry order.
  std::map<std::string, SentRecord> sent_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<absl::Time, std::string>> sent_expiry_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, UnmatchedFailure> unmatched_failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerEntry> workers_ ABSL_GUARDED_BY(mu_);
  std::map<int, Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  int next_watcher_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_turn_seq_ ABSL_GUARDED_BY(mu_) = 1;
};

// "16505551234" -> "1650****234": ids an operator may see without reveal_ids.
std::string MaskId(const std::string& id);

}  // namespace bridge::controller
