#include "lib/wait.h"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

namespace mp::internal {

std::chrono::nanoseconds Deadline::remaining(
    std::chrono::nanoseconds cap) const {
  if (!at_) return cap;
  if (*at_ == Clock::time_point::min()) return std::chrono::nanoseconds(0);
  const auto left = *at_ - Clock::now();
  if (left <= std::chrono::nanoseconds(0)) return std::chrono::nanoseconds(0);
  return std::min(cap,
                  std::chrono::duration_cast<std::chrono::nanoseconds>(left));
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout) {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout) {
    ts.tv_sec = static_cast<time_t>(timeout->count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(timeout->count() % 1'000'000'000);
    tsp = &ts;
  }
  // EAGAIN (the word changed), EINTR and ETIMEDOUT all mean "look again".
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected,
            tsp, nullptr, 0);
}

namespace {

// Whether membarrier(GLOBAL_EXPEDITED) is available: -1 unknown, 0, 1.
std::atomic<int> g_heavy_fence{-1};
// The pid that registered for light fences (0: none yet); a forked child
// sees its parent's pid here and registers again.
std::atomic<pid_t> g_registered_pid{0};

bool heavy_fence_available() {
  int state = g_heavy_fence.load(std::memory_order_relaxed);
  if (state < 0) {
    const long supported =
        ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    state = supported >= 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
                    (supported & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
                ? 1
                : 0;
    g_heavy_fence.store(state, std::memory_order_relaxed);
  }
  return state == 1;
}

}  // namespace

bool enable_light_fences() {
  if (!heavy_fence_available()) return false;
  const pid_t self = ::getpid();
  if (g_registered_pid.load(std::memory_order_acquire) == self) return true;
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0,
                0) != 0) {
    return false;
  }
  g_registered_pid.store(self, std::memory_order_release);
  return true;
}

void heavy_fence() {
  // Without membarrier no process registers, every publisher uses seq_cst
  // read-modify-writes, and the sleeper's seq_cst announcement and check
  // pair with those: nothing more is needed here.
  if (heavy_fence_available())
    ::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, count,
            nullptr, nullptr, 0);
}

}  // namespace mp::internal
