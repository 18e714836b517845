// Makes pthread_mutex_clocklock visible to ThreadSanitizer. Linked only into
// --config=tsan builds; see BUILD.
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>
#include <time.h>

namespace {

using ClockLock = int (*)(pthread_mutex_t*, clockid_t, const timespec*);

ClockLock real_clocklock() {
  static const ClockLock real = reinterpret_cast<ClockLock>(
      ::dlsym(RTLD_NEXT, "pthread_mutex_clocklock"));
  return real;
}

}  // namespace

// Interposes on glibc's pthread_mutex_clocklock (TSan has no interceptor for
// it) and tells TSan about the lock, as its own timedlock interceptor does.
extern "C" int pthread_mutex_clocklock(pthread_mutex_t* mutex, clockid_t clock,
                                       const timespec* abstime) {
  const ClockLock real = real_clocklock();
  if (real == nullptr) return ENOSYS;
  __tsan_mutex_pre_lock(mutex, __tsan_mutex_try_lock);
  const int result = real(mutex, clock, abstime);
  // EOWNERDEAD: acquired from a holder that died (robust mutex).
  const bool locked = result == 0 || result == EOWNERDEAD;
  __tsan_mutex_post_lock(
      mutex,
      __tsan_mutex_try_lock | (locked ? 0u : __tsan_mutex_try_lock_failed), 0);
  return result;
}
