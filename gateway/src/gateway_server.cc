// The only translation unit that includes httplib.h on the server side.
#include "gateway/gateway_server.h"

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/metrics.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "controller_client.h"
#include "gateway_metrics.h"
#include "webhook_parser.h"
#include "common/hub_signature.h"
#include "httplib.h"

namespace bridge::gateway {
namespace {

constexpr char kWebhookPath[] = "/webhook/whatsapp";

class GatewayServerImpl final : public GatewayServer {
 public:
  ~GatewayServerImpl() override { Shutdown(); }

  absl::Status Init(const GatewayOptions& opts) {
    opts_ = opts;
    RegisterBuildInfo("bridge-gateway");
    auto hp = SplitHostPort(opts.listen);
    if (!hp.ok()) return hp.status();
    if (auto s = MakeServer(); !s.ok()) return s;
    controller_ = std::make_unique<ControllerClient>(opts.controller);
    if (opts.app_secret.empty()) {
      LogError("WEBHOOK_SIGNATURE_SECRET is not set: webhook POSTs are refused with 503 until it is");
    }
    Routes();
    int port = hp->second == 0 ? server_->bind_to_any_port(hp->first)
                               : (server_->bind_to_port(hp->first, hp->second) ? hp->second : -1);
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat("http: cannot listen on ", opts.listen));
    }
    address_ = absl::StrCat(hp->first, ":", port);
    thread_ = std::thread([this] {
      server_->listen_after_bind();
      listen_returned_ = true;
    });
    // httplib's stop() is a no-op until the accept loop runs: a SIGTERM right
    // after READY would otherwise leave the process hanging in join().
    while (!server_->is_running() && !listen_returned_) std::this_thread::yield();
    if (listen_returned_) {
      thread_.join();
      return absl::UnavailableError(absl::StrCat("http: accept loop failed on ", address_));
    }
    LogInfo("gateway serving", {{"http", address_},
                                {"tls", tls_ ? "on" : "off"},
                                {"controller", opts.controller}});
    return absl::OkStatus();
  }

  std::string http_address() const override { return address_; }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"http", address_}};
  }

  void Shutdown() override {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }

 private:
  absl::Status MakeServer() {
    if (opts_.tls_cert_path.empty() != opts_.tls_key_path.empty()) {
      return absl::InvalidArgumentError("SSL_CERT_PATH and SSL_KEY_PATH go together");
    }
    if (!opts_.tls_cert_path.empty()) {
      auto tls = std::make_unique<httplib::SSLServer>(opts_.tls_cert_path.c_str(),
                                                      opts_.tls_key_path.c_str());
      if (!tls->is_valid()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot load TLS cert/key from ", opts_.tls_cert_path));
      }
      server_ = std::move(tls);
      tls_ = true;
    } else {
      server_ = std::make_unique<httplib::Server>();
    }
    server_->set_payload_max_length(static_cast<size_t>(opts_.max_body_bytes));
    return absl::OkStatus();
  }

  void Routes() {
    server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    server_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      absl::Status s = controller_->Check();
      res.status = s.ok() ? 200 : 503;
      res.set_content(s.ok() ? "ready\n" : absl::StrCat("not ready: ", s.message(), "\n"),
                      "text/plain");
    });
    server_->Get("/metrics", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(SerializeMetrics(), "text/plain; version=0.0.4");
    });
    server_->Get(kWebhookPath, [this](const httplib::Request& req, httplib::Response& res) {
      Verify(req, res);
    });
    server_->Post(kWebhookPath, [this](const httplib::Request& req, httplib::Response& res) {
      const absl::Time start = absl::Now();
      Webhook(req, res);
      metrics_.ack_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - start));
    });
    // httplib answers oversized bodies itself (413); count them too.
    server_->set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (res.status == 413) {
        metrics_.too_large->Increment();
        res.set_content("body larger than --max_body_bytes\n", "text/plain");
      }
    });
  }

  static void Answer(httplib::Response& res, int status, absl::string_view text) {
    res.status = status;
    res.set_content(absl::StrCat(text, "\n"), "text/plain");
  }

  // PROTOCOLS.md A2: verify the raw bytes, parse, hand the whole batch to the
  // controller, and say 200 only once it is durable.
  void Webhook(const httplib::Request& req, httplib::Response& res) {
    if (opts_.app_secret.empty()) {
      metrics_.not_configured->Increment();
      res.set_header("Retry-After", "60");
      return Answer(res, 503, "webhook signature secret not configured");
    }
    switch (VerifySignature(opts_.app_secret, req.body, req.get_header_value("X-Hub-Signature-256"))) {
      case SignatureCheck::kValid:
        break;
      case SignatureCheck::kMissing:
        metrics_.missing_signature->Increment();
        LogWarn("webhook without X-Hub-Signature-256", {{"remote", req.remote_addr}});
        return Answer(res, 401, "missing X-Hub-Signature-256");
      default:
        metrics_.bad_signature->Increment();
        LogWarn("webhook with a bad signature", {{"remote", req.remote_addr}});
        return Answer(res, 403, "invalid X-Hub-Signature-256");
    }
    auto batch = ParseWebhook(req.body);
    if (!batch.ok()) {
      metrics_.malformed->Increment();
      LogWarn("malformed webhook", {{"error", batch.status().message()}});
      return Answer(res, 400, batch.status().message());
    }
    batch->set_delivery_id(absl::StrFormat("gw-%d", delivery_seq_++));
    batch->set_received_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    auto ack = controller_->Deliver(*batch, opts_.ingest_deadline);
    if (!ack.ok()) {
      metrics_.unavailable->Increment();
      LogWarn("controller did not ack; WhatsApp will retry", {{"error", ack.status().message()}});
      res.set_header("Retry-After", "5");
      return Answer(res, 503, "temporarily unavailable");
    }
    metrics_.acked->Increment();
    for (const auto& ev : batch->events()) {
      (ev.has_message() ? metrics_.messages : ev.has_status() ? metrics_.statuses : metrics_.others)
          ->Increment();
    }
    LogDebug("webhook acked", {{"delivery", batch->delivery_id()}, {"accepted", ack->accepted()},
                               {"duplicates", ack->duplicates()}, {"statuses", ack->statuses()}});
    Answer(res, 200, "EVENT_RECEIVED");
  }

  // PROTOCOLS.md A1: echo hub.challenge verbatim when the token matches.
  void Verify(const httplib::Request& req, httplib::Response& res) {
    const std::string mode = req.get_param_value("hub.mode");
    const std::string token = req.get_param_value("hub.verify_token");
    if (mode == "subscribe" && !opts_.verify_token.empty() && token == opts_.verify_token) {
      res.set_content(req.get_param_value("hub.challenge"), "text/plain");
      LogInfo("webhook verified");
      return;
    }
    LogWarn("webhook verification refused", {{"mode", mode}});
    res.status = 403;
    res.set_content("verification failed\n", "text/plain");
  }

  GatewayOptions opts_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<ControllerClient> controller_;
  GatewayMetrics metrics_;
  std::atomic<uint64_t> delivery_seq_{0};
  bool tls_ = false;
  std::string address_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(const GatewayOptions& opts) {
  auto server = std::make_unique<GatewayServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::gateway
