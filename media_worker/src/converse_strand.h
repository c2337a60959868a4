// A serial work queue on a shared ThreadPool: one stream's tasks run in the
// order posted, one at a time, without a thread of their own. Shared-owned
// so a drain in progress outlives the stream that posted into it.
#pragma once

#include <deque>
#include <functional>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"

namespace bridge::media_worker {

class Strand : public std::enable_shared_from_this<Strand> {
 public:
  static std::shared_ptr<Strand> Create(ThreadPool* pool) {
    return std::shared_ptr<Strand>(new Strand(pool));
  }

  void Post(std::function<void()> task) {
    {
      absl::MutexLock lock(&mu_);
      tasks_.push_back(std::move(task));
      if (running_) return;
      running_ = true;
    }
    pool_->Submit([self = shared_from_this()] { self->Drain(); });
  }

 private:
  explicit Strand(ThreadPool* pool) : pool_(pool) {}

  // A few tasks per turn, then back in the pool's line: one busy stream must
  // not starve the others.
  void Drain() {
    for (int n = 0; n < kBatch; ++n) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        if (tasks_.empty()) {
          running_ = false;
          return;
        }
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
    pool_->Submit([self = shared_from_this()] { self->Drain(); });
  }

  static constexpr int kBatch = 16;
  ThreadPool* const pool_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace bridge::media_worker
