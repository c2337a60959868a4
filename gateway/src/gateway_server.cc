#include "gateway/gateway_server.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/http_server.h"
#include "common/hub_signature.h"
#include "common/log.h"
#include "common/metrics.h"
#include "controller_client.h"
#include "gateway_metrics.h"
#include "webhook_parser.h"

namespace bridge::gateway {
namespace {

constexpr char kWebhookPath[] = "/webhook/whatsapp";
// Each thread serves one connection at a time and blocks while the controller
// makes a batch durable: enough for Meta's concurrency and a load balancer.

void Answer(HttpResponse& res, int status, absl::string_view text) {
  res.status = status;
  res.content_type = "text/plain";
  res.body = absl::StrCat(text, "\n");
}

class GatewayServerImpl final : public GatewayServer {
 public:
  ~GatewayServerImpl() override { Shutdown(); }

  absl::Status Init(const GatewayOptions& opts) {
    opts_ = opts;
    RegisterBuildInfo("bridge-gateway");
    if (opts.tls_cert_path.empty() != opts.tls_key_path.empty()) {
      return absl::InvalidArgumentError("SSL_CERT_PATH and SSL_KEY_PATH go together");
    }
    HttpServerOptions ho;
    ho.listen = opts.listen;
    ho.tls_cert = opts.tls_cert_path;
    ho.tls_key = opts.tls_key_path;
    ho.max_body_bytes = static_cast<size_t>(opts.max_body_bytes);
    ho.threads = opts.max_connections;
    ho.on_error = [this](HttpResponse& res) {
      if (res.status != 413) return;
      metrics_.too_large->Increment();
      res.body = "body larger than --max_body_bytes\n";
    };
    auto server = HttpServer::Create(ho);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    auto controller = ControllerClient::Create(opts.controller, opts.cluster_token);
    if (!controller.ok()) return controller.status();
    controller_ = *std::move(controller);
    if (opts.app_secret.empty()) {
      LogError("WEBHOOK_SIGNATURE_SECRET is not set: webhook POSTs are refused with 503 until it is");
    }
    Routes();
    if (auto s = server_->Bind(); !s.ok()) return s;
    if (auto s = server_->Serve(); !s.ok()) return s;
    LogInfo("gateway serving", {{"http", server_->address()},
                                {"tls", server_->tls() ? "on" : "off"},
                                {"controller", opts.controller}});
    return absl::OkStatus();
  }

  std::string http_address() const override { return server_->address(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"http", http_address()}};
  }
  void Shutdown() override {
    if (server_) server_->Stop();
  }

 private:
  void Routes() {
    server_->Route("GET", "/healthz", [](const HttpRequest&, HttpResponse& res) {
      Answer(res, 200, "ok");
    });
    server_->Route("GET", "/readyz", [this](const HttpRequest&, HttpResponse& res) {
      absl::Status s = controller_->Check();
      Answer(res, s.ok() ? 200 : 503, s.ok() ? "ready" : absl::StrCat("not ready: ", s.message()));
    });
    server_->Route("GET", "/metrics", [](const HttpRequest&, HttpResponse& res) {
      res.content_type = "text/plain; version=0.0.4";
      res.body = SerializeMetrics();
    });
    server_->Route("GET", kWebhookPath, [this](const HttpRequest& req, HttpResponse& res) {
      Verify(req, res);
    });
    server_->Route("POST", kWebhookPath, [this](const HttpRequest& req, HttpResponse& res) {
      const absl::Time start = absl::Now();
      Webhook(req, res);
      metrics_.ack_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - start));
    });
  }

  // PROTOCOLS.md A2: verify the raw bytes, parse, hand the whole batch to the
  // controller, and say 200 only once it is durable.
  void Webhook(const HttpRequest& req, HttpResponse& res) {
    if (opts_.app_secret.empty()) {
      metrics_.not_configured->Increment();
      res.headers.emplace_back("Retry-After", "60");
      return Answer(res, 503, "webhook signature secret not configured");
    }
    switch (VerifySignature(opts_.app_secret, req.body, req.Header("x-hub-signature-256"))) {
      case SignatureCheck::kValid:
        break;
      case SignatureCheck::kMissing:
        metrics_.missing_signature->Increment();
        LogWarn("webhook without X-Hub-Signature-256", {{"remote", req.remote}});
        return Answer(res, 401, "missing X-Hub-Signature-256");
      default:
        metrics_.bad_signature->Increment();
        LogWarn("webhook with a bad signature", {{"remote", req.remote}});
        return Answer(res, 403, "invalid X-Hub-Signature-256");
    }
    std::vector<std::string> problems;
    auto batch = ParseWebhook(req.body, &problems);
    if (!batch.ok()) {
      metrics_.malformed->Increment();
      LogWarn("malformed webhook", {{"error", batch.status().message()}});
      return Answer(res, 400, batch.status().message());
    }
    // A bad part must not make Meta retry the good ones beside it for days:
    // it is counted and logged (with its JSON path), the rest goes on.
    for (const std::string& p : problems) {
      metrics_.malformed_parts->Increment();
      LogWarn("malformed part of a webhook skipped", {{"error", p}});
    }
    batch->set_delivery_id(absl::StrFormat("gw-%d", delivery_seq_++));
    batch->set_received_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    auto ack = controller_->Deliver(*batch, opts_.ingest_deadline);
    if (!ack.ok()) {
      metrics_.unavailable->Increment();
      LogWarn("controller did not ack; WhatsApp will retry", {{"error", ack.status().message()}});
      res.headers.emplace_back("Retry-After", "5");
      return Answer(res, 503, "temporarily unavailable");
    }
    metrics_.acked->Increment();
    for (const auto& ev : batch->events()) {
      (ev.has_message()  ? metrics_.messages
       : ev.has_status() ? metrics_.statuses
       : ev.has_call()   ? metrics_.calls
                         : metrics_.others)
          ->Increment();
    }
    LogDebug("webhook acked", {{"delivery", batch->delivery_id()}, {"accepted", ack->accepted()},
                               {"duplicates", ack->duplicates()}, {"statuses", ack->statuses()},
                               {"calls", ack->calls()}});
    Answer(res, 200, "EVENT_RECEIVED");
  }

  // PROTOCOLS.md A1: echo hub.challenge verbatim when the token matches.
  void Verify(const HttpRequest& req, HttpResponse& res) {
    const std::string mode = req.Param("hub.mode");
    const std::string token = req.Param("hub.verify_token");
    if (mode == "subscribe" && !opts_.verify_token.empty() && token == opts_.verify_token) {
      res.content_type = "text/plain";
      res.body = req.Param("hub.challenge");
      LogInfo("webhook verified");
      return;
    }
    LogWarn("webhook verification refused", {{"mode", mode}});
    Answer(res, 403, "verification failed");
  }

  GatewayOptions opts_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<ControllerClient> controller_;
  GatewayMetrics metrics_;
  std::atomic<uint64_t> delivery_seq_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(const GatewayOptions& opts) {
  auto server = std::make_unique<GatewayServerImpl>();
  if (auto s = server->Init(opts); !s.ok()) return s;
  return server;
}

}  // namespace bridge::gateway
