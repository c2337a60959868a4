#include "controller/controller_server.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "admin_console.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "conversation_eraser.h"
#include "coordinator.h"
#include "etcd_store.h"
#include "google/protobuf/util/json_util.h"
#include "transcript_export.h"
#include "leader_election.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "services.h"

namespace bridge::controller {
namespace {

// What standbys tell clients when --advertise is not given: the bound
// address, with a wildcard host replaced by this machine's name.
std::string AdvertiseOf(const std::string& bound) {
  auto hp = SplitHostPort(bound);
  if (!hp.ok() || (hp->first != "0.0.0.0" && hp->first != "::")) return bound;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return bound;
  return absl::StrCat(host, ":", hp->second);
}

// A controller that must not go on (deposed, or unable to load what it was
// elected to lead) says why and exits at once: the memory it holds belongs
// to a term that has ended. Its supervisor starts it again as a standby.
[[noreturn]] void ExitNow(absl::string_view what, const absl::Status& why) {
  LogError(what, {{"why", why}});
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

class ControllerServerImpl final : public ControllerServer {
 public:
  ~ControllerServerImpl() override { Shutdown(); }

  absl::Status Init(const ControllerOptions& opts) {
    RegisterBuildInfo("bridge-controller");
    RegisterTranscriptExportMetrics();
    if (auto s = OpenStore(opts.store); !s.ok()) return s;
    CoordinatorOptions co;
    co.session_idle_timeout = opts.session_idle_timeout;
    co.session_max_duration = opts.session_max_duration;
    co.heartbeat_timeout = opts.heartbeat_timeout;
    co.max_message_age = opts.max_message_age;
    co.reattach_grace = opts.reattach_grace;
    co.max_pending_turns = opts.max_pending_turns;
    co.ended_retention = opts.ended_retention;
    co.may_dispatch = [this] { return MayAct(); };
    co.memory_turns = opts.memory_turns;
    co.memory_ttl = opts.memory_ttl;
    co.transcript_retention = opts.transcript_retention;
    co.coalesce = opts.coalesce;
    co.handoff_tool = opts.handoff_tool;
    if (!opts.handoff_message.empty()) co.handoff_message = opts.handoff_message;
    if (opts.memory_turns < 0) return absl::InvalidArgumentError("--memory_turns must be >= 0");
    if (auto s = StartOutbound(opts, &co); !s.ok()) return s;
    // Expired records leave the store at least 4 times per retention, so
    // that a short one (tests, strict policies) is kept to the letter.
    expire_every_ = std::clamp(opts.transcript_retention / 4, absl::Seconds(1), absl::Minutes(1));
    coordinator_ = std::make_unique<Coordinator>(store_.get(), co);
    if (!cluster_mode()) {
      if (auto s = coordinator_->Load(); !s.ok()) return s;
      gate_.Open([this] { return MayAct(); });
      loaded_ = true;
    }
    if (auto s = RequireTokenOffLoopback(
            opts.listen, !opts.cluster_token.empty() && !opts.admin_token.empty(),
            "BRIDGE_CLUSTER_TOKEN (--cluster_token) and BRIDGE_ADMIN_TOKEN (--admin_token)");
        !s.ok()) {
      return s;
    }
    if (!opts.cluster_token.empty() && opts.cluster_token == opts.admin_token) {
      return absl::InvalidArgumentError(
          "BRIDGE_ADMIN_TOKEN must differ from BRIDGE_CLUSTER_TOKEN: every gateway and worker "
          "holds the cluster token");
    }
    ingest_ = NewIngestService(coordinator_.get(),
                               Admission(CallAuth(opts.cluster_token, "ingest"), &gate_));
    worker_link_ = NewWorkerLinkService(
        coordinator_.get(), Admission(CallAuth(opts.cluster_token, "worker_link"), &gate_));
    sessions_ = NewSessionsService(coordinator_.get(),
                                   Admission(CallAuth(opts.admin_token, "sessions"), &gate_),
                                   eraser_.get());

    auto metrics = MetricsServer::Start(opts.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
    // A standby is NOT_SERVING for Ingest, so that load balancers and the
    // gateways' readiness send webhooks to the leader only.
    auto grpc = GrpcServer::Start(opts.listen,
                                  {{ingest_.get(), "bridge.v1.Ingest", !cluster_mode()},
                                   {worker_link_.get(), "bridge.v1.WorkerLink", !cluster_mode()},
                                   {sessions_.get(), "bridge.v1.Sessions", !cluster_mode()}});
    if (!grpc.ok()) return grpc.status();
    grpc_ = *std::move(grpc);
    if (auto s = StartConsole(opts); !s.ok()) return s;
    is_leader_->Set(cluster_mode() ? 0 : 1);
    if (cluster_mode()) StartElection(opts);
    ticker_ = std::thread([this] { Housekeeping(); });
    LogInfo("controller serving", {{"grpc", grpc_->address()},
                                   {"metrics", metrics_->address()},
                                   {"store", opts.store},
                                   {"role", cluster_mode() ? "standby until elected" : "leader"}});
    return absl::OkStatus();
  }

  std::string grpc_address() const override { return grpc_->address(); }
  std::string metrics_address() const override { return metrics_->address(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    std::vector<std::pair<std::string, std::string>> e = {{"grpc", grpc_address()},
                                                          {"metrics", metrics_address()}};
    if (console_) e.emplace_back("admin", console_->address());
    return e;
  }

  // Stop serving first (in-flight Delivers finish or fail over to a retry),
  // then housekeeping, then the store, which flushes its last batch while
  // this controller still holds the lease (its writes are fenced on it), and
  // only then the election: a leader revokes its lease, so a standby takes
  // over at once.
  void Shutdown() override {
    if (console_) console_->Stop();  // its calls go through grpc_: before it
    if (grpc_) grpc_->Shutdown(absl::Seconds(1));
    std::thread loader;
    {
      absl::MutexLock lock(&loader_mu_);  // no election starts a loader from here on
      stopping_ = true;
      loader.swap(loader_);
    }
    if (loader.joinable()) loader.join();
    if (ticker_.joinable()) {
      stop_.Notify();
      ticker_.join();
    }
    if (exporter_) exporter_->Stop();
    // The store first: its last commits call back into the coordinator.
    store_.reset();
    coordinator_.reset();
    election_ptr_ = nullptr;
    election_.reset();
  }

 private:
  bool cluster_mode() const { return etcd_ != nullptr; }
  // Whether this controller may act without a write (dispatch, timeouts):
  // not while stopping, and in cluster mode only while its lease surely holds.
  bool MayAct() const {
    if (stopping_) return false;
    LeaderElection* e = election_ptr_.load();
    return !cluster_mode() || (e != nullptr && e->Leading());
  }

  // The operator console (--admin_listen), once the gRPC API it calls serves.
  absl::Status StartConsole(const ControllerOptions& opts) {
    if (opts.admin_listen.empty()) return absl::OkStatus();
    AdminConsoleOptions ao;
    ao.listen = opts.admin_listen;
    ao.bearer_token = !opts.admin_token.empty()      ? opts.admin_token
                      : !opts.session_secret.empty() ? DeriveConsoleToken(opts.session_secret)
                                                     : "";
    ao.grpc_target = grpc_->address();
    ao.sessions_token = opts.admin_token;
    auto console = AdminConsole::Start(ao);
    if (!console.ok()) {
      return absl::Status(console.status().code(),
                          absl::StrCat("--admin_listen: ", console.status().message()));
    }
    console_ = *std::move(console);
    return absl::OkStatus();
  }

  // What the controller itself sends out: the transcript webhook (each
  // exchange, from a durable outbox) and erasures at ElevenLabs.
  absl::Status StartOutbound(const ControllerOptions& opts, CoordinatorOptions* co) {
    if (!opts.elevenlabs_api_key.empty()) {
      auto eraser = NewElevenLabsConversationEraser(opts.elevenlabs_base_url, opts.elevenlabs_api_key);
      if (!eraser.ok()) return eraser.status();
      eraser_ = *std::move(eraser);
    }
    if (opts.transcript_webhook_url.empty()) return absl::OkStatus();
    if (opts.transcript_webhook_secret.empty()) {
      return absl::InvalidArgumentError(
          "--transcript_webhook_url needs --transcript_webhook_secret "
          "(BRIDGE_TRANSCRIPT_WEBHOOK_SECRET): the receiver checks what it gets with it");
    }
    TranscriptExportOptions eo;
    eo.url = opts.transcript_webhook_url;
    eo.secret = opts.transcript_webhook_secret;
    eo.may_act = [this] { return loaded_ && MayAct(); };
    exporter_ = std::make_unique<TranscriptExporter>(store_.get(), eo);
    if (auto s = exporter_->Start(); !s.ok()) return s;
    co->export_entry = [](const v1::TranscriptEntry& e, Txn* txn) {
      std::string json;
      google::protobuf::util::JsonPrintOptions o;
      o.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(e, &json, o);
      TranscriptExporter::Enqueue(txn, absl::StrCat(e.session_id(), "-", e.turn_id()), json,
                                  absl::Now());
    };
    co->exported = [this] { exporter_->Kick(); };
    return absl::OkStatus();
  }

  absl::Status OpenStore(const std::string& spec) {
    absl::string_view rest = spec;
    if (!absl::ConsumePrefix(&rest, "etcd:")) {
      auto store = OpenSessionStore(spec);
      if (!store.ok()) return store.status();
      store_ = *std::move(store);
      return absl::OkStatus();
    }
    auto config = ParseEtcdSpec(rest);
    if (!config.ok()) return config.status();
    etcd_config_ = *config;
    auto channel = NewEtcdChannel(etcd_config_);
    if (!channel.ok()) return channel.status();
    etcd_channel_ = *channel;
    auto store = EtcdStore::Open(etcd_config_, etcd_channel_);
    if (!store.ok()) return store.status();
    etcd_ = store->get();
    store_ = *std::move(store);
    return absl::OkStatus();
  }

  void StartElection(const ControllerOptions& opts) {
    LeaderElection::Options eo;
    eo.advertise = opts.advertise.empty() ? AdvertiseOf(grpc_->address()) : opts.advertise;
    eo.lease = opts.leader_lease;
    LeaderElection::Callbacks cb;
    cb.elected = [this](int64_t fence) {
      etcd_->Fence(election_->key(), fence);
      // Loading may outlast a lease: the election thread keeps renewing.
      absl::MutexLock lock(&loader_mu_);
      if (!stopping_) loader_ = std::thread([this] { TakeOver(); });
    };
    // A deposed leader's memory belongs to a term that has ended, and a turn
    // it still holds must not go out twice: like Kubernetes' controllers, it
    // exits at once and is restarted (systemd, Kubernetes, bridge.sh) as a
    // fresh standby that reads everything back from etcd.
    cb.deposed = [](const std::string& why) {
      ExitNow("lost leadership; exiting so that a fresh standby takes this place",
              absl::AbortedError(why));
    };
    cb.leader_changed = [this, self = eo.advertise](const std::string& leader) {
      // While this controller loads after its election it refuses too, but
      // must not send callers to itself (they would retry at once, in a loop).
      gate_.SetLeader(leader == self ? "" : leader);
      if (!leader.empty()) leader_changes_->Increment();
      LogInfo("leader", {{"address", leader.empty() ? "(none)" : leader}});
    };
    election_ = std::make_unique<LeaderElection>(etcd_channel_, etcd_config_, eo, std::move(cb));
    election_ptr_ = election_.get();
    election_->Start();
  }

  // Rebuilds sessions, queues and assignments from etcd, then serves.
  // Workers and gateways find this controller by themselves (a standby
  // names it) and re-attach; the coordinator reconciles what they ran.
  void TakeOver() {
    const absl::Time start = absl::Now();
    if (auto s = coordinator_->Load(); !s.ok()) {
      ExitNow("cannot load the state after the election; exiting", s);
    }
    gate_.Open([this] { return MayAct(); });
    loaded_ = true;
    for (const char* name : {"bridge.v1.Ingest", "bridge.v1.WorkerLink", "bridge.v1.Sessions"}) {
      grpc_->SetServing(name, true);
    }
    is_leader_->Set(1);
    LogInfo("leading", {{"loaded_in", absl::FormatDuration(absl::Now() - start)}});
  }

  void Housekeeping() {
    absl::Time expired = absl::Now();
    while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      // A standby has nothing to keep; an ex-leader (its lease may have
      // lapsed while it was paused) must not time anything out.
      if (!loaded_ || !MayAct()) continue;
      coordinator_->Tick(absl::Now());
      // Dedup keys, ended sessions and sent-message records expire in the
      // store too (a blocking statement: this thread, not a gRPC one).
      if (absl::Now() - expired > expire_every_) {
        expired = absl::Now();
        if (auto n = store_->ExpireNow(); !n.ok()) {
          LogWarn("cannot expire old records", {{"error", n.status()}});
        }
      }
    }
  }

  std::unique_ptr<SessionStore> store_;
  EtcdStore* etcd_ = nullptr;  // store_, in cluster mode
  EtcdConfig etcd_config_;
  std::shared_ptr<grpc::Channel> etcd_channel_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<ConversationEraser> eraser_;  // null without ELEVENLABS_API_KEY
  std::unique_ptr<TranscriptExporter> exporter_;  // null without --transcript_webhook_url
  ServingGate gate_;
  std::atomic<bool> loaded_{false};
  prometheus::Gauge* is_leader_ = &prometheus::BuildGauge()
      .Name("bridge_controller_is_leader")
      .Help("1 while this controller leads (cluster mode) or runs alone; 0 on a standby")
      .Register(*MetricsRegistry()).Add({});
  prometheus::Counter* leader_changes_ = &prometheus::BuildCounter()
      .Name("bridge_controller_leader_changes_total")
      .Help("Times this controller saw a new leader (itself included)")
      .Register(*MetricsRegistry()).Add({});
  std::unique_ptr<v1::Ingest::CallbackService> ingest_;
  std::unique_ptr<v1::WorkerLink::CallbackService> worker_link_;
  std::unique_ptr<v1::Sessions::CallbackService> sessions_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<GrpcServer> grpc_;
  std::unique_ptr<AdminConsole> console_;  // null without --admin_listen
  std::unique_ptr<LeaderElection> election_;
  std::atomic<LeaderElection*> election_ptr_{nullptr};  // read by gRPC and store threads
  std::atomic<bool> stopping_{false};
  // The elected callback (election thread) starts the loader; Shutdown joins
  // it. Under loader_mu_, so no loader starts once Shutdown took it.
  absl::Mutex loader_mu_;
  std::thread loader_ ABSL_GUARDED_BY(loader_mu_);
  absl::Notification stop_;
  std::thread ticker_;
  absl::Duration expire_every_ = absl::Minutes(1);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerServer>> ControllerServer::Start(
    const ControllerOptions& opts) {
  auto server = std::make_unique<ControllerServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::controller
