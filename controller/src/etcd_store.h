// The cluster SessionStore: etcd v3 (docs/cluster.md has the key layout).
// Every key lives under "<ns>/"; the store revision is etcd's; a Txn is a
// nested etcd transaction; expiring keys are attached to shared leases, one
// per expiry bucket, not one per key. Writes go through EtcdGroupCommit
// (etcd_group_commit.h): grouped, in order, resolved when a call's outcome
// is unknown, and fenced.
//
// Fencing: once Fence() names the leader's election key, every commit is
// part of a transaction that first compares that key's revision, so a
// deposed controller (paused, partitioned) can never write again.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controller/session_store.h"
#include "etcd_client.h"

namespace bridge::controller {

class EtcdStore : public SessionStore {
 public:
  // Checks that etcd answers (a linearizable read) before returning.
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(const EtcdConfig& config,
                                                         std::shared_ptr<grpc::Channel> channel);

  // From now on a commit applies only while `key` (a key as named by
  // FullKey) is at `mod_revision`; otherwise it fails with Aborted and
  // nothing of it is applied.
  virtual void Fence(std::string key, int64_t mod_revision) = 0;
  // The etcd key for a store key ("<ns>/<key>").
  virtual std::string FullKey(const std::string& key) const = 0;
};

}  // namespace bridge::controller
