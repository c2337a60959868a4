// The controller's durable state behind a small interface, shaped after etcd
// so that a cluster implementation can follow the embedded one: a flat key
// space, a store-wide revision that every write bumps, per-key mod revisions
// for compare-and-set, and expiry times (etcd: leases) for keys such as
// message-id deduplication that must vanish after 7 days.
//
// Every implementation must pass tests/unit/session_store_contract_test.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace bridge::controller {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;  // the store revision that last wrote this key
};

// One atomic transaction: if every compare holds, every op is applied.
struct Txn {
  struct Compare {
    std::string key;
    int64_t mod_revision;  // 0: the key must not exist
  };
  struct Op {
    enum Kind { kPut, kDelete, kDeletePrefix } kind;
    std::string key;
    std::string value;
    absl::Time expires_at = absl::InfiniteFuture();  // kPut only
  };
  std::vector<Compare> compares;
  std::vector<Op> ops;

  Txn& IfAbsent(std::string key) { compares.push_back({std::move(key), 0}); return *this; }
  Txn& IfRevision(std::string key, int64_t rev) { compares.push_back({std::move(key), rev}); return *this; }
  Txn& Put(std::string key, std::string value, absl::Time expires = absl::InfiniteFuture()) {
    ops.push_back({Op::kPut, std::move(key), std::move(value), expires});
    return *this;
  }
  Txn& Delete(std::string key) { ops.push_back({Op::kDelete, std::move(key), {}, {}}); return *this; }
  Txn& DeletePrefix(std::string prefix) {
    ops.push_back({Op::kDeletePrefix, std::move(prefix), {}, {}});
    return *this;
  }
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;

  // nullopt when absent or expired.
  virtual absl::StatusOr<std::optional<KeyValue>> Get(const std::string& key) = 0;
  // Keys starting with `prefix`, in key order, at most `limit` (0: all).
  virtual absl::StatusOr<std::vector<KeyValue>> Range(const std::string& prefix,
                                                      size_t limit = 0) = 0;
  // Applies the transaction durably, then calls `done` (on the store's own
  // thread: keep it short) with the new store revision, or FailedPrecondition
  // when a compare failed (nothing applied). Never blocks the caller.
  virtual void CommitAsync(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done) = 0;
  // The same, waiting for the result.
  absl::StatusOr<int64_t> Commit(Txn txn);
  // Drops keys whose expiry has passed; returns how many (0 where the server
  // expires them by itself: etcd's leases).
  virtual absl::StatusOr<int64_t> ExpireNow() = 0;
  virtual int64_t revision() const = 0;
};

// The smallest key greater than every key starting with `prefix` ("" when
// there is none: the range is open-ended). The end of a prefix range, for
// the stores (and etcd's range_end).
std::string PrefixEnd(std::string prefix);

// "sqlite:PATH" (embedded, WAL, group commit) or
// "etcd:HOST:PORT[,HOST:PORT...][/NAMESPACE]" (docs/cluster.md).
// InvalidArgument for a malformed spec (exit 2 in main).
absl::StatusOr<std::unique_ptr<SessionStore>> OpenSessionStore(const std::string& spec);

}  // namespace bridge::controller
