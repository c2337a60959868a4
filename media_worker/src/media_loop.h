// The worker's media thread: one GLib main context that runs every call's
// ICE agent (libnice delivers its packets and signals there), DTLS timers
// and 20 ms media ticks. One thread for all calls, never one per call; a
// call's media state is touched only on this thread, so it needs no locks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/time.h"

typedef struct _GMainContext GMainContext;
typedef struct _GMainLoop GMainLoop;

namespace bridge::media_worker {

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
  // True on the media thread.
  bool InLoop() const;

  GMainContext* context() const { return context_; }

 private:
  GMainContext* context_;
  GMainLoop* loop_;
  std::thread thread_;
};

}  // namespace bridge::media_worker
