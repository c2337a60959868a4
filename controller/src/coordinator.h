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
#include <set>
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
  // A worker whose stream broke keeps its sessions and running turns this
  // long: it may be alive (a network blip, a controller restart) and
  // re-attach with its turns still running; re-running them sooner would
  // answer twice. Longer than the worker's reconnect backoff (2 s) and a
  // controller restart; a worker that leaves on SIGTERM says so and skips it.
  absl::Duration reattach_grace = absl::Seconds(5);
  // Turns waiting or running, all sessions together. Over it, Ingest refuses
  // (RESOURCE_EXHAUSTED, the gateway answers 503 and Meta retries later)
  // instead of growing without bound while workers cannot keep up.
  int64_t max_pending_turns = 10000;
  // Ended sessions stay listed (and their dedup keys with them) this long.
  absl::Duration ended_retention = absl::Minutes(10);
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
  // Cluster mode: false once this controller may no longer lead (its lease
  // may have lapsed). Its writes are fenced by etcd; this stops what needs no
  // write: sending a turn it holds in memory to a worker. Null: always.
  std::function<bool()> may_dispatch;

  // Memory: a user's next agent conversation gets their last `memory_turns`
  // exchanges within `memory_ttl` as context (0 turns: none).
  int memory_turns = 10;
  absl::Duration memory_ttl = absl::Hours(24 * 30);
  // Every exchange is kept this long in the transcript, then expires.
  absl::Duration transcript_retention = absl::Hours(24 * 30);
  // Messages that queue while a turn runs are answered together.
  bool coalesce = true;
  // The agent's client tool for asking for a person, and what the user is
  // told then (sent by the worker with the assignment).
  std::string handoff_tool = "transfer_to_human";
  std::string handoff_message =
      "I'm passing this conversation to a member of our team. They will reply here shortly.";
  // Adds an exchange's export to the transaction that records it (the
  // transcript webhook's outbox), and hears when such a commit landed.
  std::function<void(const v1::TranscriptEntry&, Txn*)> export_entry;
  std::function<void()> exported;
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
  ~Coordinator();  // waits for the store callbacks that refer to it

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
  void OnLeaving(WorkerChannel* channel, const v1::WorkerLeaving& leaving);
  void OnCallReport(WorkerChannel* channel, const v1::CallReport& report);
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

  // Transcript (coordinator_transcript.cc): read from the store, oldest first.
  absl::StatusOr<v1::GetTranscriptResponse> GetTranscript(const v1::GetTranscriptRequest& req);
  // Human takeover (coordinator_takeover.cc).
  absl::StatusOr<v1::Session> TakeOver(const std::string& id, const std::string& op);
  absl::StatusOr<v1::SayResponse> Say(const std::string& id, const std::string& text);
  absl::StatusOr<v1::Session> HandBack(const std::string& id);
  // Erasure of what this controller keeps of a user (their sessions end);
  // the ElevenLabs conversations to delete go to `conversations`.
  absl::StatusOr<v1::ForgetUserResponse> ForgetUser(const std::string& phone_number_id,
                                                    const std::string& user,
                                                    std::vector<std::string>* conversations);
  // The erasure's audit record, once its ElevenLabs deletions were tried:
  // counts and conversation ids (deleted, failed), no user ids.
  absl::Status RecordErasure(const std::string& phone_number_id,
                             const v1::ForgetUserResponse& done);

  // Periodic housekeeping: dead and lost workers, idle and over-long
  // sessions, ended sessions past their retention, expired records.
  void Tick(absl::Time now);

 private:
  // mu_ for a public entry point; on release, the session events it queued
  // go to watchers outside mu_, in order.
  class ABSL_SCOPED_LOCKABLE Locked {
   public:
    explicit Locked(Coordinator* c) ABSL_EXCLUSIVE_LOCK_FUNCTION(c->mu_);
    ~Locked() ABSL_UNLOCK_FUNCTION();

   private:
    Coordinator* const c_;
  };
  struct SessionEntry {
    v1::Session session;  // wa_id unmasked; masked on the way out
    std::deque<v1::Turn> pending;  // in arrival order
    std::deque<absl::Time> enqueued_at;  // parallel to pending (queue-wait metric)
    std::optional<v1::Turn> inflight;
    absl::Time inflight_since;
    double inflight_queue_ms = 0;  // how long it waited (its transcript's latency)
    bool durable = false;  // the session record has been committed
  };
  struct WorkerEntry {
    // Null once the stream ended. Valid while mu_ is held: the stream's
    // OnDone detaches (under mu_) before it is destroyed.
    WorkerChannel* channel = nullptr;
    v1::Worker worker;
    absl::Time last_heartbeat;
    absl::Time lost_at;  // when it became LOST
    bool leaving = false;  // said WorkerLeaving: no grace when its stream ends
  };
  struct Watcher {
    int id;
    std::function<void(const v1::SessionEvent&)> fn;
    bool reveal_ids;
  };
  struct QueuedEvent {
    std::shared_ptr<const Watcher> watcher;
    v1::SessionEvent event;
  };

  // What a committed ingest transaction turned out to be (DeliverResponse).
  enum class Outcome { kAccepted, kDuplicate, kTooOld, kApplied, kStatus, kIgnored, kCall };
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
  // The live session of a user named by phone or BSUID (operators say either).
  SessionEntry* FindUser(const std::string& phone_number_id, const std::string& user)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

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
  bool WaitsForItsWorker(const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void GiveUp(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a worker's result for the turn it names, inflight or (after a
  // controller restart) still pending; false when it is stale. `acked_by`
  // hears result_ack once the result is durable.
  bool ApplyResult(const v1::TurnResult& r, const std::string& acked_by)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Ack(const std::string& worker_id, const v1::TurnResult& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Reconcile(WorkerEntry* w, const v1::WorkerHello& hello) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Lose(WorkerEntry* w, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Abandon(WorkerEntry* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evict(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DispatchAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  WorkerEntry* PickWorker(const SessionEntry& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A `calls` webhook entry (coordinator_calls.cc).
  Outcome OnCallEvent(const v1::CallEvent& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionEntry* StartCallSession(const v1::CallEvent& call, WorkerEntry* w)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Offers a call to a worker, holds it while none is attached, or has one
  // refuse it when none has room; false when it is still held.
  bool PlaceCall(const v1::CallEvent& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OfferCall(const v1::CallEvent& call, WorkerEntry* w, const std::string& refuse_reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Places the held calls a worker can take now; lets go of the ones held
  // too long to be answered in Meta's accept window.
  void PlaceHeldCalls(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionEntry* AddEphemeralSession(v1::Session s, WorkerEntry* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the call's worker it ends; `terminate`: it tells Meta too.
  void SendCallEnd(const SessionEntry& s, const std::string& reason, bool terminate)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndCallOfLostWorker(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordCall(SessionEntry* s, const v1::CallReport& report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  WorkerEntry* WorkerOf(WorkerChannel* channel) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unassign(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The turn goes back to the head of its session's queue, to run again.
  void Requeue(SessionEntry* s, v1::Turn turn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void End(SessionEntry* s, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartConverseSession(WorkerChannel* channel, const v1::SessionReport& r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const SessionEntry& s, Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistAsync(const SessionEntry& s, Txn txn = {}) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGauges(bool force = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // store_->CommitAsync for a callback that uses `this`: counted, so that
  // the destructor waits for it.
  void CommitAsync(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done);

  // Transcript and memory (coordinator_transcript.cc).
  void Record(SessionEntry* s, v1::TranscriptEntry entry, Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A worker's result as a transcript entry (its lines, latency, outcome).
  void RecordExchange(SessionEntry* s, const v1::Turn& turn, const v1::TurnResult& r,
                      double queue_ms, Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The user's last exchanges as context lines for `s`'s next conversation
  // (a session's assignment, a call's offer); counts them on the session.
  void FillMemory(SessionEntry* s, google::protobuf::RepeatedPtrField<std::string>* lines)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PruneMemory(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoadMemory(const std::vector<KeyValue>& records) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AddLinkedKeys(std::vector<std::string>* keys) ABSL_LOCKS_EXCLUDED(mu_);
  // Takeover (coordinator_takeover.cc): the state a session shows while a
  // person holds it or is asked for, else `run_state`.
  void SetRunState(SessionEntry* s, v1::SessionState run_state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyHandoff(SessionEntry* s, const v1::TurnResult& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopAgentReply(SessionEntry* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Coalescing (coordinator.cc): the turns queued behind `turn` join it.
  void Coalesce(SessionEntry* s, v1::Turn* turn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A dispatched turn back in the queue as the turns it was made of.
  void Split(SessionEntry* s, v1::Turn turn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Watchers and masking (coordinator_sessions_api.cc).
  void Notify(v1::SessionEventType type, const SessionEntry& s,
              const v1::TranscriptEntry* entry = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit() ABSL_LOCKS_EXCLUDED(mu_, emit_mu_);
  v1::Session Public(const v1::Session& s, bool reveal_ids) const;

  SessionStore* store_;
  const CoordinatorOptions options_;
  ControllerMetrics metrics_;
  absl::Mutex commits_mu_;
  int commits_ ABSL_GUARDED_BY(commits_mu_) = 0;
  // Held while events go to watchers (outside mu_), so that they arrive in
  // order and never after Unwatch returned.
  absl::Mutex emit_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  std::vector<QueuedEvent> events_ ABSL_GUARDED_BY(mu_);
  const absl::Time started_ = absl::Now();
  int64_t pending_total_ ABSL_GUARDED_BY(mu_) = 0;  // UpdateGauges
  absl::Time gauges_at_ ABSL_GUARDED_BY(mu_);  // the last walk
  bool gauges_stale_ ABSL_GUARDED_BY(mu_) = false;  // a walk was skipped since
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
  std::map<std::string, absl::Time> calls_seen_ ABSL_GUARDED_BY(mu_);  // call id -> first offer
  struct HeldCall {
    v1::CallEvent call;
    absl::Time since;
  };
  std::vector<HeldCall> held_calls_ ABSL_GUARDED_BY(mu_);  // offered while no worker was attached
  // A user's last exchanges (memory), by user key (BSUID, else phone): a
  // copy of the store's "r/" records, bounded by memory_turns and memory_ttl.
  std::map<std::string, std::deque<v1::TranscriptEntry>> memory_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::shared_ptr<const Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  // Watchers Emit may still call: Unwatch removes one under emit_mu_, so
  // none is called after Unwatch returned.
  std::set<int> live_watchers_ ABSL_GUARDED_BY(emit_mu_);
  int next_watcher_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_turn_seq_ ABSL_GUARDED_BY(mu_) = 1;
};

// "16505551234" -> "1650****234": ids an operator may see without reveal_ids.
std::string MaskId(const std::string& id);

}  // namespace bridge::controller
