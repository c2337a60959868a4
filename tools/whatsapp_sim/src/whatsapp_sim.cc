#include "whatsapp_sim/whatsapp_sim.h"

#include <atomic>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/http_server.h"
#include "sim_core.h"

namespace bridge::whatsapp_sim {
namespace {

// Documents are the largest media Meta takes (100 MB); the multipart framing
// needs a little more.
constexpr size_t kMaxBody = 101 * 1024 * 1024;
constexpr int kHttpThreads = 512;  // connections served at once (see Init)

absl::Status CheckOptions(const SimOptions& o) {
  auto bad = [](absl::string_view what) { return absl::InvalidArgumentError(what); };
  if (!SplitHostPort(o.listen).ok()) return bad(absl::StrCat("--listen: bad address '", o.listen, "'"));
  if (!o.webhook_url.empty() && !absl::StartsWith(o.webhook_url, "http://") &&
      !absl::StartsWith(o.webhook_url, "https://")) {
    return bad("--webhook_url must start with http:// or https://");
  }
  if (o.phone_number_id.empty()) return bad("--phone_number_id must not be empty");
  if (o.media_url_ttl_s <= 0) return bad("--media_url_ttl_s must be positive");
  if (o.webhook_retry_base_ms < 0) return bad("--webhook_retry_base_ms must not be negative");
  if (o.call_accept_window_s <= 0) return bad("--call_accept_window_s must be positive");
  return absl::OkStatus();
}

// host:port bound -> a URL others can dial (a wildcard bind via loopback).
std::string SelfBaseUrl(const std::string& address, bool tls) {
  std::string host_port = address;
  if (absl::StartsWith(address, "0.0.0.0:")) host_port = "127.0.0.1" + address.substr(7);
  if (absl::StartsWith(address, "[::]:")) host_port = "[::1]" + address.substr(4);
  return absl::StrCat(tls ? "https://" : "http://", host_port);
}

class WhatsAppSimImpl final : public WhatsAppSim {
 public:
  explicit WhatsAppSimImpl(const SimOptions& opts) : core_(opts) {}
  ~WhatsAppSimImpl() override { Shutdown(); }

  absl::Status Init() {
    const SimOptions& o = core_.opts();
    // In-process users (tests) get the same redaction main() gives flags.
    for (const std::string* s : {&o.access_token, &o.app_secret, &o.verify_token}) {
      RegisterSecret(*s);
    }
    // Every phone (page or load caller) holds a connection in a long poll,
    // and each connection holds a thread: with 32 (the default), 50 callers
    // waiting for their answers starved the business's own pre_accept calls,
    // a limit the Graph API does not have. Threads are made on demand.
    HttpServerOptions http{o.listen, o.tls_cert, o.tls_key, kMaxBody};
    http.threads = kHttpThreads;
    auto server = HttpServer::Create(http);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    AddGraphRoutes(*server_, core_);
    AddControlRoutes(*server_, core_);
    if (absl::Status s = server_->Bind(); !s.ok()) return s;
    // Everything handlers read is in place before the first request.
    core_.set_base_url(SelfBaseUrl(server_->address(), server_->tls()));
    core_.webhooks().Start();
    if (absl::Status s = server_->Serve(); !s.ok()) return s;
    started_ = true;
    core_.StartCallTimer();
    if (o.access_token.empty()) {
      LogWarn("no --access_token: Graph calls with any non-empty token are accepted");
    }
    LogInfo("whatsapp-sim serving",
            {{"http", server_->address()},
             {"tls", server_->tls() ? "on" : "off"},
             {"phone_number_id", o.phone_number_id},
             {"webhook_url", o.webhook_url.empty() ? "(none)" : o.webhook_url},
             {"status_webhooks", o.status_webhooks ? "on" : "off"}});
    return absl::OkStatus();
  }

  std::string http_address() const override { return server_->address(); }
  std::string base_url() const override { return core_.base_url(); }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"http", server_->address()}};
  }

  void Shutdown() override {
    if (!started_.exchange(false)) return;
    // Wake long-polls and latency sleeps first: httplib's stop() waits for
    // the handlers that hold its threads.
    core_.Close();
    core_.webhooks().Stop();
    server_->Stop();
  }

 private:
  SimCore core_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<bool> started_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<WhatsAppSim>> WhatsAppSim::Start(const SimOptions& opts) {
  if (absl::Status s = CheckOptions(opts); !s.ok()) return s;
  auto sim = std::make_unique<WhatsAppSimImpl>(opts);
  if (absl::Status s = sim->Init(); !s.ok()) return s;
  return sim;
}

}  // namespace bridge::whatsapp_sim
