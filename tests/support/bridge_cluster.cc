#include "bridge_cluster.h"

#include <iostream>

#include "absl/strings/match.h"

#include "absl/strings/str_split.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "fresh_dir.h"
#include "grpc_probe.h"
#include "httplib.h"

namespace bridge::testing {
namespace {

using nlohmann::json;

constexpr char kAppSecret[] = "e2e-app-secret-0123456789";
constexpr char kToken[] = "e2e-graph-token-0123456789";
constexpr char kElevenLabsKey[] = "sk_e2e_elevenlabs_0123456789";
// Hang guards for awaited events, not timing assertions.
constexpr absl::Duration kAwait = absl::Seconds(30);
constexpr int kLongPollMs = 90000;

std::unique_ptr<ChildProcess> Spawn(const char* bin, std::vector<std::string> args,
                                    std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), "--env_file=/nonexistent");
  return std::make_unique<ChildProcess>(bin, std::move(args), std::move(env));
}

std::map<std::string, std::string> Ready(ChildProcess& p, const std::string& key) {
  auto ready = p.WaitReady();
  EXPECT_TRUE(ready.count(key)) << p.Output();
  return ready;
}

json Get(const std::string& host, const std::string& path) {
  httplib::Client cli(absl::StrCat("http://", host));
  cli.set_read_timeout(kLongPollMs / 1000 + 30);
  auto r = cli.Get(path);
  EXPECT_TRUE(r && r->status == 200) << path << ": " << (r ? r->body : httplib::to_string(r.error()));
  return r ? json::parse(r->body, nullptr, false) : json();
}

void Post(const std::string& host, const std::string& path, const std::string& body) {
  httplib::Client cli(absl::StrCat("http://", host));
  auto r = cli.Post(path, body, "application/json");
  EXPECT_TRUE(r && r->status == 200) << path << ": " << (r ? r->body : "no answer");
}

}  // namespace

std::string AudioFixture(const std::string& name) {
  std::ifstream in(absl::StrCat(BRIDGE_FIXTURES_DIR, "/audio/", name), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

BridgeCluster::BridgeCluster(ClusterOptions options) : options_(std::move(options)) {
  static std::atomic<int> clusters{0};
  if (options_.credentials) {
    cluster_token_ = absl::StrCat("e2e-cluster-", getpid(), "-", clusters.load());
    admin_token_ = absl::StrCat("e2e-admin-", getpid(), "-", clusters.load());
  }
  db_ = absl::StrCat(FreshDir("e2e"), "/controller.db");
  ++clusters;
  std::vector<std::string> sim = {"--listen=127.0.0.1:0", "--agent_id=e2e-agent",
                                  absl::StrCat("--reply_pace=", options_.reply_pace),
                                  "--ping_interval_ms=500"};
  sim.insert(sim.end(), options_.sim_args.begin(), options_.sim_args.end());
  // A private agent: signed URLs and speech-to-text need the key.
  el_ = Spawn(BRIDGE_ELEVENLABS_SIM_BIN, sim, {{"ELEVENLABS_API_KEY", kElevenLabsKey}});
  el_http_ = Ready(*el_, "http")["http"];
  controllers_.resize(options_.controllers);
  controller_grpcs_.resize(options_.controllers);
  controller_metrics_.resize(options_.controllers);
  controller_admins_.resize(options_.controllers);
  for (int i = 0; i < options_.controllers; ++i) StartControllerAt(i, "127.0.0.1:0");
  gateway_ = Spawn(BRIDGE_GATEWAY_BIN,
                   {"--listen=127.0.0.1:0", absl::StrCat("--controller=", controller_grpc_)},
                   {{"WEBHOOK_SIGNATURE_SECRET", kAppSecret},
                    {"BRIDGE_CLUSTER_TOKEN", cluster_token_}});
  gateway_http_ = Ready(*gateway_, "http")["http"];
  wa_ = Spawn(BRIDGE_WHATSAPP_SIM_BIN,
              {"--listen=127.0.0.1:0",
               absl::StrCat("--webhook_url=http://", gateway_http_, "/webhook/whatsapp"),
               "--webhook_retry_base_ms=100"},
              {{"WEBHOOK_SIGNATURE_SECRET", kAppSecret}, {"WHATSAPP_ACCESS_TOKEN", kToken}});
  wa_http_ = Ready(*wa_, "http")["http"];
  workers_.resize(options_.workers);
  worker_metrics_.resize(options_.workers);
  worker_grpc_.resize(options_.workers);
  for (int i = 0; i < options_.workers; ++i) StartWorker(i);
}

BridgeCluster::~BridgeCluster() = default;

void BridgeCluster::StartControllerAt(int i, const std::string& listen) {
  std::vector<std::string> args = {
      absl::StrCat("--listen=", listen), "--metrics_listen=127.0.0.1:0",
      "--admin_listen=127.0.0.1:0",
      absl::StrCat("--store=", options_.store.empty() ? absl::StrCat("sqlite:", db_) : options_.store),
      "--heartbeat_timeout=5s"};
  args.insert(args.end(), options_.controller_args.begin(), options_.controller_args.end());
  controllers_[i].reset();  // a killed one's output goes with it
  controllers_[i] = Spawn(BRIDGE_CONTROLLER_BIN, args,
                          {{"BRIDGE_CLUSTER_TOKEN", cluster_token_},
                           {"BRIDGE_ADMIN_TOKEN", admin_token_},
                           // Erasure deletes conversations at ElevenLabs.
                           {"ELEVENLABS_BASE_URL", absl::StrCat("http://", el_http_)},
                           {"ELEVENLABS_API_KEY", kElevenLabsKey}});
  auto ready = Ready(*controllers_[i], "grpc");
  controller_grpcs_[i] = ready["grpc"];
  controller_metrics_[i] = ready["metrics"];
  controller_admins_[i] = ready["admin"];
  controller_grpc_ = absl::StrJoin(controller_grpcs_, ",");
}

std::vector<std::string> BridgeCluster::MetricsAddresses() const {
  std::vector<std::string> all = {gateway_http_};
  all.insert(all.end(), controller_metrics_.begin(), controller_metrics_.end());
  all.insert(all.end(), worker_metrics_.begin(), worker_metrics_.end());
  return all;
}

int BridgeCluster::AwaitLeader(int excluded) {
  const absl::Time deadline = absl::Now() + kAwait;
  while (absl::Now() < deadline) {
    for (int i = 0; i < controllers(); ++i) {
      if (i == excluded) continue;
      httplib::Client cli(absl::StrCat("http://", controller_metrics_[i]));
      auto r = cli.Get("/metrics");
      if (r && r->body.find("\nbridge_controller_is_leader 1") != std::string::npos) return i;
    }
    absl::SleepFor(absl::Milliseconds(20));  // a bounded poll of the event source
  }
  return -1;
}

void BridgeCluster::StartWorker(int i) {
  std::vector<std::string> args = {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                   absl::StrCat("--worker_id=w", i),
                                   absl::StrCat("--controller=", controller_grpc_)};
  args.insert(args.end(), options_.worker_args.begin(), options_.worker_args.end());
  workers_[i] = Spawn(BRIDGE_WORKER_BIN, args,
                      {{"WHATSAPP_ACCESS_TOKEN", kToken},
                       {"WHATSAPP_GRAPH_BASE_URL", absl::StrCat("http://", wa_http_)},
                       {"ELEVENLABS_BASE_URL", absl::StrCat("http://", el_http_)},
                       {"ELEVENLABS_AGENT_ID", "e2e-agent"},
                       {"ELEVENLABS_API_KEY", kElevenLabsKey},
                       {"BRIDGE_CLUSTER_TOKEN", cluster_token_}});
  auto ready = Ready(*workers_[i], "metrics");
  worker_metrics_[i] = ready["metrics"];
  worker_grpc_[i] = Dialable(ready["grpc"]);
}

std::string BridgeCluster::UserSays(const std::string& user, const std::string& kind,
                                    const std::string& body, const std::string& query) {
  httplib::Client cli(absl::StrCat("http://", wa_http_));
  cli.set_read_timeout(60);
  auto r = cli.Post(absl::StrCat("/sim/users/", user, "/", kind, query), body,
                    kind == "voice" ? "audio/ogg" : "text/plain");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  return r ? json::parse(r->body, nullptr, false).value("message_id", "") : "";
}

json BridgeCluster::Outbox(const std::string& user, int min_count) {
  json out = Get(wa_http_, absl::StrCat("/sim/users/", user, "/outbox?min_count=", min_count,
                                        "&wait_ms=", kLongPollMs));
  return out.is_array() ? out : json::array();
}

std::string BridgeCluster::Media(const std::string& media_id) {
  httplib::Client cli(absl::StrCat("http://", wa_http_));
  auto r = cli.Get(absl::StrCat("/sim/media/", media_id));
  return r ? r->body : "";
}

void BridgeCluster::PostFault(const std::string& body) { Post(wa_http_, "/sim/faults", body); }
void BridgeCluster::PostAgentFault(const std::string& body) { Post(el_http_, "/sim/faults", body); }

json BridgeCluster::Conversations(int min_count, bool ended_only) {
  return Get(el_http_, absl::StrCat("/sim/conversations?min_count=", min_count,
                                    ended_only ? "&ended=true" : "", "&wait_ms=60000"));
}

json BridgeCluster::Transcriptions() { return Get(el_http_, "/sim/transcriptions"); }

std::vector<v1::Session> BridgeCluster::Sessions(bool include_ended) {
  auto sessions = ListSessions(controller_grpc_, /*reveal_ids=*/false, admin_token_, include_ended);
  EXPECT_TRUE(sessions.ok()) << sessions.status();
  return sessions.ok() ? *sessions : std::vector<v1::Session>();
}

std::vector<v1::Session> BridgeCluster::SessionsAfterTurns(int64_t turns) {
  const absl::Time deadline = absl::Now() + kAwait;
  for (;;) {
    auto sessions = Sessions();
    int64_t done = 0;
    for (const auto& s : sessions) done += s.turns_done();
    if (done >= turns || absl::Now() > deadline) return sessions;
    absl::SleepFor(absl::Milliseconds(20));  // a bounded poll of the event source
  }
}

v1::Session BridgeCluster::AwaitSession(const std::function<bool(const v1::Session&)>& done,
                                        bool include_ended) {
  const absl::Time deadline = absl::Now() + kAwait;
  for (;;) {
    auto sessions = Sessions(include_ended);
    if ((sessions.size() == 1 && done(sessions[0])) || absl::Now() > deadline) {
      EXPECT_EQ(sessions.size(), 1u);
      return sessions.empty() ? v1::Session() : sessions[0];
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

bool BridgeCluster::AwaitMetric(const std::vector<std::string>& addresses, const std::string& line) {
  const absl::Time deadline = absl::Now() + kAwait;
  std::string seen;  // the same metric's lines, for the failure message
  const std::string name = line.substr(0, line.find_first_of("{ "));
  while (absl::Now() < deadline) {
    seen.clear();
    for (const std::string& address : addresses) {
      httplib::Client cli(absl::StrCat("http://", address));
      auto r = cli.Get("/metrics");
      if (r && r->body.find(line) != std::string::npos) return true;
      if (!r) continue;
      for (absl::string_view l : absl::StrSplit(r->body, '\n')) {
        if (absl::StartsWith(l, name)) absl::StrAppend(&seen, l, "\n");
      }
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::cerr << "metric line never seen: " << line << "\nlast seen:\n" << seen;
  return false;
}

bool BridgeCluster::AwaitWorkerMetric(const std::string& line) {
  return AwaitMetric(worker_metrics_, line);
}
bool BridgeCluster::AwaitControllerMetric(const std::string& line) {
  return AwaitMetric(controller_metrics_, line);
}
bool BridgeCluster::AwaitGatewayMetric(const std::string& line) {
  return AwaitMetric({gateway_http_}, line);
}

std::string BridgeCluster::Logs() const {
  std::string out;
  for (const ChildProcess* p : {el_.get(), gateway_.get(), wa_.get()}) {
    if (p) out += p->Output();
  }
  for (const auto& c : controllers_) {
    if (c) out += c->Output();
  }
  for (const auto& w : workers_) {
    if (w) out += w->Output();
  }
  return out;
}

}  // namespace bridge::testing
