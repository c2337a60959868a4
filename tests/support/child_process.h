// Runs one of our real binaries for an end-to-end test: captures its stdout
// and stderr line by line, waits for events (the READY line, a log line)
// instead of sleeping, and stops it with a signal.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace bridge::testing {

class ChildProcess {
 public:
  // `env` entries are added to (or override) the test's own environment.
  ChildProcess(std::string binary, std::vector<std::string> args,
               std::map<std::string, std::string> env = {});
  ~ChildProcess();  // SIGKILLs the child if still running

  // Waits for `READY <name> k=v ...` and returns the k=v pairs; an empty map
  // if the process exited or `timeout` passed first (a hang guard, not a
  // timing assertion).
  std::map<std::string, std::string> WaitReady(absl::Duration timeout = absl::Seconds(60));

  // Waits until a stderr/stdout line contains `needle`.
  bool WaitForOutput(const std::string& needle, absl::Duration timeout = absl::Seconds(60));

  void Signal(int sig);
  // Waits for exit; returns the exit code (128+N for a signal), or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout = absl::Seconds(30));

  std::string Output() const;  // everything captured so far, both streams
  pid_t pid() const { return pid_; }

 private:
  void Reader(int fd);

  pid_t pid_ = -1;
  std::vector<std::thread> readers_;
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  int open_streams_ ABSL_GUARDED_BY(mu_) = 2;
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
};

// "0.0.0.0:123" -> "127.0.0.1:123": a wildcard bind is reached over loopback.
std::string Dialable(const std::string& address);

}  // namespace bridge::testing
