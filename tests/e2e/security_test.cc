// Internal APIs with credentials (issue #11, docs/security.md), end to end
// with the real binaries: a cluster with a cluster token and an operator
// token answers users as before; calls without the right token are refused
// UNAUTHENTICATED; services refuse to listen off loopback without tokens.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "bridge/v1/ingest.grpc.pb.h"
#include "bridge/v1/media.grpc.pb.h"
#include "bridge_cluster.h"
#include "common/call_auth.h"
#include "gmock/gmock.h"
#include "fresh_dir.h"
#include "grpc_probe.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
namespace v1 = ::bridge::v1;

grpc::Status Deliver(const std::string& target, const std::string& token) {
  auto stub = v1::Ingest::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  AttachToken(&ctx, token);
  v1::DeliverRequest req;
  v1::InboundMessage* m = req.add_events()->mutable_message();
  m->set_message_id("wamid.forged");
  m->set_phone_number_id("106540352242922");
  m->mutable_from()->set_wa_id("15550009999");
  m->set_type(v1::MESSAGE_TYPE_TEXT);
  m->set_text("forged");
  v1::DeliverResponse resp;
  return stub->Deliver(&ctx, req, &resp);
}

grpc::Status Converse(const std::string& target, const std::string& token) {
  auto stub = v1::Media::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  AttachToken(&ctx, token);
  auto stream = stub->Converse(&ctx);
  v1::ConverseRequest start;
  start.mutable_start()->set_input_format(v1::AUDIO_FORMAT_PCM_16000);
  start.mutable_start()->set_output_format(v1::AUDIO_FORMAT_PCM_16000);
  stream->Write(start);
  v1::ConverseResponse first;
  const bool started = stream->Read(&first) && first.has_started();
  if (started) ctx.TryCancel();
  grpc::Status s = stream->Finish();
  return started ? grpc::Status::OK : s;
}

TEST(SecurityTest, WithCredentialsUsersAreAnsweredAndStrangersRefused) {
  BridgeCluster c;  // with credentials, as every e2e cluster
  const std::string user = "15551230042";
  c.UserSays(user, "text", "hello with tokens");
  json out = c.Outbox(user, 1);
  ASSERT_EQ(out.size(), 1u) << out.dump() << c.Logs();
  EXPECT_EQ(out[0]["text"], "You said: hello with tokens");

  // Ingest: the cluster token, nothing else.
  EXPECT_EQ(Deliver(c.controller_address(), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Deliver(c.controller_address(), c.admin_token()).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Deliver(c.controller_address(), c.cluster_token()).ok());
  // Sessions: the operator token; the cluster token every worker holds is not enough.
  EXPECT_TRUE(absl::IsUnauthenticated(ListSessions(c.controller_address(), false, "").status()));
  EXPECT_TRUE(absl::IsUnauthenticated(
      ListSessions(c.controller_address(), false, c.cluster_token()).status()));
  EXPECT_TRUE(absl::IsUnauthenticated(
      EndSession(c.controller_address(), "s_any", c.cluster_token())));
  auto sessions = ListSessions(c.controller_address(), false, c.admin_token());
  ASSERT_TRUE(sessions.ok()) << sessions.status();
  EXPECT_EQ(sessions->size(), 2u);  // the user's and the one the cluster token made
  // Media.Converse: no agent conversation for a caller without the token.
  EXPECT_EQ(Converse(c.worker_grpc(0), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Converse(c.worker_grpc(0), c.cluster_token()).ok());
  EXPECT_TRUE(c.AwaitControllerMetric(
      "bridge_grpc_refused_total{api=\"ingest\",reason=\"missing\"} 1"));
  // Health stays open for probes.
  auto health = HealthStatus(c.controller_address(), "bridge.v1.Ingest");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
  // Tokens never reach a log line.
  EXPECT_THAT(c.Logs(), ::testing::Not(HasSubstr(c.cluster_token())));
  EXPECT_THAT(c.Logs(), ::testing::Not(HasSubstr(c.admin_token())));
}

// Off loopback without credentials: exit 2 and say what to set.
TEST(SecurityTest, ServicesRefuseToListenOffLoopbackWithoutCredentials) {
  ChildProcess controller(BRIDGE_CONTROLLER_BIN,
                          {"--env_file=/nonexistent", "--listen=0.0.0.0:0",
                           "--metrics_listen=127.0.0.1:0",
                           absl::StrCat("--store=sqlite:", FreshDir("security"), "/c.db")},
                          {{"BRIDGE_CLUSTER_TOKEN", ""}, {"BRIDGE_ADMIN_TOKEN", ""}});
  EXPECT_EQ(controller.Wait().value_or(-1), 2);
  EXPECT_THAT(controller.Output(), HasSubstr("BRIDGE_CLUSTER_TOKEN"));
  ChildProcess worker(BRIDGE_WORKER_BIN,
                      {"--env_file=/nonexistent", "--listen=0.0.0.0:0",
                       "--metrics_listen=127.0.0.1:0", "--voice_input=stream",
                       "--controller=127.0.0.1:1"},
                      {{"BRIDGE_CLUSTER_TOKEN", ""}});
  EXPECT_EQ(worker.Wait().value_or(-1), 2);
  EXPECT_THAT(worker.Output(), HasSubstr("BRIDGE_CLUSTER_TOKEN"));
}

}  // namespace
}  // namespace bridge::testing
