// ThreadSanitizer builds only (BRIDGE_SANITIZE=thread): teaches TSan about
// absl::Mutex, CondVar and Notification.
//
// Debian's abseil is not built with TSan, so its lock and unlock calls are
// invisible to TSan: every field guarded by an absl::Mutex would be reported
// as a race. The definitions below interpose on the library's (executables
// are linked with -rdynamic, so calls made inside libabsl and gRPC land here
// too), tell TSan what each call does with the mutex annotations of
// sanitizer/tsan_interface.h, and forward to the real function, found with
// dlsym(RTLD_NEXT). TSan ignores memory accesses between a pre_ and its post_
// annotation, which covers the Conditions absl evaluates inside the calls.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

#define BRIDGE_STR2(x) #x
#define BRIDGE_STR(x) BRIDGE_STR2(x)

// Itanium mangling of absl::<inline namespace>::`rest` ("5Mutex4LockEv").
std::string Mangled(const char* rest, bool const_member = false) {
  const char* ns = BRIDGE_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return std::string(const_member ? "_ZNK4absl" : "_ZN4absl") + std::to_string(std::strlen(ns)) +
         ns + rest;
}

template <typename Fn>
Fn Real(const std::string& mangled) {
  void* f = dlsym(RTLD_NEXT, mangled.c_str());
  if (f == nullptr) {
    std::fprintf(stderr, "absl_tsan_shim: %s not found\n", mangled.c_str());
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

// libabsl calls itself through the PLT too (AwaitWithTimeout calls
// AwaitWithDeadline, ...): only the outermost call is announced to TSan.
thread_local int depth = 0;
struct Outermost {
  Outermost() : yes(depth++ == 0) {}
  ~Outermost() { --depth; }
  const bool yes;
};

constexpr unsigned kWrite = 0;
constexpr unsigned kRead = __tsan_mutex_read_lock;

void Acquire(void* mu, unsigned flags) {
  __tsan_mutex_pre_lock(mu, flags);
  __tsan_mutex_post_lock(mu, flags, 0);
}

// Await and CondVar::Wait release the lock, wait, and hold it again. The
// release is announced first; the call runs with accesses ignored.
template <typename Call>
auto ReleasedDuring(void* mu, unsigned flags, Call call) {
  Outermost outer;
  if (!outer.yes) return call();
  __tsan_mutex_pre_unlock(mu, flags);
  auto r = call();
  __tsan_mutex_post_unlock(mu, flags);
  Acquire(mu, flags);
  return r;
}

template <typename Call>
auto Locking(void* mu, unsigned flags, Call call) {
  Outermost outer;
  if (!outer.yes) return call();
  __tsan_mutex_pre_lock(mu, flags);
  auto r = call();
  __tsan_mutex_post_lock(mu, flags, 0);
  return r;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Real<void (*)(Mutex*)>(Mangled("5Mutex4LockEv"));
  Locking(this, kWrite, [&] { real(this); return 0; });
}
void Mutex::ReaderLock() {
  static const auto real = Real<void (*)(Mutex*)>(Mangled("5Mutex10ReaderLockEv"));
  Locking(this, kRead, [&] { real(this); return 0; });
}
bool Mutex::TryLock() {
  static const auto real = Real<bool (*)(Mutex*)>(Mangled("5Mutex7TryLockEv"));
  Outermost outer;
  if (!outer.yes) return real(this);
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_try_lock | (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
  return ok;
}
bool Mutex::ReaderTryLock() {
  static const auto real = Real<bool (*)(Mutex*)>(Mangled("5Mutex13ReaderTryLockEv"));
  Outermost outer;
  if (!outer.yes) return real(this);
  const unsigned f = kRead | __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(this, f);
  const bool ok = real(this);
  __tsan_mutex_post_lock(this, f | (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
  return ok;
}
void Mutex::Unlock() {
  static const auto real = Real<void (*)(Mutex*)>(Mangled("5Mutex6UnlockEv"));
  Outermost outer;
  if (!outer.yes) return real(this);
  __tsan_mutex_pre_unlock(this, kWrite);
  real(this);
  __tsan_mutex_post_unlock(this, kWrite);
}
void Mutex::ReaderUnlock() {
  static const auto real = Real<void (*)(Mutex*)>(Mangled("5Mutex12ReaderUnlockEv"));
  Outermost outer;
  if (!outer.yes) return real(this);
  __tsan_mutex_pre_unlock(this, kRead);
  real(this);
  __tsan_mutex_post_unlock(this, kRead);
}
Mutex::~Mutex() {
  static const auto real = Real<void (*)(Mutex*)>(Mangled("5MutexD2Ev"));
  __tsan_mutex_destroy(this, 0);
  real(this);
}

void Mutex::LockWhen(const Condition& c) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>(Mangled("5Mutex8LockWhenERKNS0_9ConditionE"));
  Locking(this, kWrite, [&] { real(this, c); return 0; });
}
void Mutex::ReaderLockWhen(const Condition& c) {
  static const auto real = Real<void (*)(Mutex*, const Condition&)>(
      Mangled("5Mutex14ReaderLockWhenERKNS0_9ConditionE"));
  Locking(this, kRead, [&] { real(this, c); return 0; });
}
bool Mutex::LockWhenWithTimeout(const Condition& c, absl::Duration d) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      Mangled("5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"));
  return Locking(this, kWrite, [&] { return real(this, c, d); });
}
bool Mutex::LockWhenWithDeadline(const Condition& c, absl::Time t) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      Mangled("5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"));
  return Locking(this, kWrite, [&] { return real(this, c, t); });
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& c, absl::Duration d) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      Mangled("5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE"));
  return Locking(this, kRead, [&] { return real(this, c, d); });
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& c, absl::Time t) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      Mangled("5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE"));
  return Locking(this, kRead, [&] { return real(this, c, t); });
}

// Await*: called with the lock held (writer or reader; absl keeps which).
// TSan is told "write"; a reader lock awaiting is not used in this tree.
void Mutex::Await(const Condition& c) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>(Mangled("5Mutex5AwaitERKNS0_9ConditionE"));
  ReleasedDuring(this, kWrite, [&] { real(this, c); return 0; });
}
bool Mutex::AwaitWithTimeout(const Condition& c, absl::Duration d) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      Mangled("5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE"));
  return ReleasedDuring(this, kWrite, [&] { return real(this, c, d); });
}
bool Mutex::AwaitWithDeadline(const Condition& c, absl::Time t) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      Mangled("5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE"));
  return ReleasedDuring(this, kWrite, [&] { return real(this, c, t); });
}

void CondVar::Wait(Mutex* mu) {
  static const auto real =
      Real<void (*)(CondVar*, Mutex*)>(Mangled("7CondVar4WaitEPNS0_5MutexE"));
  ReleasedDuring(mu, kWrite, [&] { real(this, mu); return 0; });
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration d) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      Mangled("7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE"));
  return ReleasedDuring(mu, kWrite, [&] { return real(this, mu, d); });
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time t) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      Mangled("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE"));
  return ReleasedDuring(mu, kWrite, [&] { return real(this, mu, t); });
}

// Notification: Notify publishes (release on the object); the waits and the
// inline HasBeenNotified() (an acquire load of its flag) receive it.
void Notification::Notify() {
  static const auto real = Real<void (*)(Notification*)>(Mangled("12Notification6NotifyEv"));
  __tsan_release(this);
  __tsan_release(&notified_yet_);
  real(this);
}
void Notification::WaitForNotification() const {
  static const auto real = Real<void (*)(const Notification*)>(
      Mangled("12Notification19WaitForNotificationEv", /*const_member=*/true));
  real(this);
  __tsan_acquire(const_cast<Notification*>(this));
}
bool Notification::WaitForNotificationWithTimeout(absl::Duration d) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      Mangled("12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true));
  const bool r = real(this, d);
  __tsan_acquire(const_cast<Notification*>(this));
  return r;
}
bool Notification::WaitForNotificationWithDeadline(absl::Time t) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Time)>(
      Mangled("12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true));
  const bool r = real(this, t);
  __tsan_acquire(const_cast<Notification*>(this));
  return r;
}

ABSL_NAMESPACE_END
}  // namespace absl
