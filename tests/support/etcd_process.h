// A real etcd (Debian's etcd-server 3.4) for tests: one member or a
// three-member cluster on loopback, each with its own data directory and free
// ports, awaited until it serves clients (its log line, never a sleep). A
// member can be stopped and started again on the same data and ports.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "child_process.h"

namespace bridge::testing {

class EtcdProcess {
 public:
  explicit EtcdProcess(int members = 1);
  ~EtcdProcess();

  bool ok() const { return ok_; }
  // "127.0.0.1:P1,127.0.0.1:P2,...": the --store=etcd: endpoint list.
  std::string endpoints() const;
  // A fresh namespace on this etcd: "etcd:<endpoints>/<unique>".
  std::string StoreSpec(const std::string& stem) const;

  void Kill(int member);   // SIGKILL
  void Signal(int member, int sig);  // e.g. SIGSTOP / SIGCONT: a hung member
  bool Start(int member);  // again, same data and ports; true once it serves
  std::string Logs() const;

 private:
  void RemoveMembers();
  struct Member {
    std::string name, data_dir;
    int client_port = 0, peer_port = 0;
    std::unique_ptr<ChildProcess> process;
  };
  bool Launch(Member& m, const std::string& cluster, bool await);
  bool AwaitServing(Member& m);

  std::vector<Member> members_;
  bool ok_ = false;
};

// True when the etcd binary is installed (tests skip with a reason if not).
bool EtcdInstalled();

}  // namespace bridge::testing
