#include "media_worker/worker_server.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "bridge/v1/media.grpc.pb.h"
#include "common/call_auth.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/process.h"
#include "call_desk.h"
#include "controller_link.h"
#include "converse_service.h"
#include "event_counters.h"
#include "media_worker/graph_api.h"
#include "media_worker/speech_to_text.h"
#include "worker_core.h"
#include "ws/websocket.h"

namespace bridge::media_worker {
namespace {

std::string DefaultWorkerId() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid());
}

TurnSettings SettingsFrom(const WorkerOptions& o) {
  TurnSettings t;
  t.agent.base_url = o.elevenlabs_base_url;
  t.agent.agent_id = o.elevenlabs_agent_id;
  t.agent.api_key = o.elevenlabs_api_key;
  t.agent.ca_file = o.ca_file;
  t.agent.reply_quiet_gap = o.reply_quiet_gap;
  t.agent.reply_settle = o.reply_settle;
  t.voice_input = o.transcribe_voice ? VoiceInput::kTranscribe : VoiceInput::kStream;
  t.input_pace = o.agent_input_pace;
  t.silence_tail_max = o.silence_tail_max;
  t.reply_timeout = o.reply_timeout;
  t.agent_linger = o.agent_linger;
  t.delivery_budget = o.delivery_budget;
  t.read_receipts = o.read_receipts;
  t.user_id_salt = o.session_secret;
  t.deliver_greeting = o.deliver_greeting;
  t.greeting_wait = o.greeting_wait;
  return t;
}

CallSettings CallSettingsFrom(const WorkerOptions& o) {
  CallSettings c;
  c.enabled = o.calls;
  c.max_calls = o.max_calls > 0 ? o.max_calls : std::max(1, o.capacity / 2);
  c.max_duration = o.call_max_duration;
  c.network.public_ip = o.media_public_ip;
  c.network.port_min = o.media_port_min;
  c.network.port_max = o.media_port_max;
  c.network.local_ips = o.media_local_ips;
  const TurnSettings t = SettingsFrom(o);
  c.agent = t.agent;
  c.user_id_salt = t.user_id_salt;
  return c;
}

class WorkerServerImpl final : public WorkerServer {
 public:
  ~WorkerServerImpl() override { Shutdown(); }

  absl::Status Init(const WorkerOptions& opts) {
    opts_ = opts;
    if (opts_.worker_id.empty()) opts_.worker_id = DefaultWorkerId();
    RegisterBuildInfo("bridge-worker");
    RegisterEventCounters();
    auto metrics = MetricsServer::Start(opts.metrics_listen);
    if (!metrics.ok()) return metrics.status();
    metrics_ = *std::move(metrics);
    ws_pool_ = ws::ClientPool::Create();
    GraphApiOptions go;
    go.base_url = opts.whatsapp_graph_base_url;
    go.api_version = opts.whatsapp_graph_api_version;
    go.access_token = opts.whatsapp_access_token;
    go.media_hosts = opts.media_hosts;
    go.ca_file = opts.ca_file;
    graph_ = NewGraphApi(go);
    if (opts.transcribe_voice) {
      SpeechToTextOptions so;
      so.base_url = opts.elevenlabs_base_url;
      so.api_key = opts.elevenlabs_api_key;
      so.model_id = opts.stt_model;
      so.ca_file = opts.ca_file;
      auto stt = NewSpeechToText(so);
      if (!stt.ok()) return stt.status();
      stt_ = *std::move(stt);
    }
    // Before the gRPC server: a stream's admission asks it what it holds.
    core_ = std::make_unique<WorkerCore>(SettingsFrom(opts_), graph_.get(), stt_.get(),
                                         ws_pool_.get(), opts.turn_threads,
                                         [this](v1::WorkerMessage m) { link_->Send(std::move(m)); });
    CallSettings call_settings = CallSettingsFrom(opts_);
    if (auto s = ResolveStunServer(opts_.stun_server, &call_settings.network); !s.ok()) return s;
    auto desk = CallDesk::Create(std::move(call_settings), graph_.get(), ws_pool_.get(),
                                 [this](v1::WorkerMessage m) { link_->Send(std::move(m)); });
    if (!desk.ok()) return desk.status();
    calls_ = *std::move(desk);
    ConverseSettings converse;
    converse.turn = SettingsFrom(opts_);
    converse.start_timeout = opts.converse_start_timeout;
    if (auto s = RequireTokenOffLoopback(opts.listen, !opts.cluster_token.empty(),
                                         "BRIDGE_CLUSTER_TOKEN (--cluster_token)");
        !s.ok()) {
      return s;
    }
    converse_ = std::make_unique<ConverseService>(converse, ws_pool_.get(),
                                                  CallAuth(opts.cluster_token, "media"));
    converse_->SetCapacity(opts.capacity, opts.max_streams,
                           [this] { return core_->Load().active_sessions(); });
    auto grpc = GrpcServer::Start(opts.listen, {{converse_.get(), "bridge.v1.Media"}});
    if (!grpc.ok()) return grpc.status();
    grpc_ = *std::move(grpc);
    if (opts_.advertise.empty()) opts_.advertise = grpc_->address();

    ControllerLink::Options lo;
    lo.controller = opts.controller;
    lo.cluster_token = opts.cluster_token;
    lo.hello.set_worker_id(opts_.worker_id);
    lo.hello.set_advertise_address(opts_.advertise);
    lo.hello.set_capacity(opts.capacity);
    lo.hello.set_version(std::string(BridgeVersion()));
    ControllerLink::Callbacks cb;
    cb.on_message = [this](const v1::ControllerMessage& m) {
      const std::string& ended = m.end_session().session_id();
      if (m.has_end_session() && ConverseService::IsConverseSession(ended)) {
        converse_->EndSession(ended, m.end_session().reason());  // a Media.Converse stream
        return;
      }
      if (m.has_call_offer()) return calls_->Offer(m.call_offer());
      if (m.has_call_end()) return calls_->End(m.call_end());
      if (m.has_drain()) {
        converse_->Drain();
        calls_->Drain();
      }
      core_->OnMessage(m);
    };
    cb.fill_hello = [this](v1::WorkerHello* hello) { core_->FillHello(hello); };
    cb.load = [this] {
      v1::WorkerHeartbeat load = core_->Load();
      load.set_active_calls(calls_->active());
      return load;
    };
    cb.on_connection = [this](bool up) {
      if (up) converse_->Reannounce();  // reports made while the link was down are lost
    };
    link_ = std::make_unique<ControllerLink>(lo, cb);
    converse_->SetReporter([this](v1::WorkerMessage m) { link_->Send(std::move(m)); });
    link_->Start();
    LogInfo("worker serving", {{"worker_id", opts_.worker_id},
                               {"grpc", grpc_->address()},
                               {"advertise", opts_.advertise},
                               {"controller", opts_.controller},
                               {"capacity", opts_.capacity}});
    return absl::OkStatus();
  }

  std::string grpc_address() const override { return grpc_->address(); }
  std::string metrics_address() const override { return metrics_->address(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"grpc", grpc_address()}, {"metrics", metrics_address()}};
  }

  // Hand the running turns back and leave the controller first (it re-runs
  // them elsewhere at once), then stop the streams and sockets.
  void Shutdown() override {
    if (converse_) converse_->Drain();  // no new streams while the turns are handed back
    if (link_) link_->AnnounceLeaving("shutting down");  // first: nothing new comes here
    if (calls_) calls_->Shutdown(absl::Seconds(5));  // terminate sent for each live call
    if (core_) core_->HandBack(absl::Seconds(5));
    if (link_) link_->Leave(absl::Seconds(2));  // once the handed-back results are written
    if (converse_) converse_->Shutdown();  // streams end UNAVAILABLE, agent sockets close
    if (grpc_) grpc_->Shutdown(absl::Seconds(1));
    if (converse_) converse_->WaitForStreams();
    core_.reset();
    calls_.reset();
    if (ws_pool_) ws_pool_->Stop();
  }

 private:
  WorkerOptions opts_;
  // Before converse_ (its agent sockets), which is before grpc_ (it serves it).
  std::unique_ptr<ws::ClientPool> ws_pool_;
  std::unique_ptr<ConverseService> converse_;
  std::unique_ptr<MetricsServer> metrics_;
  std::unique_ptr<GrpcServer> grpc_;
  std::unique_ptr<GraphApi> graph_;
  std::unique_ptr<SpeechToText> stt_;
  std::unique_ptr<WorkerCore> core_;
  std::unique_ptr<CallDesk> calls_;
  std::unique_ptr<ControllerLink> link_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& opts) {
  auto server = std::make_unique<WorkerServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::media_worker
