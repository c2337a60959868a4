// Cluster mode end to end: real etcd (Debian's etcd-server, started by the
// test on free ports), three controllers electing a leader on it, two
// workers and a gateway given all three controllers. The leader is killed,
// paused past its lease, an etcd member is restarted: every message that got
// its 200 is answered exactly once. Every wait is on an event.
#include <signal.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bridge_cluster.h"
#include "etcd_process.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {
namespace {

using nlohmann::json;

std::string User(int i) { return absl::StrCat("1555876", 1000 + i); }

// A lease of 2 s (etcd's floor): takeovers are quick, the test short. Every
// message is retried like Meta does (for days; here 30 doublings from
// 100 ms): a webhook refused while leadership moves is delivered later.
ClusterOptions ClusterOn(const EtcdProcess& etcd, double pace = 1.0,
                         const std::string& lease = "2s") {
  // One reply per message (no coalescing) keeps "each answered once"
  // countable; coalescing has its own tests (memory_test.cc).
  return {.reply_pace = pace,
          .controller_args = {"--leader_lease=" + lease, "--coalesce=false"},
          .store = etcd.StoreSpec("cluster"),
          .controllers = 3};
}

#define REQUIRE_ETCD(etcd)                                                          \
  if (!EtcdInstalled()) GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server)"; \
  ASSERT_TRUE((etcd).ok()) << (etcd).Logs()

// Each user's outbox holds exactly one reply to each of `said`. In any
// order: a webhook refused during the election is retried later, as Meta
// does, and may arrive after a newer one.
void ExpectAnsweredOnce(BridgeCluster& c, int users, const std::vector<std::string>& said) {
  ASSERT_NE(c.AwaitLeader(), -1) << c.Logs();
  for (int i = 0; i < users; ++i) {
    json out = c.Outbox(User(i), static_cast<int>(said.size()));
    ASSERT_EQ(out.size(), said.size()) << User(i) << ": " << out.dump() << c.Logs();
    std::multiset<std::string> got, want;
    for (const json& m : out) {
      got.insert(m["type"] == "audio" ? "voice" : m.value("text", "?"));
    }
    for (const std::string& s : said) {
      want.insert(s == "voice" ? s : absl::StrCat("You said: ", s, " ", i));
    }
    EXPECT_EQ(got, want) << out.dump();
  }
}

// Each user's first turn has reached the agent: all are in flight at the
// leader, whose index is returned through `leader`.
void FirstTurnsInFlight(BridgeCluster& c, int users, int* leader) {
  *leader = c.AwaitLeader();
  ASSERT_NE(*leader, -1) << c.Logs();
  for (int i = 0; i < users; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("first ", i), "?retries=30");
  }
  ASSERT_GE(c.Conversations(users)["conversations"].size(), static_cast<size_t>(users))
      << c.Logs();
}

TEST(ClusterTest, LeaderKilledUnderAStreamOfTextAndVoiceAnswersEachOnce) {
  EtcdProcess etcd;
  REQUIRE_ETCD(etcd);
  constexpr int kUsers = 6;
  BridgeCluster c(ClusterOn(etcd));
  int leader = -1;
  ASSERT_NO_FATAL_FAILURE(FirstTurnsInFlight(c, kUsers, &leader));
  const absl::Time killed = absl::Now();
  c.controller(leader).Signal(SIGKILL);
  ASSERT_TRUE(c.controller(leader).Wait().has_value());
  // Meta retries a refused webhook for days; the simulator's default of 5
  // retries would give up before the election is over.
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "voice", AudioFixture("voice_note_tone_440hz.ogg"), "?retries=30");
  }
  const int next = c.AwaitLeader(leader);
  ASSERT_NE(next, -1) << c.Logs();
  std::cerr << "takeover after kill -9: " << absl::Now() - killed << " (lease 2 s)\n";
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("third ", i), "?retries=30");
  }
  ExpectAnsweredOnce(c, kUsers, {"first", "voice", "third"});
  // Nothing is left to run anywhere: a duplicate would have been sent.
  ASSERT_TRUE(c.AwaitControllerMetric("bridge_controller_turns_pending 0")) << c.Logs();
  ExpectAnsweredOnce(c, kUsers, {"first", "voice", "third"});
}

// SIGSTOP past the lease: a standby takes over and answers; the old leader,
// resumed, finds its lease gone and exits (its writes would be fenced
// anyway). The turns it held in flight are answered once, by someone.
TEST(ClusterTest, LeaderPausedPastItsLeaseStepsDownAndNothingIsAnsweredTwice) {
  EtcdProcess etcd;
  REQUIRE_ETCD(etcd);
  constexpr int kUsers = 4;
  BridgeCluster c(ClusterOn(etcd));
  int leader = -1;
  ASSERT_NO_FATAL_FAILURE(FirstTurnsInFlight(c, kUsers, &leader));
  c.controller(leader).Signal(SIGSTOP);
  const int next = c.AwaitLeader(leader);
  ASSERT_NE(next, -1) << c.Logs();
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("second ", i), "?retries=30");
  }
  c.controller(leader).Signal(SIGCONT);
  EXPECT_EQ(c.controller(leader).Wait().value_or(-1), 1) << c.Logs();
  EXPECT_TRUE(c.controller(leader).WaitForOutput("lost leadership")) << c.Logs();
  ExpectAnsweredOnce(c, kUsers, {"first", "second"});
  ASSERT_TRUE(c.AwaitControllerMetric("bridge_controller_turns_pending 0")) << c.Logs();
  ExpectAnsweredOnce(c, kUsers, {"first", "second"});
}

// One member of a three-member etcd down and back: quorum holds, nothing is
// lost, and the controllers' channel moves off the dead member.
TEST(ClusterTest, AnEtcdMemberRestartedInAThreeMemberClusterLosesNothing) {
  EtcdProcess etcd(3);
  REQUIRE_ETCD(etcd);
  constexpr int kUsers = 3;
  // The default lease (5 s) outlasts etcd's own re-election (~1-2 s), as in
  // production: the leader keeps its place through a member's restart.
  BridgeCluster c(ClusterOn(etcd, /*pace=*/0, "5s"));
  ASSERT_NE(c.AwaitLeader(), -1) << c.Logs();
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("first ", i), "?retries=30");
  }
  etcd.Kill(0);  // the first endpoint: every client's first choice
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("second ", i), "?retries=30");
  }
  ExpectAnsweredOnce(c, kUsers, {"first", "second"});
  ASSERT_TRUE(etcd.Start(0)) << etcd.Logs();
  for (int i = 0; i < kUsers; ++i) {
    c.UserSays(User(i), "text", absl::StrCat("third ", i), "?retries=30");
  }
  ExpectAnsweredOnce(c, kUsers, {"first", "second", "third"});
}

// A controller restarted from nothing (cluster mode keeps nothing on local
// disk) rejoins as a standby, and bridgectl given every controller answers
// whichever leads, before and after the leader changes.
TEST(ClusterTest, ARestartedControllerRejoinsAndBridgectlFindsTheLeader) {
  EtcdProcess etcd;
  REQUIRE_ETCD(etcd);
  BridgeCluster c(ClusterOn(etcd, /*pace=*/0));
  const int leader = c.AwaitLeader();
  ASSERT_NE(leader, -1) << c.Logs();
  c.UserSays(User(0), "text", "first 0", "?retries=30");
  ASSERT_EQ(c.Outbox(User(0), 1).size(), 1u) << c.Logs();
  auto bridgectl_sessions = [&] {
    ChildProcess ctl(BRIDGECTL_BIN,
                     {absl::StrCat("--controller=", c.controller_address()), "--json", "sessions"},
                     {{"BRIDGE_ADMIN_TOKEN", c.admin_token()}});
    EXPECT_EQ(ctl.Wait().value_or(-1), 0) << ctl.Output();
    return ctl.Output();
  };
  EXPECT_NE(bridgectl_sessions().find("turnsDone"), std::string::npos);

  const int standby = (leader + 1) % 3;
  const std::string address = c.controller_grpc(standby);
  c.controller(standby).Signal(SIGKILL);
  ASSERT_TRUE(c.controller(standby).Wait().has_value());
  c.StartControllerAt(standby, address);

  // Only the restarted controller is left to lead.
  const int other = (leader + 2) % 3;
  c.controller(other).Signal(SIGKILL);
  ASSERT_TRUE(c.controller(other).Wait().has_value());
  c.controller(leader).Signal(SIGTERM);  // a clean stop hands over at once
  EXPECT_EQ(c.controller(leader).Wait().value_or(-1), 0) << c.Logs();
  EXPECT_EQ(c.AwaitLeader(leader), standby) << c.Logs();
  EXPECT_NE(bridgectl_sessions().find("turnsDone"), std::string::npos);
  c.UserSays(User(0), "text", "second 0", "?retries=30");
  ExpectAnsweredOnce(c, 1, {"first", "second"});
}


// The transcript and the memory are in etcd: a new leader serves the first
// and fills assignments from the second.
TEST(ClusterTest, TheTranscriptAndTheMemorySurviveALeaderChange) {
  EtcdProcess etcd;
  REQUIRE_ETCD(etcd);
  BridgeCluster c(ClusterOn(etcd, /*pace=*/0));
  const int leader = c.AwaitLeader();
  ASSERT_NE(leader, -1) << c.Logs();
  c.UserSays(User(0), "text", "my name is Ana", "?retries=30");
  ASSERT_EQ(c.Outbox(User(0), 1).size(), 1u) << c.Logs();
  const std::string id = c.SessionsAfterTurns(1)[0].session_id();
  // bridgectl finds the leader; a new one may still be loading (UNAVAILABLE).
  // Retried until it answers with `expect` (a bounded retry of the operator's call).
  auto bridgectl = [&](std::vector<std::string> args, const std::string& expect = "") {
    args.insert(args.begin(), absl::StrCat("--controller=", c.controller_address()));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    for (;;) {
      ChildProcess ctl(BRIDGECTL_BIN, args, {{"BRIDGE_ADMIN_TOKEN", c.admin_token()}});
      const bool ok = ctl.Wait().value_or(-1) == 0;
      if ((ok && ctl.Output().find(expect) != std::string::npos) || absl::Now() > deadline) {
        return ctl.Output();
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
  };
  // Durable first: the Sessions API counts a turn done before its commit,
  // and the transcript is read from the store, so it shows the exchange
  // once it is committed. Only then is the leader killed.
  ASSERT_NE(bridgectl({"transcript", id}, "my name is Ana").find("my name is Ana"),
            std::string::npos) << c.Logs();
  c.controller(leader).Signal(SIGKILL);
  ASSERT_TRUE(c.controller(leader).Wait().has_value());
  ASSERT_NE(c.AwaitLeader(leader), -1) << c.Logs();
  const std::string transcript = bridgectl({"transcript", id}, "my name is Ana");
  EXPECT_NE(transcript.find("my name is Ana"), std::string::npos) << transcript << c.Logs();
  bridgectl({"end", id});
  c.UserSays(User(0), "text", "what is my name?", "?retries=30");
  ASSERT_EQ(c.Outbox(User(0), 2).size(), 2u) << c.Logs();
  const json all = c.Conversations(2);
  std::string context;
  for (const json& conv : all["conversations"]) {
    for (const json& m : conv["user_messages"]) {
      if (m == "what is my name?" && !conv["contextual_updates"].empty()) {
        context = conv["contextual_updates"][0];
      }
    }
  }
  EXPECT_NE(context.find("user: my name is Ana"), std::string::npos) << all.dump();
}

}  // namespace
}  // namespace bridge::testing
