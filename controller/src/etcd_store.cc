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
// Commits in flight at once. etcd batches concurrent proposals into one raft
// entry and one fsync, which is where the throughput comes from.
constexpr int kMaxInFlight = 64;
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
    // Call state, alive until the response arrives.
    grpc::ClientContext ctx;
    pb::TxnRequest request;
    pb::TxnResponse response;
    bool fenced = false;
    int retries = 0;
  };

  absl::StatusOr<pb::RangeResponse> RangeCall(const pb::RangeRequest& req) {
    pb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = kv_->Range(&ctx, req, &resp); !s.ok()) return EtcdError(s, "range");
    return resp;
  }

  // The first queued commit that overlaps nothing in flight and nothing
  // queued before it (per-key order is the order of CommitAsync calls).
  std::deque<std::shared_ptr<Pending>>::iterator Launchable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (static_cast<int>(inflight_.size()) >= kMaxInFlight) return queue_.end();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      bool blocked = false;
      for (const auto& f : inflight_) blocked = blocked || Overlap((*it)->spans, f->spans);
      for (auto before = queue_.begin(); !blocked && before != it; ++before) {
        blocked = Overlap((*it)->spans, (*before)->spans);
      }
      if (!blocked) return it;
    }
    return queue_.end();
  }

  // Builds and sends each launchable commit. Lease grants block, so they run
  // here, never on a caller's thread nor a gRPC one.
  void WriterLoop() {
    for (;;) {
      std::shared_ptr<Pending> p;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return (stopping_ && queue_.empty() && inflight_.empty()) || Launchable() != queue_.end();
        };
        mu_.Await(absl::Condition(&ready));
        auto it = Launchable();
        if (it == queue_.end()) return;  // stopping, nothing left
        p = *it;
        queue_.erase(it);
        inflight_.push_back(p);
        p->fenced = !fence_key_.empty();
        p->request = Build(p->txn, fence_key_, fence_revision_);
      }
      if (absl::Status s = AttachLeases(p->txn, &p->request); !s.ok()) {
        Finish(p, s);
        continue;
      }
      Launch(p);
    }
  }

  void Launch(const std::shared_ptr<Pending>& p) {
    p->ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    kv_->async()->Txn(&p->ctx, &p->request, &p->response,
                      [this, p](grpc::Status s) { OnResponse(p, s); });
  }

  void OnResponse(const std::shared_ptr<Pending>& p, const grpc::Status& s) {
    if (!s.ok()) {
      // A lease that expired between grant and use: grant a fresh one, once.
      if (s.error_code() == grpc::StatusCode::NOT_FOUND &&
          absl::StrContains(s.error_message(), "lease") && p->retries++ == 0) {
        ForgetLeases();
        auto retry = std::make_shared<Pending>();
        retry->txn = std::move(p->txn);
        retry->spans = p->spans;
        retry->done = std::move(p->done);
        retry->retries = 1;
        Requeue(p, retry);
        return;
      }
      Finish(p, EtcdError(s, "txn"));
      return;
    }
    const int64_t rev = p->response.header().revision();
    for (int64_t seen = revision_.load(); rev > seen && !revision_.compare_exchange_weak(seen, rev);) {
    }
    if (!p->response.succeeded()) {
      Finish(p, p->fenced ? absl::AbortedError("etcd: this controller is no longer the leader")
                          : absl::FailedPreconditionError("etcd: a compare failed"));
      return;
    }
    if (p->fenced && !p->response.responses(0).response_txn().succeeded()) {
      Finish(p, absl::FailedPreconditionError("etcd: a compare failed"));
      return;
    }
    Finish(p, rev);
  }

  // `done` runs before the commit leaves the in-flight set: a later commit of
  // the same keys is sent only after this one's callback has applied it.
  void Finish(const std::shared_ptr<Pending>& p, absl::StatusOr<int64_t> result) {
    p->done(std::move(result));
    absl::MutexLock lock(&mu_);
    std::erase(inflight_, p);
  }

  void Requeue(const std::shared_ptr<Pending>& old, std::shared_ptr<Pending> retry) {
    absl::MutexLock lock(&mu_);
    std::erase(inflight_, old);
    queue_.push_front(std::move(retry));
  }

  pb::TxnRequest Build(const Txn& txn, const std::string& fence_key, int64_t fence_revision) {
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
    if (fence_key.empty()) return inner;
    pb::TxnRequest outer;
    pb::Compare* cmp = outer.add_compare();
    cmp->set_key(fence_key);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(fence_revision);
    *outer.add_success()->mutable_request_txn() = std::move(inner);
    return outer;
  }

  // Sets the lease of every put that expires. Runs on the writer thread.
  absl::Status AttachLeases(const Txn& txn, pb::TxnRequest* request) {
    pb::TxnRequest* inner = request;
    if (inner->success_size() == 1 && inner->success(0).has_request_txn()) {
      inner = inner->mutable_success(0)->mutable_request_txn();
    }
    const absl::Time now = absl::Now();
    int i = 0;
    for (const auto& op : LastWritePerKey(txn.ops)) {
      pb::RequestOp* r = inner->mutable_success(i++);
      if (!r->has_request_put() || op.expires_at == absl::InfiniteFuture()) continue;
      auto lease = LeaseFor(op.expires_at, now);
      if (!lease.ok()) return lease.status();
      r->mutable_request_put()->set_lease(*lease);
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
  std::vector<std::shared_ptr<Pending>> inflight_ ABSL_GUARDED_BY(mu_);
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
