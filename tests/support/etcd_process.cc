#include "etcd_process.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "fresh_dir.h"

namespace bridge::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";
// Logged once the member serves client requests (zap logger, etcd 3.4).
constexpr char kServing[] = "serving client traffic";

// A port the kernel just gave out; etcd binds it right after. Another process
// could take it in between: Launch retries with new ports when etcd cannot bind.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

std::string Url(int port) { return absl::StrCat("http://127.0.0.1:", port); }

}  // namespace

bool EtcdInstalled() { return access(kEtcd, X_OK) == 0; }

EtcdProcess::EtcdProcess(int members) {
  for (int attempt = 0; attempt < 3 && !ok_; ++attempt) {
    RemoveMembers();
    members_.resize(members);
    std::vector<std::string> cluster;
    for (int i = 0; i < members; ++i) {
      Member& m = members_[i];
      m.name = absl::StrCat("m", i);
      m.data_dir = FreshDir("etcd");
      m.client_port = FreePort();
      m.peer_port = FreePort();
      cluster.push_back(absl::StrCat(m.name, "=", Url(m.peer_port)));
    }
    const std::string joined = absl::StrJoin(cluster, ",");
    for (Member& m : members_) Launch(m, joined, /*await=*/false);
    ok_ = true;
    for (Member& m : members_) ok_ = ok_ && AwaitServing(m);
  }
}

EtcdProcess::~EtcdProcess() { RemoveMembers(); }

// Stops the members and deletes their data: each holds ~120 MB (etcd
// preallocates its WAL), which a test run would otherwise leave behind by
// the dozen and fill the disk.
void EtcdProcess::RemoveMembers() {
  for (Member& m : members_) {
    m.process.reset();
    std::error_code ignored;
    if (!m.data_dir.empty()) std::filesystem::remove_all(m.data_dir, ignored);
  }
  members_.clear();
}

bool EtcdProcess::Launch(Member& m, const std::string& cluster, bool await) {
  m.process = std::make_unique<ChildProcess>(
      kEtcd, std::vector<std::string>{
                 "--name", m.name, "--data-dir", m.data_dir,
                 "--listen-client-urls", Url(m.client_port),
                 "--advertise-client-urls", Url(m.client_port),
                 "--listen-peer-urls", Url(m.peer_port),
                 "--initial-advertise-peer-urls", Url(m.peer_port),
                 "--initial-cluster", cluster,
                 "--initial-cluster-token", absl::StrCat("bridge-test-", getpid()),
                 "--logger=zap", "--log-outputs=stderr",
                 // Tests churn leases and keys; keep the backend small.
                 "--auto-compaction-mode=revision", "--auto-compaction-retention=1000"});
  return !await || AwaitServing(m);
}

bool EtcdProcess::AwaitServing(Member& m) {
  return m.process->WaitForOutput(kServing, absl::Seconds(30));
}

std::string EtcdProcess::endpoints() const {
  std::vector<std::string> eps;
  for (const Member& m : members_) eps.push_back(absl::StrCat("127.0.0.1:", m.client_port));
  return absl::StrJoin(eps, ",");
}

std::string EtcdProcess::StoreSpec(const std::string& stem) const {
  static std::atomic<int> n{0};
  return absl::StrCat("etcd:", endpoints(), "/", absl::StrReplaceAll(stem, {{"/", "_"}}), "-",
                      getpid(), "-", n++);
}

void EtcdProcess::Kill(int member) {
  members_[member].process->Signal(SIGKILL);
  members_[member].process->Wait();
}

void EtcdProcess::Signal(int member, int sig) { members_[member].process->Signal(sig); }

bool EtcdProcess::Start(int member) {
  std::vector<std::string> cluster;
  for (const Member& m : members_) cluster.push_back(absl::StrCat(m.name, "=", Url(m.peer_port)));
  return Launch(members_[member], absl::StrJoin(cluster, ","), /*await=*/true);
}

std::string EtcdProcess::Logs() const {
  std::string out;
  for (const Member& m : members_) {
    if (m.process) absl::StrAppend(&out, "--- etcd ", m.name, " ---\n", m.process->Output());
  }
  return out;
}

}  // namespace bridge::testing
