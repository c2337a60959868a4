// A media thread: one GLib main context that runs its calls' ICE agents
// (libnice delivers their packets and signals there), DTLS timers and one
// shared media tick. A worker runs one per core (call_desk.h), never one
// per call; a call's media state is touched only on its loop's thread, so
// it needs no locks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

typedef struct _GMainContext GMainContext;
typedef struct _GMainLoop GMainLoop;

namespace bridge::media_worker {

// "On a media thread", as a capability for clang's -Wthread-safety, so that
// the confinement above is checked, not only written down: loop-confined
// state is ABSL_GUARDED_BY(media_thread) and the functions that touch it
// ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread). Nothing is ever locked: code
// that starts running on a loop (a posted task, a timer, a ticker, a libnice
// callback) says so first with MediaLoop::AssertInLoop, which checks it at
// run time too. One capability stands for every loop: the analysis proves
// "on a media thread", the run-time check "on this object's own loop".
class ABSL_LOCKABLE MediaThread {};
inline MediaThread media_thread;

class MediaLoop {
 public:
  // Starts the thread; `name` is its name in top/gdb ("media").
  explicit MediaLoop(const std::string& name);
  // Stops the loop and joins the thread; what was posted and not yet run is
  // dropped (destroyed on this thread).
  ~MediaLoop();
  MediaLoop(const MediaLoop&) = delete;
  MediaLoop& operator=(const MediaLoop&) = delete;

  // Runs `task` on the media thread, in posting order. Any thread.
  void Post(std::function<void()> task);
  // Runs `task` on the media thread after `delay`; returns an id for Cancel.
  // Posted from the media thread only.
  unsigned After(absl::Duration delay, std::function<void()> task);
  void Cancel(unsigned id);
  // Calls `fn(now_us)` (g_get_monotonic_time) every kTick on the media
  // thread until removed: one timer for all of the loop's calls, so a
  // hundred calls pacing 20 ms packets cost 200 wakeups a second, not 5000.
  // Media thread only; a ticker may remove itself (or another) from `fn`.
  static constexpr absl::Duration kTick = absl::Milliseconds(5);
  unsigned AddTicker(std::function<void(int64_t now_us)> fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void RemoveTicker(unsigned id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // True on the media thread.
  bool InLoop() const;
  // Tells the analysis this runs on a media thread (see MediaThread), and
  // aborts when it is not this loop's.
  void AssertInLoop() const ABSL_ASSERT_EXCLUSIVE_LOCK(media_thread);

  GMainContext* context() const { return context_; }

 private:
  void Tick() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);

  GMainContext* context_;
  GMainLoop* loop_;
  // Media thread only; shared so a ticker that removes itself outlives its call.
  std::map<unsigned, std::shared_ptr<std::function<void(int64_t)>>> tickers_
      ABSL_GUARDED_BY(media_thread);
  unsigned next_ticker_ ABSL_GUARDED_BY(media_thread) = 1;
  unsigned tick_source_ ABSL_GUARDED_BY(media_thread) = 0;
  std::thread thread_;
};

}  // namespace bridge::media_worker
