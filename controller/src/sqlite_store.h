// The embedded SessionStore: SQLite in WAL mode. Commits from many callers
// are batched by one writer thread into a single SQLite transaction (group
// commit), so a burst of webhooks pays one fsync, not one each, while every
// caller still returns only after its own data is on disk.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controller/session_store.h"

namespace bridge::controller {

absl::StatusOr<std::unique_ptr<SessionStore>> OpenSqliteStore(const std::string& path);

}  // namespace bridge::controller
