#include "media_loop.h"

#include <glib.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>

namespace bridge::media_worker {
namespace {

using Task = std::function<void()>;

gboolean RunOnce(gpointer data) {
  (*static_cast<Task*>(data))();
  return G_SOURCE_REMOVE;
}

void DeleteTask(gpointer data) { delete static_cast<Task*>(data); }

}  // namespace

MediaLoop::MediaLoop(const std::string& name)
    : context_(g_main_context_new()), loop_(g_main_loop_new(context_, FALSE)) {
  thread_ = std::thread([this, name] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    g_main_context_push_thread_default(context_);
    g_main_loop_run(loop_);
    g_main_context_pop_thread_default(context_);
  });
}

MediaLoop::~MediaLoop() {
  Post([loop = loop_] { g_main_loop_quit(loop); });
  thread_.join();
  g_main_loop_unref(loop_);
  g_main_context_unref(context_);  // drops sources still attached
}

void MediaLoop::Post(std::function<void()> task) {
  GSource* source = g_idle_source_new();
  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(source, RunOnce, new Task(std::move(task)), DeleteTask);
  g_source_attach(source, context_);
  g_source_unref(source);
}

unsigned MediaLoop::After(absl::Duration delay, std::function<void()> task) {
  GSource* source = g_timeout_source_new(static_cast<guint>(absl::ToInt64Milliseconds(delay)));
  g_source_set_callback(source, RunOnce, new Task(std::move(task)), DeleteTask);
  const unsigned id = g_source_attach(source, context_);
  g_source_unref(source);
  return id;
}

void MediaLoop::Cancel(unsigned id) {
  if (id == 0) return;
  if (GSource* s = g_main_context_find_source_by_id(context_, id)) g_source_destroy(s);
}

unsigned MediaLoop::AddTicker(std::function<void(int64_t now_us)> fn) {
  const unsigned id = next_ticker_++;
  tickers_[id] = std::make_shared<std::function<void(int64_t)>>(std::move(fn));
  if (tick_source_ == 0) {
    GSource* source = g_timeout_source_new(static_cast<guint>(absl::ToInt64Milliseconds(kTick)));
    g_source_set_callback(
        source,
        [](gpointer self) -> gboolean {
          static_cast<MediaLoop*>(self)->AssertInLoop();
          static_cast<MediaLoop*>(self)->Tick();
          return G_SOURCE_CONTINUE;
        },
        this, nullptr);
    tick_source_ = g_source_attach(source, context_);
    g_source_unref(source);
  }
  return id;
}

void MediaLoop::RemoveTicker(unsigned id) {
  tickers_.erase(id);
  if (tickers_.empty() && tick_source_ != 0) {
    Cancel(tick_source_);
    tick_source_ = 0;
  }
}

void MediaLoop::Tick() {
  const int64_t now = g_get_monotonic_time();
  // By id, looked up each time: a ticker may remove itself or others.
  for (unsigned id = 0;;) {
    auto it = tickers_.upper_bound(id);
    if (it == tickers_.end()) break;
    id = it->first;
    std::shared_ptr<std::function<void(int64_t)>> fn = it->second;
    (*fn)(now);
  }
}

bool MediaLoop::InLoop() const { return g_main_context_is_owner(context_); }

// Always on: code confined to a loop running elsewhere is a data race on
// a call's media, and the check is one uncontended lock.
void MediaLoop::AssertInLoop() const {
  if (InLoop()) return;
  std::fprintf(stderr, "MediaLoop: loop-confined code ran off its media thread\n");
  std::abort();
}

}  // namespace bridge::media_worker
