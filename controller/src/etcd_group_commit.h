// The write path of the etcd store: group commit with fencing, in order.
//
// Commits queue in CommitAsync order. The writer thread sends a prefix of the
// queue as one etcd transaction whose success branch holds one nested
// transaction per commit, each with its own compares (so each succeeds or
// fails alone; the group shares one revision). Members never touch a common
// key (etcd refuses that, and per-key order must hold), and a commit that
// touches a key still in flight waits. Callbacks run in CommitAsync order,
// as with SQLite: a later commit is never applied in memory before an
// earlier one.
//
// Every group also puts a marker key under the writer's own name, created
// only if absent. A call that fails ambiguously (timeout, connection lost:
// it may have been applied) is resolved, not guessed: the writer claims the
// marker itself; if it can, the group can never apply later and failed; if it
// cannot, the group was applied, and each member's own key says whether its
// compares held. A commit acknowledged as failed has left nothing behind.
//
// Fencing: with a fence set, the group applies only while the election key is
// at the leader's revision; otherwise every member fails with Aborted.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/session_store.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace bridge::controller {

class EtcdGroupCommit {
 public:
  // `prefix` is the store's namespace ("bridge/"); store keys are under it.
  // `call_deadline` bounds each etcd call (tests shorten it).
  EtcdGroupCommit(std::shared_ptr<grpc::Channel> channel, std::string prefix,
                  absl::Duration call_deadline = absl::Seconds(10));
  ~EtcdGroupCommit();  // sends what is queued, waits for every callback

  void Start(int64_t revision);
  void Submit(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done);
  void Fence(std::string key, int64_t mod_revision);
  int64_t revision() const { return revision_.load(); }
  // Drops cached leases that have expired.
  void ForgetExpiredLeases();

 private:
  struct Pending;
  struct Group;

  bool Blocked(const Pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Ready() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Group> TakeGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriterLoop();
  void Send(const std::shared_ptr<Group>& g);
  void OnResponse(const std::shared_ptr<Group>& g, const grpc::Status& s);
  void Resolve(const std::shared_ptr<Group>& g);
  void Complete(const std::shared_ptr<Group>& g) ABSL_LOCKS_EXCLUDED(mu_);
  void Build(Group* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AttachLeases(Group* g);
  absl::StatusOr<int64_t> LeaseFor(absl::Time expires_at, absl::Time now);
  void NoteRevision(int64_t rev);

  const std::string prefix_;
  const absl::Duration call_deadline_;
  const std::string writer_id_;  // random per process: names the markers
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease_;
  std::atomic<int64_t> revision_{0};

  absl::Mutex mu_;
  std::deque<std::shared_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Pending>> inflight_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Group>> resend_ ABSL_GUARDED_BY(mu_);   // lease lost: once more
  std::deque<std::shared_ptr<Group>> resolve_ ABSL_GUARDED_BY(mu_);  // outcome unknown
  std::map<int64_t, std::shared_ptr<Group>> completed_ ABSL_GUARDED_BY(mu_);  // by seq
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_to_finish_ ABSL_GUARDED_BY(mu_) = 0;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // a thread is running callbacks
  int groups_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string fence_key_ ABSL_GUARDED_BY(mu_);
  int64_t fence_revision_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex leases_mu_;
  std::map<int64_t, int64_t> leases_ ABSL_GUARDED_BY(leases_mu_);  // bucket end -> lease id
  std::thread writer_;
};

}  // namespace bridge::controller
