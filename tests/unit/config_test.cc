#include "common/config.h"

#include <cstdlib>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/redact.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(std::string, test_listen, "0.0.0.0:1", "");
ABSL_FLAG(std::string, test_token, "", "");
ABSL_FLAG(int, test_count, 1, "");

namespace bridge {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(DotEnvTest, ParsesCommentsExportAndQuotes) {
  auto kv = ParseDotEnv(
      "# header\n\nexport A=1\nB = \"two words\"\nC='x#y'\nD=plain # trailing\nE=\n");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_THAT(*kv, ElementsAre(Pair("A", "1"), Pair("B", "two words"), Pair("C", "x#y"),
                               Pair("D", "plain"), Pair("E", "")));
}

TEST(DotEnvTest, RejectsLinesWithoutEquals) {
  auto kv = ParseDotEnv("A=1\nnonsense\n");
  ASSERT_FALSE(kv.ok());
  EXPECT_THAT(kv.status().message(), HasSubstr("line 2"));
}

// Found by tests/fuzz/fuzz_dotenv: a key of blanks only was accepted as "".
TEST(DotEnvTest, RejectsAnEmptyKey) {
  for (const char* text : {"A=1\nexport  =x\n", "A=1\nexport \t=x\n"}) {
    auto kv = ParseDotEnv(text);
    ASSERT_FALSE(kv.ok()) << text;
    EXPECT_THAT(kv.status().message(), HasSubstr("line 2"));
  }
}

TEST(PortToListenTest, ValidatesPorts) {
  EXPECT_EQ(*PortToListen("3000"), "0.0.0.0:3000");
  EXPECT_EQ(*PortToListen("0"), "0.0.0.0:0");
  EXPECT_FALSE(PortToListen("70000").ok());
  EXPECT_FALSE(PortToListen("http").ok());
}

class LoadConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_file_ = absl::StrCat(::testing::TempDir(), "/cfg-", getpid(), "-",
                             ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                             ".env");
    absl::SetFlag(&FLAGS_test_listen, "0.0.0.0:1");
    absl::SetFlag(&FLAGS_test_token, "");
    absl::SetFlag(&FLAGS_test_count, 1);
    unsetenv("TEST_PORT");
    unsetenv("TEST_TOKEN");
    unsetenv("TEST_COUNT");
  }
  void TearDown() override { std::remove(env_file_.c_str()); }

  absl::StatusOr<std::vector<std::string>> Load(std::vector<std::string> args) {
    std::ofstream(env_file_) << file_;
    std::vector<std::string> all{"prog", absl::StrCat("--env_file=", env_file_)};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    return LoadConfigOrError(static_cast<int>(argv.size()), argv.data(),
                             {{"TEST_PORT", "test_listen", false, PortToListen},
                              {"TEST_TOKEN", "test_token", true},
                              {"TEST_COUNT", "test_count"}});
  }

  std::string env_file_;
  std::string file_;
};

TEST_F(LoadConfigTest, DotEnvThenEnvThenFlags) {
  file_ = "TEST_PORT=4000\nTEST_TOKEN=from-file-token\nTEST_COUNT=5\n";
  setenv("TEST_COUNT", "7", 1);
  auto args = Load({"--test_token=from-flag-token", "positional"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(absl::GetFlag(FLAGS_test_listen), "0.0.0.0:4000");  // .env
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 7);                // env beats .env
  EXPECT_EQ(absl::GetFlag(FLAGS_test_token), "from-flag-token");  // flag beats both
  EXPECT_THAT(*args, ElementsAre("prog", "positional"));
  // Secrets from every source are redacted.
  EXPECT_EQ(Redact("from-flag-token"), "[REDACTED]");
  EXPECT_EQ(Redact("from-file-token"), "[REDACTED]");
}

TEST_F(LoadConfigTest, BadValueNamesTheKeyAndItsSource) {
  file_ = "TEST_COUNT=many\n";
  auto args = Load({});
  ASSERT_FALSE(args.ok());
  EXPECT_THAT(args.status().message(), HasSubstr("TEST_COUNT"));
  EXPECT_THAT(args.status().message(), HasSubstr(env_file_));

  setenv("TEST_PORT", "99999", 1);
  file_ = "";
  args = Load({});
  ASSERT_FALSE(args.ok());
  EXPECT_THAT(args.status().message(), HasSubstr("TEST_PORT (env)"));
}

TEST_F(LoadConfigTest, MissingEnvFileIsFine) {
  std::vector<std::string> all{"prog", "--env_file=/nonexistent/.env"};
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  EXPECT_TRUE(LoadConfigOrError(2, argv.data(), {}).ok());
}

}  // namespace
}  // namespace bridge
