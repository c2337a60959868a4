// The three services as real processes: they bind port 0, print READY, serve
// health, reflection and metrics, answer unbuilt RPCs with UNIMPLEMENTED, keep
// secrets out of their logs and exit 0 on SIGTERM.
#include <signal.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "child_process.h"
#include "gmock/gmock.h"
#include "fresh_dir.h"
#include "grpc_probe.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace bridge::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecretKey[] = "sk_live_e2e_secret_key_123456";
constexpr char kSecretToken[] = "EAAG-e2e-access-token-abcdef";

std::vector<std::string> CommonArgs() {
  // No .env from the developer's checkout leaks into tests.
  return {"--env_file=/nonexistent/.env"};
}

std::unique_ptr<ChildProcess> StartController() {
  auto args = CommonArgs();
  args.insert(args.end(), {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                           absl::StrCat("--store=sqlite:", FreshDir("services"), "/c.db")});
  return std::make_unique<ChildProcess>(BRIDGE_CONTROLLER_BIN, args);
}

std::string HttpGet(const std::string& address, const std::string& path, int* status) {
  httplib::Client cli(absl::StrCat("http://", Dialable(address)));
  cli.set_connection_timeout(10);
  auto res = cli.Get(path.c_str());
  *status = res ? res->status : -1;
  return res ? res->body : "";
}

void ExpectGrpcBasics(const std::string& grpc, const std::vector<std::string>& services) {
  auto listed = ReflectedServices(grpc);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(*listed, Contains("grpc.health.v1.Health"));
  for (const auto& s : services) {
    EXPECT_THAT(*listed, Contains(s));
    auto health = HealthStatus(grpc, s);
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, "SERVING") << s;
  }
  auto overall = HealthStatus(grpc, "");
  ASSERT_TRUE(overall.ok());
  EXPECT_EQ(*overall, "SERVING");
}

void ExpectMetrics(const std::string& metrics, const std::string& service) {
  int status = 0;
  std::string body = HttpGet(metrics, "/metrics", &status);
  EXPECT_EQ(status, 200);
  EXPECT_THAT(body, HasSubstr(absl::StrCat("bridge_build_info{service=\"", service, "\"")));
  EXPECT_THAT(body, HasSubstr("process_cpu_seconds_total"));
  EXPECT_THAT(body, HasSubstr("process_resident_memory_bytes"));
}

void ExpectCleanExit(ChildProcess& p) {
  p.Signal(SIGTERM);
  auto code = p.Wait();
  ASSERT_TRUE(code.has_value()) << "did not exit after SIGTERM\n" << p.Output();
  EXPECT_EQ(*code, 0) << p.Output();
}

TEST(ServicesTest, ControllerServesHealthReflectionMetricsAndStops) {
  auto c = StartController();
  auto ready = c->WaitReady();
  ASSERT_TRUE(ready.count("grpc") && ready.count("metrics")) << c->Output();
  const std::string grpc = Dialable(ready["grpc"]);
  ExpectGrpcBasics(grpc, {"bridge.v1.Ingest", "bridge.v1.WorkerLink", "bridge.v1.Sessions"});
  ExpectMetrics(ready["metrics"], "bridge-controller");
  auto [code, msg] = CallEmpty(grpc, "/bridge.v1.Sessions/ListWorkers");
  EXPECT_EQ(code, grpc::StatusCode::OK) << msg;
  std::tie(code, msg) = CallEmpty(grpc, "/bridge.v1.Sessions/GetSession");
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(msg, HasSubstr("no session"));
  ExpectCleanExit(*c);
}

TEST(ServicesTest, WorkerServesAndKeepsSecretsOutOfLogs) {
  auto args = CommonArgs();
  args.insert(args.end(), {"--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                           "--controller=127.0.0.1:1", "--log_level=debug"});
  ChildProcess w(BRIDGE_WORKER_BIN, args,
                 {{"ELEVENLABS_API_KEY", kSecretKey}, {"WHATSAPP_ACCESS_TOKEN", kSecretToken},
                  {"ELEVENLABS_AGENT_ID", "agent_e2e"}});
  auto ready = w.WaitReady();
  ASSERT_TRUE(ready.count("grpc") && ready.count("metrics")) << w.Output();
  ExpectGrpcBasics(Dialable(ready["grpc"]), {"bridge.v1.Media"});
  ExpectMetrics(ready["metrics"], "bridge-worker");
  ExpectCleanExit(w);
  EXPECT_THAT(w.Output(), Not(HasSubstr(kSecretKey)));
  EXPECT_THAT(w.Output(), Not(HasSubstr(kSecretToken)));
}

TEST(ServicesTest, GatewayServesHealthReadinessVerificationAndMetrics) {
  auto c = StartController();
  auto cready = c->WaitReady();
  ASSERT_TRUE(cready.count("grpc")) << c->Output();
  auto args = CommonArgs();
  args.insert(args.end(), {"--listen=127.0.0.1:0",
                           absl::StrCat("--controller=", Dialable(cready["grpc"]))});
  ChildProcess g(BRIDGE_GATEWAY_BIN, args,
                 {{"WHATSAPP_WEBHOOK_VERIFY_TOKEN", "verify-e2e-token"},
                  {"WEBHOOK_SIGNATURE_SECRET", "app-secret-e2e"}});
  auto ready = g.WaitReady();
  ASSERT_TRUE(ready.count("http")) << g.Output();
  const std::string http = ready["http"];
  int status = 0;
  EXPECT_EQ(HttpGet(http, "/healthz", &status), "ok\n");
  EXPECT_EQ(status, 200);
  HttpGet(http, "/readyz", &status);
  EXPECT_EQ(status, 200);
  ExpectMetrics(http, "bridge-gateway");
  // The challenge is echoed verbatim (an opaque string, not a number).
  EXPECT_EQ(HttpGet(http,
                    "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token=verify-e2e-token"
                    "&hub.challenge=1158201444abc",
                    &status),
            "1158201444abc");
  EXPECT_EQ(status, 200);
  HttpGet(http, "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
          &status);
  EXPECT_EQ(status, 403);
  // Without its controller the gateway is alive but not ready.
  ExpectCleanExit(*c);
  HttpGet(http, "/readyz", &status);
  EXPECT_EQ(status, 503);
  HttpGet(http, "/healthz", &status);
  EXPECT_EQ(status, 200);
  ExpectCleanExit(g);
  EXPECT_THAT(g.Output(), Not(HasSubstr("verify-e2e-token")));
  EXPECT_THAT(g.Output(), Not(HasSubstr("app-secret-e2e")));
}

TEST(ServicesTest, BadConfigurationExitsTwoNamingTheKey) {
  ChildProcess g(BRIDGE_GATEWAY_BIN, CommonArgs(), {{"PORT", "not-a-port"}});
  auto code = g.Wait();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(g.Output(), HasSubstr("PORT"));

  auto args = CommonArgs();
  args.push_back("--log_level=loud");
  ChildProcess c(BRIDGE_CONTROLLER_BIN, args);
  code = c.Wait();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(c.Output(), HasSubstr("log_level"));
}

TEST(ServicesTest, PortFromDotEnvFileAndFlagOverridesIt) {
  std::string env_file = absl::StrCat(::testing::TempDir(), "/gw-", getpid(), ".env");
  {
    FILE* f = fopen(env_file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("# comment\nexport PORT=\"notaport\"\n", f);
    fclose(f);
  }
  // .env's bad PORT is reported with the file's name...
  ChildProcess bad(BRIDGE_GATEWAY_BIN, {absl::StrCat("--env_file=", env_file)});
  ASSERT_EQ(bad.Wait().value_or(-1), 2);
  EXPECT_THAT(bad.Output(), HasSubstr("PORT"));
  EXPECT_THAT(bad.Output(), HasSubstr(env_file));
  // ...and the process env wins over the file.
  ChildProcess good(BRIDGE_GATEWAY_BIN, {absl::StrCat("--env_file=", env_file),
                                         "--controller=127.0.0.1:1"},
                    {{"PORT", "0"}});
  auto ready = good.WaitReady();
  ASSERT_TRUE(ready.count("http")) << good.Output();
  EXPECT_TRUE(absl::StartsWith(ready["http"], "0.0.0.0:"));
  ExpectCleanExit(good);
  std::remove(env_file.c_str());
}

// Voice notes go to speech-to-text by default, which needs the API key: a
// worker without one says so and which setting avoids it, instead of failing
// every voice note later.
TEST(ServicesTest, WorkerWithoutAnApiKeyForSpeechToTextExitsTwo) {
  ChildProcess w(BRIDGE_WORKER_BIN,
                 {"--env_file=/nonexistent", "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                  "--controller=127.0.0.1:1"},
                 {{"ELEVENLABS_AGENT_ID", "agent_e2e"}, {"WHATSAPP_ACCESS_TOKEN", kSecretToken}});
  ASSERT_EQ(w.Wait().value_or(-1), 2);
  EXPECT_THAT(w.Output(), HasSubstr("ELEVENLABS_API_KEY"));
  EXPECT_THAT(w.Output(), HasSubstr("--voice_input=stream"));
  ChildProcess bad(BRIDGE_WORKER_BIN, {"--env_file=/nonexistent", "--voice_input=tape"});
  ASSERT_EQ(bad.Wait().value_or(-1), 2);
  EXPECT_THAT(bad.Output(), HasSubstr("--voice_input"));
}

// Calls' settings (docs/calls.md): each bad one exits 2 naming itself; a
// STUN server that does not resolve is found at start, not on the first call.
TEST(ServicesTest, WorkerWithBadCallSettingsExitsTwoNamingThem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--calls=maybe", "--calls"},
      {"--media_port_range=9000", "--media_port_range"},
      {"--media_port_range=9010-9000", "--media_port_range"},
      {"--stun_server=stun:nonexistent.invalid:3478", "STUN_SERVER"},
  };
  for (const auto& [flag, named] : cases) {
    ChildProcess w(BRIDGE_WORKER_BIN,
                   {"--env_file=/nonexistent", "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                    "--controller=127.0.0.1:1", "--voice_input=stream", flag});
    EXPECT_EQ(w.Wait().value_or(-1), 2) << flag << "\n" << w.Output();
    EXPECT_THAT(w.Output(), HasSubstr(named)) << flag;
  }
}

}  // namespace
}  // namespace bridge::testing
