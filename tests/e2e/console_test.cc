// Issue #14 end to end: the operator console's JSON API on the real
// controller (auth, the Sessions API in JSON, live events by long poll, the
// takeover actions reaching the user), the console's refusal to serve off
// loopback without a token, and every metric the Grafana dashboard and the
// alert rules use existing on a running cluster. Waits are on events (the
// events long poll, the outbox long poll), never a sleep.
#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bridge_cluster.h"
#include "fresh_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kUser[] = "15551230014";

struct Answer {
  int status = -1;
  json body;
};

// One console API call with `token` as the bearer ("" : none).
Answer Api(const std::string& admin, const std::string& method, const std::string& path,
           const std::string& token, const std::string& body = "") {
  httplib::Client cli(absl::StrCat("http://", admin));
  cli.set_read_timeout(60);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", absl::StrCat("Bearer ", token));
  auto res = method == "GET" ? cli.Get(path.c_str(), headers)
                             : cli.Post(path.c_str(), headers, body, "application/json");
  Answer a;
  if (!res) return a;
  a.status = res->status;
  a.body = json::parse(res->body, nullptr, false);
  return a;
}

// Long-polls /api/events until an event satisfies `match`; returns it.
json AwaitEvent(const std::string& admin, const std::string& token,
                const std::function<bool(const json&)>& match, int64_t* after) {
  for (int polls = 0; polls < 10; ++polls) {  // 10 x 25 s: a hang guard
    Answer a = Api(admin, "GET", absl::StrCat("/api/events?wait_ms=25000&after=", *after), token);
    if (a.status != 200) return json();
    *after = a.body["next"].get<int64_t>();
    for (const json& ev : a.body["events"]) {
      if (match(ev)) return ev;
    }
  }
  return json();
}

TEST(ConsoleTest, TheApiNeedsTheOperatorTokenAndTheActionsReachTheUser) {
  BridgeCluster c;
  const std::string admin = c.controller_admin(0);
  ASSERT_FALSE(admin.empty()) << "READY has no admin=\n" << c.Logs();

  // The page itself holds no data: served to anyone, it asks for the token.
  httplib::Client page(absl::StrCat("http://", admin));
  auto html = page.Get("/");
  ASSERT_TRUE(html);
  EXPECT_EQ(html->status, 200);
  EXPECT_THAT(html->body, HasSubstr("type=\"password\""));
  EXPECT_THAT(html->body, HasSubstr(">Take over<"));
  EXPECT_EQ(Api(admin, "GET", "/api/sessions", "").status, 401);
  EXPECT_EQ(Api(admin, "GET", "/api/sessions", "not-the-token").status, 401);
  const std::string token = c.admin_token();

  int64_t seq = 0;
  c.UserSays(kUser, "text", "hello console");
  const json created = AwaitEvent(admin, token, [](const json& ev) {
    return ev.value("type", "") == "SESSION_EVENT_TYPE_TRANSCRIPT";
  }, &seq);
  ASSERT_TRUE(created.is_object()) << c.Logs();
  const std::string id = created["session"]["session_id"];
  EXPECT_EQ(created["session"]["wa_id"], kUser);  // the console sees who it is

  Answer transcript = Api(admin, "GET", absl::StrCat("/api/sessions/", id, "/transcript"), token);
  ASSERT_EQ(transcript.status, 200) << transcript.body;
  ASSERT_GE(transcript.body["entries"].size(), 1u);
  const json& entry = transcript.body["entries"][0];
  EXPECT_EQ(entry["lines"][0]["text"], "hello console");
  EXPECT_GT(entry["latency"].value("total_ms", 0.0), 0.0);

  Answer took = Api(admin, "POST", absl::StrCat("/api/sessions/", id, "/takeover"), token,
                    R"({"operator": "Ana"})");
  ASSERT_EQ(took.status, 200) << took.body;
  Answer said = Api(admin, "POST", absl::StrCat("/api/sessions/", id, "/say"), token,
                    R"({"text": "Ana here, from the console"})");
  ASSERT_EQ(said.status, 200) << said.body;
  const json outbox = c.Outbox(kUser, 2);
  ASSERT_EQ(outbox.size(), 2u) << c.Logs();
  EXPECT_EQ(outbox[1]["text"], "Ana here, from the console");
  Answer session = Api(admin, "GET", absl::StrCat("/api/sessions/", id), token);
  EXPECT_EQ(session.body["session"]["state"], "SESSION_STATE_HUMAN");
  EXPECT_EQ(session.body["session"]["operator"], "Ana");
  Answer back = Api(admin, "POST", absl::StrCat("/api/sessions/", id, "/handback"), token, "{}");
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_FALSE(AwaitEvent(admin, token, [](const json& ev) {
    return ev["session"].value("state", "") == "SESSION_STATE_ACTIVE";
  }, &seq).is_null());

  // Bad input: a clear error, nothing done.
  Answer typo = Api(admin, "POST", absl::StrCat("/api/sessions/", id, "/say"), token,
                    R"({"txt": "x"})");
  EXPECT_EQ(typo.status, 400);
  EXPECT_THAT(typo.body.value("error", ""), HasSubstr("txt"));
  EXPECT_EQ(Api(admin, "POST", "/api/sessions/nope/takeover", token, "{}").status, 404);
  EXPECT_EQ(Api(admin, "GET", "/api/events?wait_ms=forever", token).status, 400);
  EXPECT_EQ(c.Outbox(kUser, 2).size(), 2u);

  Answer workers = Api(admin, "GET", "/api/workers", token);
  ASSERT_EQ(workers.status, 200);
  EXPECT_EQ(workers.body["workers"].size(), 2u);
}

TEST(ConsoleTest, IsNotServedOffLoopbackWithoutAToken) {
  ChildProcess controller(
      BRIDGE_CONTROLLER_BIN,
      {"--env_file=/nonexistent/.env", "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
       "--admin_listen=0.0.0.0:0", absl::StrCat("--store=sqlite:", FreshDir("console"), "/c.db")},
      {{"BRIDGE_ADMIN_TOKEN", ""}, {"SESSION_SECRET", ""}});
  EXPECT_EQ(controller.Wait(), 2) << controller.Output();
  EXPECT_THAT(controller.Output(), HasSubstr("--admin_listen"));
  EXPECT_THAT(controller.Output(), HasSubstr("SESSION_SECRET"));
}

// Without --admin_token the console's token is derived from SESSION_SECRET,
// and the openssl command docs/console.md gives computes the same one.
TEST(ConsoleTest, WithoutAnAdminTokenTheTokenIsTheDocumentedDerivationOfSessionSecret) {
  constexpr char kSecret[] = "s3cret-for-the-console-test";
  ChildProcess controller(
      BRIDGE_CONTROLLER_BIN,
      {"--env_file=/nonexistent/.env", "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
       "--admin_listen=127.0.0.1:0", absl::StrCat("--store=sqlite:", FreshDir("console"), "/c.db")},
      {{"BRIDGE_ADMIN_TOKEN", ""}, {"SESSION_SECRET", kSecret}});
  const std::string admin = controller.WaitReady()["admin"];
  ASSERT_FALSE(admin.empty()) << controller.Output();
  FILE* p = popen(absl::StrCat("printf bridge-admin-console | openssl dgst -sha256 -hmac ", kSecret)
                      .c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {0};
  ASSERT_NE(fgets(line, sizeof(line), p), nullptr);
  pclose(p);
  std::string token(line);  // "SHA2-256(stdin)= <hex>\n"
  token = token.substr(token.rfind(' ') + 1);
  while (!token.empty() && token.back() == '\n') token.pop_back();
  ASSERT_EQ(token.size(), 64u) << line;
  EXPECT_EQ(Api(admin, "GET", "/api/workers", token).status, 200);
  EXPECT_EQ(Api(admin, "GET", "/api/workers", "").status, 401);
  EXPECT_THAT(controller.Output(), ::testing::Not(HasSubstr(token)));  // never logged
  EXPECT_THAT(controller.Output(), ::testing::Not(HasSubstr(kSecret)));
}

// Every metric the dashboard and the alert rules name (tests/deploy/
// used_metrics.py reads them) is on some /metrics page of a running cluster
// once it has answered a message: a renamed metric fails here, not on the
// operator's blank panel.
TEST(ConsoleTest, EveryMetricTheDashboardAndTheAlertRulesUseExists) {
  const std::string cmd =
      absl::StrCat("python3 ", BRIDGE_SOURCE_DIR, "/tests/deploy/used_metrics.py ",
                   BRIDGE_SOURCE_DIR);
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string listed;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) listed.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << cmd;
  std::vector<std::string> used = absl::StrSplit(listed, '\n', absl::SkipEmpty());
  ASSERT_GT(used.size(), 20u) << listed;

  BridgeCluster c;
  c.UserSays(kUser, "text", "hello metrics");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u) << c.Logs();
  std::string pages;
  for (const std::string& address : c.MetricsAddresses()) {
    httplib::Client cli(absl::StrCat("http://", address));
    auto res = cli.Get("/metrics");
    ASSERT_TRUE(res && res->status == 200) << address;
    pages += res->body;
  }
  std::vector<std::string> missing;
  for (const std::string& name : used) {
    if (pages.find(absl::StrCat("# TYPE ", name, " ")) == std::string::npos) {
      missing.push_back(name);
    }
  }
  EXPECT_THAT(missing, ::testing::IsEmpty()) << "used by deploy/ but not exported";
}

// The codes the alert rules key on are counted where they happen: the
// agent's refusal (429 at the signed URL: the plan's concurrency limit), the
// agent closing with a code, a Graph error code on a send.
TEST(ConsoleTest, AgentRefusalsClosesAndGraphErrorsAreCountedByCode) {
  BridgeCluster c;
  // Refused once, then a conversation that crashes: the worker retries both.
  c.PostAgentFault(R"({"signed_url_status":429,"count":1})");
  c.PostAgentFault(R"({"close_after_messages":1,"close_code":1011,"count":1})");
  c.UserSays(kUser, "text", "one");
  ASSERT_EQ(c.Outbox(kUser, 1).size(), 1u) << c.Logs();
  EXPECT_TRUE(c.AwaitWorkerMetric(R"(bridge_worker_agent_refusals_total{http_status="429"} 1)"));
  EXPECT_TRUE(c.AwaitWorkerMetric(R"(bridge_worker_agent_closes_total{code="1011"} 1)"))
      << c.Logs();

  c.PostFault(R"({"messages_status":400,"code":131047,"count":1})");
  c.UserSays(kUser, "text", "two");
  EXPECT_TRUE(c.AwaitWorkerMetric(R"(bridge_worker_graph_errors_total{code="131047"} 1)"))
      << c.Logs();
}

}  // namespace
}  // namespace bridge::testing
