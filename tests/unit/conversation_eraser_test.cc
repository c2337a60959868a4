// The ElevenLabs conversation eraser against the real elevenlabs-sim binary:
// a conversation made over the agent WebSocket is deleted, deleting it again
// is fine (404), a wrong key is PermissionDenied, a dead host Unavailable.
#include "conversation_eraser.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "ws/websocket.h"

namespace bridge::controller {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "sk_eraser_test_key";
constexpr absl::Duration kWait = absl::Seconds(30);  // hang guard, not a timing assertion

// Opens one agent conversation and hands back its id from the metadata event.
class IdCatcher : public ws::ConnectionHandler {
 public:
  void OnText(const std::string& text) override {
    json msg = json::parse(text, nullptr, false);
    if (!msg.is_object() || msg.value("type", "") != "conversation_initiation_metadata") return;
    absl::MutexLock l(&mu_);
    id_ = msg["conversation_initiation_metadata_event"].value("conversation_id", "");
  }
  void OnClose(int, const std::string&, bool) override { Done("closed"); }
  void OnFail(const std::string& error, int) override { Done(error); }
  std::string WaitId() {
    absl::MutexLock l(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !id_.empty() || !end_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
    return id_;
  }

 private:
  void Done(const std::string& why) {
    absl::MutexLock l(&mu_);
    end_ = why;
  }
  absl::Mutex mu_;
  std::string id_ ABSL_GUARDED_BY(mu_);
  std::string end_ ABSL_GUARDED_BY(mu_);
};

class ConversationEraserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_ = std::make_unique<testing::ChildProcess>(
        BRIDGE_ELEVENLABS_SIM_BIN,
        std::vector<std::string>{"--listen=127.0.0.1:0", "--env_file=/dev/null"},
        std::map<std::string, std::string>{{"ELEVENLABS_API_KEY", kKey}});
    http_ = sim_->WaitReady()["http"];
    ASSERT_FALSE(http_.empty()) << sim_->Output();
  }

  std::string NewConversation() {
    auto pool = ws::ClientPool::Create();
    auto catcher = std::make_shared<IdCatcher>();
    ws::ClientOptions o;
    o.url = absl::StrCat("ws://", http_, "/v1/convai/conversation?agent_id=agent_erase");
    o.headers = {{"xi-api-key", kKey}};
    auto conn = pool->Connect(o, catcher);
    EXPECT_TRUE(conn.ok()) << conn.status();
    if (!conn.ok()) return "";
    // Metadata comes at once after this (else after the agent's 1 s wait).
    (*conn)->SendText(R"({"type":"conversation_initiation_client_data"})");
    std::string id = catcher->WaitId();
    pool->Stop();
    return id;
  }

  json SimRecord(const std::string& id) {
    httplib::Client cli(absl::StrCat("http://", http_));
    auto r = cli.Get("/sim/conversations");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : httplib::to_string(r.error()));
    if (!r) return json();
    const json all = json::parse(r->body);
    for (const json& c : all["conversations"]) {
      if (c["conversation_id"] == id) return c;
    }
    ADD_FAILURE() << "no conversation " << id << " in " << r->body;
    return json::object();
  }

  std::unique_ptr<testing::ChildProcess> sim_;
  std::string http_;
};

TEST_F(ConversationEraserTest, DeletesOnceThenAlreadyGoneIsOk) {
  const std::string id = NewConversation();
  ASSERT_FALSE(id.empty()) << sim_->Output();
  // A base URL with a trailing slash, as operators write them.
  auto eraser = NewElevenLabsConversationEraser(absl::StrCat("http://", http_, "/"), kKey);
  ASSERT_TRUE(eraser.ok()) << eraser.status();
  EXPECT_FALSE(SimRecord(id).value("deleted", true));
  EXPECT_TRUE((*eraser)->Delete(id).ok());
  EXPECT_TRUE(SimRecord(id).value("deleted", false));
  EXPECT_TRUE((*eraser)->Delete(id).ok());  // 404: already deleted
  EXPECT_TRUE((*eraser)->Delete("conv_never_was").ok());
}

TEST_F(ConversationEraserTest, WrongKeyIsPermissionDeniedAndNeverShown) {
  const std::string id = NewConversation();
  ASSERT_FALSE(id.empty()) << sim_->Output();
  // The worker's ELEVENLABS_BASE_URL may be the WebSocket form.
  auto eraser = NewElevenLabsConversationEraser(absl::StrCat("ws://", http_), "sk_wrong_key_123");
  ASSERT_TRUE(eraser.ok()) << eraser.status();
  absl::Status s = (*eraser)->Delete(id);
  EXPECT_TRUE(absl::IsPermissionDenied(s)) << s;
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("sk_wrong_key_123")));
  EXPECT_THAT(std::string(s.message()), HasSubstr("ELEVENLABS_API_KEY"));
  EXPECT_FALSE(SimRecord(id).value("deleted", true));
}

TEST_F(ConversationEraserTest, UnreachableIsUnavailableAndBadSettingsAreRefused) {
  sim_->Signal(SIGTERM);
  ASSERT_TRUE(sim_->Wait().has_value());
  auto eraser = NewElevenLabsConversationEraser(absl::StrCat("http://", http_), kKey,
                                                absl::Seconds(2));
  ASSERT_TRUE(eraser.ok()) << eraser.status();
  absl::Status s = (*eraser)->Delete("conv_x");
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_FALSE(NewElevenLabsConversationEraser("ftp://x", kKey).ok());
  EXPECT_FALSE(NewElevenLabsConversationEraser(absl::StrCat("http://", http_), "").ok());
}

}  // namespace
}  // namespace bridge::controller
