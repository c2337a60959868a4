#include "etcd_store.h"

#include <atomic>
#include <deque>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace bridge::controller {
namespace {

namespace pb = ::etcdserverpb;

constexpr absl::Duration kCallDeadline = absl::Seconds(10);
// Commits per etcd request (etcd's --max-txn-ops, 128 by default, bounds the
// branches of one transaction), and requests in flight at once: while some
// are being committed the next group fills.
constexpr size_t kMaxGroup = 128;
constexpr int kMaxGroupsInFlight = 4;
// Keys per page when loading: bounded messages, whatever the table size.
constexpr int64_t kPageSize = 500;

// The keys a transaction reads or writes; a prefix covers every key under it.
struct KeySpan {
  std::string key;
  bool prefix = false;
};

bool Overlap(const KeySpan& a, const KeySpan& b) {
  if (a.prefix && absl::StartsWith(b.key, a.key)) return true;
  if (b.prefix && absl::StartsWith(a.key, b.key)) return true;
  return a.key == b.key;
}

bool Overlap(const std::vector<KeySpan>& a, const std::vector<KeySpan>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (Overlap(x, y)) return true;
    }
  }
  return false;
}

std::vector<KeySpan> SpansOf(const Txn& txn) {
  std::vector<KeySpan> spans;
  for (const auto& c : txn.compares) spans.push_back({c.key, false});
  for (const auto& op : txn.ops) spans.push_back({op.key, op.kind == Txn::Op::kDeletePrefix});
  return spans;
}

// etcd refuses a transaction that writes one key twice; ours may (a session
// persisted twice in one plan). The last write of a key wins, as in SQLite.
std::vector<Txn::Op> LastWritePerKey(const std::vector<Txn::Op>& ops) {
  std::vector<Txn::Op> out;
  for (const auto& op : ops) {
    if (op.kind != Txn::Op::kDeletePrefix) {
      std::erase_if(out, [&](const Txn::Op& o) {
        return o.kind != Txn::Op::kDeletePrefix && o.key == op.key;
      });
    }
    out.push_back(op);
  }
  return out;
}

class EtcdStoreImpl final : public EtcdStore {
 public:
  EtcdStoreImpl(const EtcdConfig& config, std::shared_ptr<grpc::Channel> channel)
      : prefix_(config.ns + "/"),
        kv_(pb::KV::NewStub(channel)),
        lease_(pb::Lease::NewStub(channel)) {}

  ~EtcdStoreImpl() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (writer_.joinable()) writer_.join();
  }

  absl::Status Start() {
    pb::RangeRequest req;
    req.set_key(prefix_);
    req.set_range_end(PrefixEnd(prefix_));
    req.set_count_only(true);
    pb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = kv_->Range(&ctx, req, &resp); !s.ok()) return EtcdError(s, "open");
    revision_ = resp.header().revision();
    writer_ = std::thread([this] { WriterLoop(); });
    return absl::OkStatus();
  }

  std::string FullKey(const std::string& key) const override { return prefix_ + key; }

  void Fence(std::string key, int64_t mod_revision) override {
    absl::MutexLock lock(&mu_);
    fence_key_ = std::move(key);
    fence_revision_ = mod_revision;
  }

  absl::StatusOr<std::optional<KeyValue>> Get(const std::string& key) override {
    pb::RangeRequest req;
    req.set_key(FullKey(key));
    auto page = RangeCall(req);
    if (!page.ok()) return page.status();
    if (page->kvs().empty()) return std::nullopt;
    const auto& kv = page->kvs(0);
    return KeyValue{key, kv.value(), kv.mod_revision()};
  }

  // Linearizable; paged at one revision, so a big table is one snapshot.
  absl::StatusOr<std::vector<KeyValue>> Range(const std::string& prefix, size_t limit) override {
    std::vector<KeyValue> out;
    std::string from = FullKey(prefix);
    const std::string end = PrefixEnd(FullKey(prefix));
    int64_t at_revision = 0;
    for (;;) {
      pb::RangeRequest req;
      req.set_key(from);
      req.set_range_end(end.empty() ? std::string(1, '\0') : end);
      req.set_revision(at_revision);
      const int64_t want = limit == 0 ? kPageSize
                                      : std::min<int64_t>(kPageSize, limit - out.size());
      req.set_limit(want);
      auto page = RangeCall(req);
      if (!page.ok()) return page.status();
      at_revision = page->header().revision();
      for (const auto& kv : page->kvs()) {
        out.push_back(KeyValue{kv.key().substr(prefix_.size()), kv.value(), kv.mod_revision()});
      }
      if (!page->more() || page->kvs().empty() || (limit != 0 && out.size() >= limit)) break;
      from = page->kvs(page->kvs_size() - 1).key() + '\0';
    }
    return out;
  }

  void CommitAsync(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done) override {
    {
      absl::MutexLock lock(&mu_);
      if (!stopping_) {
        auto p = std::make_shared<Pending>();
        p->spans = SpansOf(txn);
        p->txn = std::move(txn);
        p->done = std::move(done);
        queue_.push_back(std::move(p));
        return;
      }
    }
    done(absl::UnavailableError("etcd: store is closing"));
  }

  // etcd revokes expired leases, and their keys, by itself.
  absl::StatusOr<int64_t> ExpireNow() override {
    absl::MutexLock lock(&leases_mu_);
    const absl::Time now = absl::Now();
    std::erase_if(leases_, [&](const auto& e) { return absl::FromUnixSeconds(e.first) <= now; });
    return 0;
  }

  int64_t revision() const override { return revision_.load(); }

 private:
  struct Pending {
    Txn txn;
    std::vector<KeySpan> spans;
    std::function<void(absl::StatusOr<int64_t>)> done;
    int retries = 0;
  };
  // Commits sent together: one etcd transaction whose success branch holds
  // one nested transaction per commit, each with its own compares. One
  // request, one raft entry, one revision, but each commit still succeeds or
  // fails on its own compares. etcd refuses a request that writes one key in
  // two branches, and per-key order must hold: members never overlap.
  struct Group {
    std::vector<std::shared_ptr<Pending>> members;
    bool fenced = false;
    grpc::ClientContext ctx;
    pb::TxnRequest request;
    pb::TxnResponse response;
  };

  absl::StatusOr<pb::RangeResponse> RangeCall(const pb::RangeRequest& req) {
    pb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = kv_->Range(&ctx, req, &resp); !s.ok()) return EtcdError(s, "range");
    return resp;
  }

  bool Blocked(const Pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& f : inflight_) {
      if (Overlap(p.spans, f->spans)) return true;
    }
    return false;
  }

  // The queued commits that overlap nothing in flight, nothing queued before
  // them and each other (per-key order is the order of CommitAsync calls), at
  // most kMaxGroup; removed from the queue.
  std::vector<std::shared_ptr<Pending>> TakeGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::shared_ptr<Pending>> group;
    if (groups_in_flight_ >= kMaxGroupsInFlight) return group;
    std::vector<const Pending*> passed;  // queued before, left in the queue
    for (auto it = queue_.begin(); it != queue_.end() && group.size() < kMaxGroup;) {
      bool blocked = Blocked(**it);
      for (const Pending* b : passed) blocked = blocked || Overlap((*it)->spans, b->spans);
      for (const auto& g : group) blocked = blocked || Overlap((*it)->spans, g->spans);
      if (blocked) {
        passed.push_back(it->get());
        ++it;
      } else {
        group.push_back(*it);
        it = queue_.erase(it);
      }
    }
    return group;
  }

  bool HasLaunchable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (groups_in_flight_ >= kMaxGroupsInFlight) return false;
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      bool blocked = Blocked(**it);
      for (auto before = queue_.begin(); !blocked && before != it; ++before) {
        blocked = Overlap((*it)->spans, (*before)->spans);
      }
      if (!blocked) return true;
    }
    return false;
  }

  // Builds and sends each group. Lease grants block, so they run here, never
  // on a caller's thread nor a gRPC one.
  void WriterLoop() {
    for (;;) {
      auto g = std::make_shared<Group>();
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return (stopping_ && queue_.empty() && inflight_.empty()) || HasLaunchable();
        };
        mu_.Await(absl::Condition(&ready));
        g->members = TakeGroup();
        if (g->members.empty()) return;  // stopping, nothing left
        inflight_.insert(inflight_.end(), g->members.begin(), g->members.end());
        ++groups_in_flight_;
        g->fenced = !fence_key_.empty();
        g->request = Build(*g, fence_key_, fence_revision_);
      }
      if (absl::Status s = AttachLeases(g.get()); !s.ok()) {
        Finish(g, [&](size_t) { return absl::StatusOr<int64_t>(s); });
        continue;
      }
      g->ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
      kv_->async()->Txn(&g->ctx, &g->request, &g->response,
                        [this, g](grpc::Status s) { OnResponse(g, s); });
    }
  }

  void OnResponse(const std::shared_ptr<Group>& g, const grpc::Status& s) {
    if (!s.ok()) {
      // A lease that expired between grant and use: grant fresh ones, once.
      if (s.error_code() == grpc::StatusCode::NOT_FOUND &&
          absl::StrContains(s.error_message(), "lease") && g->members[0]->retries++ == 0) {
        ForgetLeases();
        Requeue(g);
        return;
      }
      const absl::Status error = EtcdError(s, "txn");
      Finish(g, [&](size_t) { return absl::StatusOr<int64_t>(error); });
      return;
    }
    const int64_t rev = g->response.header().revision();
    for (int64_t seen = revision_.load(); rev > seen && !revision_.compare_exchange_weak(seen, rev);) {
    }
    if (!g->response.succeeded()) {  // only the fence compares at the top
      Finish(g, [](size_t) {
        return absl::StatusOr<int64_t>(
            absl::AbortedError("etcd: this controller is no longer the leader"));
      });
      return;
    }
    Finish(g, [&](size_t i) -> absl::StatusOr<int64_t> {
      if (!g->response.responses(static_cast<int>(i)).response_txn().succeeded()) {
        return absl::FailedPreconditionError("etcd: a compare failed");
      }
      return rev;
    });
  }

  // Each member's `done` runs before the group leaves the in-flight set: a
  // later commit of the same keys is sent only after this one's callback.
  void Finish(const std::shared_ptr<Group>& g,
              const std::function<absl::StatusOr<int64_t>(size_t)>& result) {
    for (size_t i = 0; i < g->members.size(); ++i) g->members[i]->done(result(i));
    absl::MutexLock lock(&mu_);
    for (const auto& m : g->members) std::erase(inflight_, m);
    --groups_in_flight_;
  }

  void Requeue(const std::shared_ptr<Group>& g) {
    absl::MutexLock lock(&mu_);
    for (auto it = g->members.rbegin(); it != g->members.rend(); ++it) {
      std::erase(inflight_, *it);
      queue_.push_front(*it);
    }
    --groups_in_flight_;
  }

  // One nested transaction per member, under the fence when there is one.
  pb::TxnRequest Build(const Group& g, const std::string& fence_key, int64_t fence_revision) {
    pb::TxnRequest outer;
    if (!fence_key.empty()) {
      pb::Compare* cmp = outer.add_compare();
      cmp->set_key(fence_key);
      cmp->set_target(pb::Compare::MOD);
      cmp->set_result(pb::Compare::EQUAL);
      cmp->set_mod_revision(fence_revision);
    }
    for (const auto& m : g.members) *outer.add_success()->mutable_request_txn() = Nested(m->txn);
    return outer;
  }

  pb::TxnRequest Nested(const Txn& txn) {
    pb::TxnRequest inner;
    for (const auto& c : txn.compares) {
      pb::Compare* cmp = inner.add_compare();
      cmp->set_key(FullKey(c.key));
      cmp->set_target(pb::Compare::MOD);
      cmp->set_result(pb::Compare::EQUAL);
      cmp->set_mod_revision(c.mod_revision);  // 0 also matches an absent key
    }
    const absl::Time now = absl::Now();
    for (const auto& op : LastWritePerKey(txn.ops)) {
      pb::RequestOp* r = inner.add_success();
      if (op.kind == Txn::Op::kPut && op.expires_at > now) {
        r->mutable_request_put()->set_key(FullKey(op.key));
        r->mutable_request_put()->set_value(op.value);
      } else {
        // A put that has already expired is a delete: the key is absent.
        r->mutable_request_delete_range()->set_key(FullKey(op.key));
        if (op.kind == Txn::Op::kDeletePrefix) {
          std::string end = PrefixEnd(FullKey(op.key));
          r->mutable_request_delete_range()->set_range_end(end.empty() ? std::string(1, '\0') : end);
        }
      }
    }
    return inner;
  }

  // Sets the lease of every put that expires. Runs on the writer thread.
  absl::Status AttachLeases(Group* g) {
    const absl::Time now = absl::Now();
    for (size_t m = 0; m < g->members.size(); ++m) {
      pb::TxnRequest* inner = g->request.mutable_success(static_cast<int>(m))->mutable_request_txn();
      int i = 0;
      for (const auto& op : LastWritePerKey(g->members[m]->txn.ops)) {
        pb::RequestOp* r = inner->mutable_success(i++);
        if (!r->has_request_put() || op.expires_at == absl::InfiniteFuture()) continue;
        auto lease = LeaseFor(op.expires_at, now);
        if (!lease.ok()) return lease.status();
        r->mutable_request_put()->set_lease(*lease);
      }
    }
    return absl::OkStatus();
  }

  // Keys share a lease per expiry bucket: a bucket is 1/32 of the time to
  // live (at least 1 s, at most 1 h), so a 7-day dedup key outlives its
  // expiry by at most an hour and the cluster holds ~170 leases, not one per
  // message.
  absl::StatusOr<int64_t> LeaseFor(absl::Time expires_at, absl::Time now) {
    const absl::Duration ttl = expires_at - now;
    const int64_t bucket = std::clamp<int64_t>(absl::ToInt64Seconds(ttl / 32), 1, 3600);
    const int64_t end = (absl::ToUnixSeconds(expires_at) / bucket + 1) * bucket;
    absl::MutexLock lock(&leases_mu_);
    if (auto it = leases_.find(end); it != leases_.end()) return it->second;
    pb::LeaseGrantRequest req;
    req.set_ttl(std::max<int64_t>(end - absl::ToUnixSeconds(now), 1));
    pb::LeaseGrantResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = lease_->LeaseGrant(&ctx, req, &resp); !s.ok()) {
      return EtcdError(s, "lease grant");
    }
    leases_[end] = resp.id();
    return resp.id();
  }

  void ForgetLeases() {
    absl::MutexLock lock(&leases_mu_);
    leases_.clear();
  }

  const std::string prefix_;
  std::unique_ptr<pb::KV::Stub> kv_;
  std::unique_ptr<pb::Lease::Stub> lease_;
  std::atomic<int64_t> revision_{0};

  absl::Mutex mu_;
  std::deque<std::shared_ptr<Pending>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Pending>> inflight_ ABSL_GUARDED_BY(mu_);  // members of sent groups
  int groups_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string fence_key_ ABSL_GUARDED_BY(mu_);
  int64_t fence_revision_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex leases_mu_;
  std::map<int64_t, int64_t> leases_ ABSL_GUARDED_BY(leases_mu_);  // bucket end -> lease id
  std::thread writer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(const EtcdConfig& config,
                                                           std::shared_ptr<grpc::Channel> channel) {
  auto store = std::make_unique<EtcdStoreImpl>(config, std::move(channel));
  if (auto s = store->Start(); !s.ok()) return s;
  return store;
}

}  // namespace bridge::controller
