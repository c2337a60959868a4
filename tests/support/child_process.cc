#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace bridge::testing {

ChildProcess::ChildProcess(std::string binary, std::vector<std::string> args,
                           std::map<std::string, std::string> env) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) abort();
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view kv = *e;
    std::string key(kv.substr(0, kv.find('=')));
    if (env.count(key) == 0) envs.emplace_back(kv);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> argv{binary.data()};
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    // Signals blocked in the test runner must not stay blocked in the child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(binary.c_str(), argv.data(), envp.data());
    dprintf(STDERR_FILENO, "exec %s: %s\n", binary.c_str(), strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  readers_.emplace_back([this, fd = out[0]] { Reader(fd); });
  readers_.emplace_back([this, fd = err[0]] { Reader(fd); });
}

ChildProcess::~ChildProcess() {
  bool running;
  {
    absl::MutexLock lock(&mu_);
    running = !exit_code_.has_value();
  }
  if (running) {
    kill(pid_, SIGKILL);
    Wait(absl::Seconds(30));
  }
  for (auto& t : readers_) t.join();
}

void ChildProcess::Reader(int fd) {
  std::string pending;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      absl::MutexLock lock(&mu_);
      lines_.push_back(pending.substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  if (!pending.empty()) lines_.push_back(pending);
  --open_streams_;
}

std::map<std::string, std::string> ChildProcess::WaitReady(absl::Duration timeout) {
  std::map<std::string, std::string> kv;
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& l : lines_) {
      if (absl::StartsWith(l, "READY ")) return true;
    }
    return open_streams_ == 0;
  };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  for (const auto& l : lines_) {
    if (!absl::StartsWith(l, "READY ")) continue;
    for (absl::string_view part : absl::StrSplit(l, ' ')) {
      size_t eq = part.find('=');
      if (eq != absl::string_view::npos) {
        kv[std::string(part.substr(0, eq))] = std::string(part.substr(eq + 1));
      }
    }
  }
  return kv;
}

bool ChildProcess::WaitForOutput(const std::string& needle, absl::Duration timeout) {
  auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const auto& l : lines_) {
      if (absl::StrContains(l, needle)) return true;
    }
    return open_streams_ == 0;
  };
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
  for (const auto& l : lines_) {
    if (absl::StrContains(l, needle)) return true;
  }
  return false;
}

void ChildProcess::Signal(int sig) { kill(pid_, sig); }

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (exit_code_) return exit_code_;
  }
  // The child closes its pipes when it exits; then reap it without blocking forever.
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      absl::MutexLock lock(&mu_);
      exit_code_ = code;
      // What it printed last may still sit in the pipes: let the readers
      // drain them so Output() is complete once Wait() returns.
      auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_streams_ == 0; };
      mu_.AwaitWithTimeout(absl::Condition(&drained), absl::Seconds(10));
      return code;
    }
    if (absl::Now() > deadline) return std::nullopt;
    // Wake when the child closes its output (usually its exit), else poll slowly.
    absl::MutexLock lock(&mu_);
    auto closed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_streams_ == 0; };
    mu_.AwaitWithTimeout(absl::Condition(&closed), absl::Milliseconds(20));
  }
}

std::string ChildProcess::Output() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& l : lines_) {
    out += l;
    out += '\n';
  }
  return out;
}

std::string Dialable(const std::string& address) {
  absl::string_view a = address;
  if (absl::ConsumePrefix(&a, "0.0.0.0:")) return absl::StrCat("127.0.0.1:", a);
  if (absl::ConsumePrefix(&a, "[::]:")) return absl::StrCat("[::1]:", a);
  return address;
}

}  // namespace bridge::testing
