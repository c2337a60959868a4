#include "sqlite_store.h"

#include <sqlite3.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace bridge::controller {
namespace {

int64_t Micros(absl::Time t) {
  return t == absl::InfiniteFuture() ? INT64_MAX : absl::ToUnixMicros(t);
}

// Statements prepared once per connection: parsing SQL was a third of the
// store's CPU per webhook when every statement was prepared on each use.
// Used under the store's db_mu_ only.
class StmtCache {
 public:
  ~StmtCache() { Clear(); }
  void Attach(sqlite3* db) { db_ = db; }
  sqlite3_stmt* Get(const char* sql) {
    auto [it, added] = stmts_.try_emplace(sql, nullptr);
    if (added && sqlite3_prepare_v2(db_, sql, -1, &it->second, nullptr) != SQLITE_OK) {
      // Not cached: the next use prepares again (and the step reports misuse).
      sqlite3_stmt* failed = it->second;
      stmts_.erase(it);
      return failed;
    }
    return it->second;
  }
  void Clear() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    stmts_.clear();
  }

 private:
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> stmts_;
};

// A cached prepared statement, reset for reuse on scope exit.
class Stmt {
 public:
  Stmt(StmtCache& cache, const char* sql) : s_(cache.Get(sql)) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt& Text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  int Step() { return sqlite3_step(s_); }
  std::string ColumnText(int i) {
    const void* p = sqlite3_column_blob(s_, i);
    return std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s_, i)));
  }
  int64_t ColumnInt(int i) { return sqlite3_column_int64(s_, i); }

 private:
  sqlite3_stmt* s_ = nullptr;
};

class SqliteStore final : public SessionStore {
 public:
  ~SqliteStore() override {
    {
      absl::MutexLock lock(&queue_mu_);
      stopping_ = true;
    }
    if (writer_.joinable()) writer_.join();
    cache_.Clear();
    sqlite3_close(db_);
  }

  absl::Status Open(const std::string& path) {
    std::error_code ec;
    auto dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                                 SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
      return absl::UnavailableError(absl::StrCat("sqlite: cannot open ", path, ": ",
                                                 db_ ? sqlite3_errmsg(db_) : "out of memory"));
    }
    sqlite3_busy_timeout(db_, 5000);
    cache_.Attach(db_);
    // WAL with synchronous=FULL: a commit is on disk when it returns.
    for (const char* sql :
         {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
          "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
          " mod_revision INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
          "CREATE INDEX IF NOT EXISTS kv_expiry ON kv(expires_at)",
          "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"}) {
      if (auto s = Exec(sql); !s.ok()) return s;
    }
    Stmt rev(cache_, "SELECT value FROM meta WHERE name='revision'");
    if (rev.Step() == SQLITE_ROW) revision_ = rev.ColumnInt(0);
    writer_ = std::thread([this] { WriterLoop(); });
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<KeyValue>> Get(const std::string& key) override {
    absl::MutexLock lock(&db_mu_);
    Stmt q(cache_, "SELECT value, mod_revision FROM kv WHERE key=? AND expires_at>?");
    q.Text(1, key).Int(2, Micros(absl::Now()));
    int rc = q.Step();
    if (rc == SQLITE_DONE) return std::nullopt;
    if (rc != SQLITE_ROW) return Error("get");
    return KeyValue{key, q.ColumnText(0), q.ColumnInt(1)};
  }

  absl::StatusOr<std::vector<KeyValue>> Range(const std::string& prefix, size_t limit) override {
    absl::MutexLock lock(&db_mu_);
    const std::string end = PrefixEnd(prefix);
    Stmt q(cache_, end.empty()
                    ? "SELECT key, value, mod_revision FROM kv WHERE key>=? AND expires_at>? "
                      "ORDER BY key LIMIT ?"
                    : "SELECT key, value, mod_revision FROM kv WHERE key>=? AND expires_at>? "
                      "AND key<? ORDER BY key LIMIT ?");
    q.Text(1, prefix).Int(2, Micros(absl::Now()));
    if (end.empty()) q.Int(3, limit == 0 ? -1 : static_cast<int64_t>(limit));
    else q.Text(3, end).Int(4, limit == 0 ? -1 : static_cast<int64_t>(limit));
    std::vector<KeyValue> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      out.push_back(KeyValue{q.ColumnText(0), q.ColumnText(1), q.ColumnInt(2)});
    }
    if (rc != SQLITE_DONE) return Error("range");
    return out;
  }

  void CommitAsync(Txn txn, std::function<void(absl::StatusOr<int64_t>)> done) override {
    {
      absl::MutexLock lock(&queue_mu_);
      if (!stopping_) {
        queue_.push_back(Pending{std::move(txn), std::move(done)});
        return;
      }
    }
    done(absl::UnavailableError("sqlite: store is closing"));
  }

  absl::StatusOr<int64_t> ExpireNow() override {
    absl::MutexLock lock(&db_mu_);
    Stmt d(cache_, "DELETE FROM kv WHERE expires_at<=?");
    d.Int(1, Micros(absl::Now()));
    if (d.Step() != SQLITE_DONE) return Error("expire");
    return sqlite3_changes(db_);
  }

  int64_t revision() const override { return revision_.load(); }

 private:
  struct Pending {
    Txn txn;
    std::function<void(absl::StatusOr<int64_t>)> done;
    absl::StatusOr<int64_t> result = absl::InternalError("not run");
  };

  absl::Status Error(const char* what) {
    return absl::InternalError(absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db_)));
  }
  // One cached statement with no result rows (transaction control).
  absl::Status Run(const char* sql) {
    Stmt st(cache_, sql);
    int rc = st.Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite: ", sqlite3_errmsg(db_), " in ", sql));
  }
  absl::Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      absl::Status s = absl::InternalError(absl::StrCat("sqlite: ", err ? err : "?", " in ", sql));
      sqlite3_free(err);
      return s;
    }
    return absl::OkStatus();
  }

  // Group commit: everything queued while the previous batch was syncing goes
  // into the next SQLite transaction together.
  void WriterLoop() {
    for (;;) {
      std::vector<Pending> batch;
      {
        absl::MutexLock lock(&queue_mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
          return stopping_ || !queue_.empty();
        };
        queue_mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // stopping, nothing left
        batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
        queue_.clear();
      }
      RunBatch(batch);
      for (Pending& p : batch) p.done(std::move(p.result));
    }
  }

  void RunBatch(std::vector<Pending>& batch) {
    absl::MutexLock lock(&db_mu_);
    const int64_t start_rev = revision_;
    int64_t rev = start_rev;
    absl::Status s = Run("BEGIN IMMEDIATE");
    for (Pending& p : batch) {
      if (!s.ok()) break;
      p.result = Apply(p.txn, rev + 1);
      if (p.result.ok()) rev = *p.result;
    }
    if (s.ok() && rev != start_rev) {
      Stmt m(cache_, "INSERT INTO meta(name, value) VALUES('revision', ?) "
                  "ON CONFLICT(name) DO UPDATE SET value=excluded.value");
      m.Int(1, rev);
      if (m.Step() != SQLITE_DONE) s = Error("revision");
    }
    if (s.ok()) s = Run("COMMIT");
    if (!s.ok()) {
      (void)Run("ROLLBACK");
      for (Pending& p : batch) p.result = s;  // nothing of the batch is durable
      return;
    }
    revision_ = rev;
  }

  // One transaction inside the batch, isolated by a savepoint so a failed
  // compare leaves the others untouched.
  absl::StatusOr<int64_t> Apply(const Txn& txn, int64_t rev) {
    const int64_t now = Micros(absl::Now());
    for (const auto& c : txn.compares) {
      Stmt q(cache_, "SELECT mod_revision FROM kv WHERE key=? AND expires_at>?");
      q.Text(1, c.key).Int(2, now);
      int64_t have = q.Step() == SQLITE_ROW ? q.ColumnInt(0) : 0;
      if (have != c.mod_revision) {
        return absl::FailedPreconditionError(
            absl::StrCat("compare failed on ", c.key, ": revision ", have, ", expected ",
                         c.mod_revision));
      }
    }
    if (auto s = Run("SAVEPOINT txn"); !s.ok()) return s;
    for (const auto& op : txn.ops) {
      if (auto s = ApplyOp(op, rev); !s.ok()) {
        (void)Run("ROLLBACK TO txn");
        (void)Run("RELEASE txn");
        return s;
      }
    }
    if (auto s = Run("RELEASE txn"); !s.ok()) return s;
    return rev;
  }

  absl::Status ApplyOp(const Txn::Op& op, int64_t rev) {
    if (op.kind == Txn::Op::kPut) {
      Stmt p(cache_, "INSERT INTO kv(key, value, mod_revision, expires_at) VALUES(?,?,?,?) "
                  "ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                  "mod_revision=excluded.mod_revision, expires_at=excluded.expires_at");
      p.Text(1, op.key).Blob(2, op.value).Int(3, rev).Int(4, Micros(op.expires_at));
      return p.Step() == SQLITE_DONE ? absl::OkStatus() : Error("put");
    }
    if (op.kind == Txn::Op::kDelete) {
      Stmt d(cache_, "DELETE FROM kv WHERE key=?");
      d.Text(1, op.key);
      return d.Step() == SQLITE_DONE ? absl::OkStatus() : Error("delete");
    }
    const std::string end = PrefixEnd(op.key);
    Stmt d(cache_, end.empty() ? "DELETE FROM kv WHERE key>=?" : "DELETE FROM kv WHERE key>=? AND key<?");
    d.Text(1, op.key);
    if (!end.empty()) d.Text(2, end);
    return d.Step() == SQLITE_DONE ? absl::OkStatus() : Error("delete prefix");
  }

  sqlite3* db_ = nullptr;
  absl::Mutex db_mu_;  // the connection: one statement at a time
  StmtCache cache_;    // under db_mu_ (and Open, before any other thread)
  std::atomic<int64_t> revision_{0};
  absl::Mutex queue_mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread writer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> OpenSqliteStore(const std::string& path) {
  auto store = std::make_unique<SqliteStore>();
  if (auto s = store->Open(path); !s.ok()) return s;
  return store;
}

}  // namespace bridge::controller
