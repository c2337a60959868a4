#include "controller/session_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "etcd_store.h"
#include "sqlite_store.h"

namespace bridge::controller {

std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) != 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return "";
}

absl::StatusOr<int64_t> SessionStore::Commit(Txn txn) {
  absl::Mutex mu;
  bool done = false;
  absl::StatusOr<int64_t> result;
  CommitAsync(std::move(txn), [&](absl::StatusOr<int64_t> r) {
    absl::MutexLock lock(&mu);
    result = std::move(r);
    done = true;
  });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  return result;
}

absl::StatusOr<std::unique_ptr<SessionStore>> OpenSessionStore(const std::string& spec) {
  absl::string_view s = spec;
  if (absl::ConsumePrefix(&s, "sqlite:")) {
    if (s.empty()) return absl::InvalidArgumentError("--store=sqlite: needs a path");
    return OpenSqliteStore(std::string(s));
  }
  if (absl::ConsumePrefix(&s, "etcd:")) {
    auto config = ParseEtcdSpec(s);
    if (!config.ok()) return config.status();
    auto channel = NewEtcdChannel(*config);
    if (!channel.ok()) return channel.status();
    auto store = EtcdStore::Open(*config, *channel);
    if (!store.ok()) return store.status();
    return std::unique_ptr<SessionStore>(std::move(*store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--store='", spec, "': expected sqlite:PATH or etcd:HOST:PORT[,...]"));
}

}  // namespace bridge::controller
