// Exactly one controller of a cluster leads: the one whose put of the
// election key "<ns>/leader" succeeded while the key was absent. The key
// carries the leader's advertised address (standbys tell clients where to go)
// and is attached to the leader's etcd lease, renewed every third of
// --leader_lease. A leader that dies stops renewing; etcd deletes the key when
// the lease lapses and a standby's next campaign (every lease/10) wins.
//
// Safety does not rest on the timing: the key's revision fences every write
// of the leader (EtcdStore::Fence), so a paused or partitioned ex-leader is
// refused by etcd itself. Leading() bounds what it does without writing
// (dispatching turns it already holds): false as soon as the lease may have
// lapsed, measured from when the last renewal was sent.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "etcd_client.h"


namespace bridge::controller {

class LeaderElection {
 public:
  struct Options {
    std::string advertise;  // this controller's gRPC address, as clients reach it
    absl::Duration lease = absl::Seconds(5);
  };
  struct Callbacks {
    // On the election thread, once this controller leads; `fence_revision`
    // is the election key's revision. Must return quickly (the lease is
    // renewed on the same thread): load state elsewhere.
    std::function<void(int64_t fence_revision)> elected;
    // The lease may have lapsed or the key is gone: stop acting at once.
    std::function<void(const std::string& why)> deposed;
    // Whoever leads changed (this controller or another one).
    std::function<void(const std::string& leader)> leader_changed;
  };

  LeaderElection(std::shared_ptr<grpc::Channel> channel, const EtcdConfig& config,
                 Options options, Callbacks callbacks);
  // Starts campaigning (callbacks may run from here on).
  void Start();
  // Stops campaigning; a leader revokes its lease, so that a standby takes
  // over at once instead of after the lease.
  ~LeaderElection();

  // True while this controller surely leads.
  bool Leading() const;
  // The leader's address as last seen ("" when none is known).
  std::string leader() const ABSL_LOCKS_EXCLUDED(mu_);
  // The election key (a full etcd key), for EtcdStore::Fence.
  const std::string& key() const { return key_; }
  // The lease etcd granted (it may raise a short one to its minimum).
  absl::Duration lease() const { return absl::Seconds(ttl_seconds_.load()); }

 private:
  void Run();
  void Campaign();
  void Renew();
  bool GrantLease();
  void RevokeLease();
  void SetLeader(const std::string& leader) ABSL_LOCKS_EXCLUDED(mu_);
  void Depose(const std::string& why);

  const std::string key_;
  const Options options_;
  const Callbacks callbacks_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease_stub_;

  // Election thread only.
  int64_t lease_id_ = 0;
  int64_t lease_sent_ns_ = 0;  // steady clock: when the grant of lease_id_ was sent
  int64_t fence_revision_ = 0;
  bool leading_ = false;
  bool etcd_reachable_ = true;

  std::atomic<int64_t> ttl_seconds_{0};
  std::atomic<int64_t> valid_until_ns_{0};  // steady-clock ns; 0: not leading
  mutable absl::Mutex mu_;
  std::string leader_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace bridge::controller
