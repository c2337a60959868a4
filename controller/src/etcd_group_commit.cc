#include "etcd_group_commit.h"

#include <openssl/rand.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "etcd_client.h"
#include "grpcpp/client_context.h"

namespace bridge::controller {
namespace {

namespace pb = ::etcdserverpb;

// One group must fit etcd's defaults: --max-txn-ops 128 (the outer branch's
// ops plus the largest nested one's) and --max-request-bytes 1.5 MiB.
constexpr size_t kMaxMembers = 64;
constexpr size_t kMaxTxnOps = 120;
constexpr size_t kMaxGroupBytes = 1 << 20;
// Requests in flight at once: while some commit, the next group fills.
constexpr int kMaxGroupsInFlight = 4;
// A marker outlives any resolution of its group (a call deadline, 10 s by
// default, plus kResolveFor), then expires by itself.
constexpr absl::Duration kMarkerTtl = absl::Minutes(5);
constexpr absl::Duration kResolveFor = absl::Minutes(1);

// The keys a transaction reads or writes; a prefix covers every key under it.
struct KeySpan {
  std::string key;
  bool prefix = false;
};

bool Overlap(const std::vector<KeySpan>& a, const std::vector<KeySpan>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if ((x.prefix && absl::StartsWith(y.key, x.key)) ||
          (y.prefix && absl::StartsWith(x.key, y.key)) || x.key == y.key) {
        return true;
      }
    }
  }
  return false;
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

// Answers that say the request was not applied; anything else (timeouts,
// broken connections) may have been, and is resolved through the marker.
bool Definitive(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // etcd's NOSPACE alarm
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}

std::string RandomId() {
  unsigned char b[8];
  RAND_bytes(b, sizeof b);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(b), sizeof b));
}


}  // namespace

struct EtcdGroupCommit::Pending {
  Txn txn;
  std::vector<KeySpan> spans;
  std::function<void(absl::StatusOr<int64_t>)> done;
  size_t ops = 0, bytes = 0;
  std::string probe;  // a full key this commit puts: did it apply? (Resolve)
};

struct EtcdGroupCommit::Group {
  int64_t seq = 0;
  std::vector<std::shared_ptr<Pending>> members;
  std::string marker;
  bool fenced = false;
  int sends = 0;
  grpc::Status error;  // the failed call's, for the members if nothing applied
  std::unique_ptr<grpc::ClientContext> ctx;
  pb::TxnRequest request;
  // The puts in `request` that expire, for AttachLeases (the marker's is
  // request.success(0)).
  std::vector<std::pair<pb::PutRequest*, absl::Time>> expiring;
  pb::TxnResponse response;
  std::vector<absl::StatusOr<int64_t>> results;
};

EtcdGroupCommit::EtcdGroupCommit(std::shared_ptr<grpc::Channel> channel, std::string prefix,
                                 absl::Duration call_deadline)
    : prefix_(std::move(prefix)),
      call_deadline_(call_deadline),
      writer_id_(RandomId()),
      kv_(pb::KV::NewStub(channel)),
      lease_(pb::Lease::NewStub(channel)) {}

EtcdGroupCommit::~EtcdGroupCommit() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (writer_.joinable()) writer_.join();
}

void EtcdGroupCommit::Start(int64_t revision) {
  revision_ = revision;
  writer_ = std::thread([this] { WriterLoop(); });
}

void EtcdGroupCommit::Submit(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done) {
  auto p = std::make_shared<Pending>();
  for (const auto& c : txn.compares) p->spans.push_back({prefix_ + c.key, false});
  for (const auto& op : txn.ops) {
    p->spans.push_back({prefix_ + op.key, op.kind == Txn::Op::kDeletePrefix});
    p->bytes += prefix_.size() + op.key.size() + op.value.size() + 32;
  }
  p->ops = std::max(txn.compares.size(), txn.ops.size());
  p->txn = std::move(txn);
  p->done = std::move(done);
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(std::move(p));
      return;
    }
  }
  p->done(absl::UnavailableError("etcd: store is closing"));
}

void EtcdGroupCommit::Fence(std::string key, int64_t mod_revision) {
  absl::MutexLock lock(&mu_);
  fence_key_ = std::move(key);
  fence_revision_ = mod_revision;
}

void EtcdGroupCommit::ForgetExpiredLeases() {
  absl::MutexLock lock(&leases_mu_);
  const absl::Time now = absl::Now();
  std::erase_if(leases_, [&](const auto& e) { return absl::FromUnixSeconds(e.first) <= now; });
}

void EtcdGroupCommit::NoteRevision(int64_t rev) {
  for (int64_t seen = revision_.load(); rev > seen && !revision_.compare_exchange_weak(seen, rev);) {
  }
}

bool EtcdGroupCommit::Blocked(const Pending& p) {
  for (const auto& f : inflight_) {
    if (Overlap(p.spans, f->spans)) return true;
  }
  return false;
}

bool EtcdGroupCommit::Ready() {
  if (!resolve_.empty() || !resend_.empty()) return true;
  // Not while a thread runs callbacks: it still holds mu_ and this object
  // until it finds nothing more to finish.
  if (stopping_ && queue_.empty() && inflight_.empty() && !finishing_) return true;
  return groups_in_flight_ < kMaxGroupsInFlight && !queue_.empty() && !Blocked(*queue_.front());
}

// The longest prefix of the queue that can go together: nothing in it
// touches a key in flight or a key of another member, and it fits etcd's
// limits. A prefix, so that sending order is CommitAsync order.
std::shared_ptr<EtcdGroupCommit::Group> EtcdGroupCommit::TakeGroup() {
  auto g = std::make_shared<Group>();
  size_t max_ops = 0, bytes = 0;
  while (!queue_.empty() && g->members.size() < kMaxMembers) {
    const std::shared_ptr<Pending>& p = queue_.front();
    if (Blocked(*p)) break;
    bool clash = false;
    for (const auto& m : g->members) clash = clash || Overlap(p->spans, m->spans);
    const size_t outer_ops = g->members.size() + 2;  // with p and the marker
    if (clash || (!g->members.empty() && (outer_ops + std::max(max_ops, p->ops) > kMaxTxnOps ||
                                          bytes + p->bytes > kMaxGroupBytes))) {
      break;
    }
    max_ops = std::max(max_ops, p->ops);
    bytes += p->bytes;
    g->members.push_back(p);
    queue_.pop_front();
  }
  g->seq = next_seq_++;
  g->marker = absl::StrCat(prefix_, "w/", writer_id_, "/", g->seq);
  Build(g.get());
  inflight_.insert(inflight_.end(), g->members.begin(), g->members.end());
  ++groups_in_flight_;
  return g;
}

// Sends groups, re-sends the ones whose lease expired, resolves the ones
// whose outcome is unknown. Lease grants and resolution block, so they run
// here, never on a caller's thread nor a gRPC one.
void EtcdGroupCommit::WriterLoop() {
  for (;;) {
    std::shared_ptr<Group> send, resolve;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &EtcdGroupCommit::Ready));
      if (!resolve_.empty()) {
        resolve = resolve_.front();
        resolve_.pop_front();
      } else if (!resend_.empty()) {
        send = resend_.front();
        resend_.pop_front();
      } else if (!queue_.empty() && groups_in_flight_ < kMaxGroupsInFlight &&
                 !Blocked(*queue_.front())) {
        send = TakeGroup();
      } else {
        return;  // stopping, nothing queued or in flight, no callback running
      }
    }
    if (resolve) {
      Resolve(resolve);
    } else {
      Send(send);
    }
  }
}

void EtcdGroupCommit::Send(const std::shared_ptr<Group>& g) {
  if (absl::Status s = AttachLeases(g.get()); !s.ok()) {
    g->results.assign(g->members.size(), s);  // nothing was sent
    Complete(g);
    return;
  }
  ++g->sends;
  g->ctx = std::make_unique<grpc::ClientContext>();
  g->ctx->set_deadline(absl::ToChronoTime(absl::Now() + call_deadline_));
  kv_->async()->Txn(g->ctx.get(), &g->request, &g->response,
                    [this, g](grpc::Status s) { OnResponse(g, s); });
}

void EtcdGroupCommit::OnResponse(const std::shared_ptr<Group>& g, const grpc::Status& s) {
  // The context holds the channel. Dropped here, while this object (and its
  // stubs) surely live: were it the channel's last holder when the callback's
  // capture goes, the channel would be destroyed on gRPC's own callback
  // thread, which then joins itself (grpc/grpc#32584) and aborts later.
  g->ctx.reset();
  if (s.ok()) {
    const int64_t rev = g->response.header().revision();
    NoteRevision(rev);
    for (size_t i = 0; i < g->members.size(); ++i) {
      if (!g->response.succeeded()) {  // only the fence can fail at the top
        g->results.push_back(absl::AbortedError("etcd: this controller is no longer the leader"));
      } else if (!g->response.responses(static_cast<int>(i) + 1).response_txn().succeeded()) {
        g->results.push_back(absl::FailedPreconditionError("etcd: a compare failed"));
      } else {
        g->results.push_back(rev);
      }
    }
    Complete(g);
    return;
  }
  g->error = s;
  if (Definitive(s.error_code()) &&
      !(s.error_code() == grpc::StatusCode::NOT_FOUND && g->sends == 1 &&
        absl::StrContains(s.error_message(), "lease"))) {
    g->results.assign(g->members.size(), EtcdError(s, "txn"));
    Complete(g);
    return;
  }
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    // A lease that expired between grant and use; the request was refused
    // whole. Fresh leases, once.
    absl::MutexLock leases(&leases_mu_);
    leases_.clear();
  }
  absl::MutexLock lock(&mu_);
  (s.error_code() == grpc::StatusCode::NOT_FOUND ? resend_ : resolve_).push_back(g);
}

// The call failed and may have been applied. Claim the group's marker: if it
// was free, the group can never apply (its compares need it absent) and
// failed; if it was taken, the group applied at the marker's revision, and a
// member applied if its probe key was written then.
void EtcdGroupCommit::Resolve(const std::shared_ptr<Group>& g) {
  const absl::Time give_up = absl::Now() + kResolveFor;
  absl::Status last = EtcdError(g->error, "txn");
  LogWarn("etcd: a call's outcome is unknown; resolving it through its marker",
          {{"commits", g->members.size()}, {"error", last}});
  while (g->results.empty() && absl::Now() < give_up) {
    auto lease = LeaseFor(absl::Now() + kMarkerTtl, absl::Now());
    pb::TxnRequest claim;
    *claim.add_compare() = KeyAbsent(g->marker);
    pb::PutRequest* put = claim.add_success()->mutable_request_put();
    put->set_key(g->marker);
    put->set_value("not applied");
    if (lease.ok()) put->set_lease(*lease);
    claim.add_failure()->mutable_request_range()->set_key(g->marker);
    pb::TxnResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + call_deadline_));
    if (grpc::Status s = kv_->Txn(&ctx, claim, &resp); !s.ok()) {
      last = EtcdError(s, "resolve");
      absl::SleepFor(absl::Milliseconds(200));  // etcd is away: try again shortly
      continue;
    }
    if (resp.succeeded()) {
      LogInfo("etcd: resolved: the group did not apply and never will", {{"commits", g->members.size()}});
      g->results.assign(g->members.size(), EtcdError(g->error, "txn (not applied)"));
      break;
    }
    const auto& kvs = resp.responses(0).response_range().kvs();
    const int64_t rev = kvs.empty() ? 0 : kvs[0].mod_revision();
    NoteRevision(rev);
    std::vector<absl::StatusOr<int64_t>> results;
    for (const auto& m : g->members) {
      if (m->probe.empty()) {  // deletes only: applied with the group
        results.push_back(rev);
        continue;
      }
      pb::RangeRequest get;
      get.set_key(m->probe);
      pb::RangeResponse got;
      grpc::ClientContext get_ctx;
      get_ctx.set_deadline(absl::ToChronoTime(absl::Now() + call_deadline_));
      if (grpc::Status s = kv_->Range(&get_ctx, get, &got); !s.ok()) {
        last = EtcdError(s, "resolve");
        break;
      }
      const bool applied = !got.kvs().empty() && got.kvs(0).mod_revision() == rev;
      results.push_back(applied ? absl::StatusOr<int64_t>(rev)
                                : absl::FailedPreconditionError("etcd: a compare failed"));
    }
    if (results.size() == g->members.size()) {
      LogInfo("etcd: resolved: the group applied", {{"commits", g->members.size()}, {"revision", rev}});
      g->results = std::move(results);
    }
  }
  if (g->results.empty()) {
    LogError("etcd: cannot tell whether a group of commits applied",
             {{"commits", g->members.size()}, {"error", last}});
    g->results.assign(g->members.size(), absl::UnavailableError(absl::StrCat(
                                             "etcd: outcome unknown: ", last.message())));
  }
  Complete(g);
}

// Callbacks run in send order, one thread at a time, outside mu_; a group
// leaves the in-flight set only after its callbacks ran.
void EtcdGroupCommit::Complete(const std::shared_ptr<Group>& g) {
  {
    absl::MutexLock lock(&mu_);
    completed_[g->seq] = g;
    if (finishing_) return;
    finishing_ = true;
  }
  for (;;) {
    std::shared_ptr<Group> next;
    {
      absl::MutexLock lock(&mu_);
      auto it = completed_.find(next_to_finish_);
      if (it == completed_.end()) {
        finishing_ = false;
        return;
      }
      next = it->second;
      completed_.erase(it);
    }
    for (size_t i = 0; i < next->members.size(); ++i) {
      next->members[i]->done(std::move(next->results[i]));
    }
    absl::MutexLock lock(&mu_);
    for (const auto& m : next->members) std::erase(inflight_, m);
    --groups_in_flight_;
    ++next_to_finish_;
  }
}

// The fence (if any) and the marker, then one nested transaction per member.
void EtcdGroupCommit::Build(Group* g) {
  pb::TxnRequest& outer = g->request;
  g->fenced = !fence_key_.empty();
  if (g->fenced) {
    pb::Compare* cmp = outer.add_compare();
    cmp->set_key(fence_key_);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(fence_revision_);
  }
  *outer.add_compare() = KeyAbsent(g->marker);
  outer.add_success()->mutable_request_put()->set_key(g->marker);
  outer.mutable_success(0)->mutable_request_put()->set_value("applied");
  const absl::Time now = absl::Now();
  for (const auto& m : g->members) {
    pb::TxnRequest* inner = outer.add_success()->mutable_request_txn();
    for (const auto& c : m->txn.compares) {
      pb::Compare* cmp = inner->add_compare();
      cmp->set_key(prefix_ + c.key);
      cmp->set_target(pb::Compare::MOD);
      cmp->set_result(pb::Compare::EQUAL);
      cmp->set_mod_revision(c.mod_revision);  // 0 also matches an absent key
    }
    for (const auto& op : LastWritePerKey(m->txn.ops)) {
      pb::RequestOp* r = inner->add_success();
      if (op.kind == Txn::Op::kPut && op.expires_at > now) {
        pb::PutRequest* put = r->mutable_request_put();
        put->set_key(prefix_ + op.key);
        put->set_value(op.value);
        if (op.expires_at != absl::InfiniteFuture()) g->expiring.emplace_back(put, op.expires_at);
        if (m->probe.empty()) m->probe = prefix_ + op.key;
      } else {
        // A put that has already expired is a delete: the key is absent.
        r->mutable_request_delete_range()->set_key(prefix_ + op.key);
        if (op.kind == Txn::Op::kDeletePrefix) {
          r->mutable_request_delete_range()->set_range_end(RangeEnd(prefix_ + op.key));
        }
      }
    }
  }
}

// Sets the lease of the marker and of every put that expires.
absl::Status EtcdGroupCommit::AttachLeases(Group* g) {
  const absl::Time now = absl::Now();
  auto marker_lease = LeaseFor(now + kMarkerTtl, now);
  if (!marker_lease.ok()) return marker_lease.status();
  g->request.mutable_success(0)->mutable_request_put()->set_lease(*marker_lease);
  for (auto& [put, expires_at] : g->expiring) {
    auto lease = LeaseFor(expires_at, now);
    if (!lease.ok()) return lease.status();
    put->set_lease(*lease);
  }
  return absl::OkStatus();
}

// Keys share a lease per expiry bucket: a bucket is 1/32 of the time to live
// (at least 1 s, at most 1 h), so a 7-day dedup key outlives its expiry by at
// most an hour and the cluster holds ~170 leases, not one per message.
absl::StatusOr<int64_t> EtcdGroupCommit::LeaseFor(absl::Time expires_at, absl::Time now) {
  const absl::Duration ttl = expires_at - now;
  const int64_t bucket = std::clamp<int64_t>(absl::ToInt64Seconds(ttl / 32), 1, 3600);
  const int64_t end = (absl::ToUnixSeconds(expires_at) / bucket + 1) * bucket;
  absl::MutexLock lock(&leases_mu_);
  if (auto it = leases_.find(end); it != leases_.end()) return it->second;
  pb::LeaseGrantRequest req;
  req.set_ttl(std::max<int64_t>(end - absl::ToUnixSeconds(now), 1));
  pb::LeaseGrantResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + call_deadline_));
  if (grpc::Status s = lease_->LeaseGrant(&ctx, req, &resp); !s.ok()) {
    return EtcdError(s, "lease grant");
  }
  leases_[end] = resp.id();
  return resp.id();
}

}  // namespace bridge::controller
