#include "etcd_store.h"

#include "absl/time/clock.h"
#include "etcd_group_commit.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace bridge::controller {
namespace {

namespace pb = ::etcdserverpb;

constexpr absl::Duration kCallDeadline = absl::Seconds(10);
// Keys per page when loading: bounded messages, whatever the table size.
constexpr int64_t kPageSize = 500;

class EtcdStoreImpl final : public EtcdStore {
 public:
  EtcdStoreImpl(const EtcdConfig& config, std::shared_ptr<grpc::Channel> channel)
      : prefix_(config.ns + "/"), kv_(pb::KV::NewStub(channel)), commit_(channel, prefix_) {}

  absl::Status Start() {
    pb::RangeRequest req;
    req.set_key(prefix_);
    req.set_range_end(RangeEnd(prefix_));
    req.set_count_only(true);
    pb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = kv_->Range(&ctx, req, &resp); !s.ok()) return EtcdError(s, "open");
    commit_.Start(resp.header().revision());
    return absl::OkStatus();
  }

  std::string FullKey(const std::string& key) const override { return prefix_ + key; }

  void Fence(std::string key, int64_t mod_revision) override {
    commit_.Fence(std::move(key), mod_revision);
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
    const std::string end = RangeEnd(FullKey(prefix));
    int64_t at_revision = 0;
    for (;;) {
      pb::RangeRequest req;
      req.set_key(from);
      req.set_range_end(end);
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
    commit_.Submit(std::move(txn), std::move(done));
  }

  // etcd revokes expired leases, and their keys, by itself.
  absl::StatusOr<int64_t> ExpireNow() override {
    commit_.ForgetExpiredLeases();
    return 0;
  }

  int64_t revision() const override { return commit_.revision(); }

 private:
  absl::StatusOr<pb::RangeResponse> RangeCall(const pb::RangeRequest& req) {
    pb::RangeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
    if (grpc::Status s = kv_->Range(&ctx, req, &resp); !s.ok()) return EtcdError(s, "range");
    return resp;
  }

  const std::string prefix_;
  std::unique_ptr<pb::KV::Stub> kv_;
  EtcdGroupCommit commit_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(const EtcdConfig& config,
                                                           std::shared_ptr<grpc::Channel> channel) {
  auto store = std::make_unique<EtcdStoreImpl>(config, std::move(channel));
  if (auto s = store->Start(); !s.ok()) return s;
  return store;
}

}  // namespace bridge::controller
