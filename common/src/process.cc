#include "common/process.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

#ifndef BRIDGE_VERSION
#define BRIDGE_VERSION "0.0.0-dev"
#endif

namespace bridge {
namespace {
sigset_t ShutdownSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A peer that disappears mid-write must not kill the process.
  signal(SIGPIPE, SIG_IGN);
}

int WaitForShutdownSignal() {
  sigset_t set = ShutdownSet();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

void PrintReady(absl::string_view name,
                const std::vector<std::pair<std::string, std::string>>& endpoints) {
  std::string line = absl::StrCat("READY ", name);
  for (const auto& [k, v] : endpoints) absl::StrAppend(&line, " ", k, "=", v);
  line += "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

absl::string_view BridgeVersion() { return BRIDGE_VERSION; }

}  // namespace bridge
