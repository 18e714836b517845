// Waiting across processes: the wait policy, deadlines, and a futex-based
// event for shared memory.
//
// On a virtual machine a blocking hand-off to a process on another core costs
// tens of microseconds (a futex wake-up and a reschedule), a spinning one well
// under one. mp::WaitPolicy says how long a blocked call spins (checking its
// condition, with the CPU's pause hint) before it sleeps in the kernel; the
// spin is bounded, so no wait ever burns a core for longer than that.
//
// Spinning pays only while the two sides run on different CPUs. Linux tends
// to wake a process that slept on a futex on the CPU of its waker, and a
// spinning pair that ends up sharing one CPU hands off at scheduler speed
// (a sched_yield every 64 checks keeps it moving, at several microseconds a
// message). Programs that depend on spin latency pin the two
// processes to different CPUs, as //bench:ipc does.
#ifndef MPBENCH_LIB_WAIT_H_
#define MPBENCH_LIB_WAIT_H_

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace mp {

struct WaitPolicy {
  // How long to spin before blocking; zero blocks at once.
  std::chrono::nanoseconds spin{std::chrono::microseconds(50)};
  // While blocked, how often to wake up and check that the processes that
  // could end the wait are still alive (see the dead-peer rules of each
  // primitive). Costs nothing while the wait is short.
  std::chrono::nanoseconds liveness_check{std::chrono::milliseconds(100)};

  static WaitPolicy block_only() {
    return WaitPolicy{std::chrono::nanoseconds(0)};
  }
  static WaitPolicy spin_then_block(std::chrono::nanoseconds spin) {
    return WaitPolicy{spin};
  }
};

namespace internal {

using Clock = std::chrono::steady_clock;

// An optional point in time; none means "wait forever".
class Deadline {
 public:
  Deadline() = default;  // never
  static Deadline after(std::chrono::nanoseconds timeout) {
    Deadline d;
    d.at_ = Clock::now() + timeout;
    return d;
  }
  // Passed already, without reading the clock (the try_ forms, on every
  // poll of a busy ring).
  static Deadline now() {
    Deadline d;
    d.at_ = Clock::time_point::min();
    return d;
  }
  bool never() const { return !at_; }
  bool passed() const {
    return at_ && (*at_ == Clock::time_point::min() || Clock::now() >= *at_);
  }
  // Time left, at most `cap`; zero once passed.
  std::chrono::nanoseconds remaining(std::chrono::nanoseconds cap) const;
  std::optional<Clock::time_point> at() const { return at_; }

 private:
  std::optional<Clock::time_point> at_;
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// FUTEX_WAIT on a word in shared memory (not FUTEX_PRIVATE: other processes
// wake it). Returns when woken, when the word is not `expected`, on a signal,
// or after `timeout` (none: no limit). Never throws.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout);
// Wakes up to `count` waiters. Never throws.
void futex_wake(std::atomic<uint32_t>* word, int count);

// An event count in shared memory: waiters sleep until notify(); notify() is
// a single atomic increment when nobody sleeps. Lives in MAP_SHARED memory;
// zero-initialised is a valid state.
struct alignas(64) SharedEvent {
  std::atomic<uint32_t> sequence{0};
  std::atomic<uint32_t> sleepers{0};

  void notify_all() {
    sequence.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) != 0)
      futex_wake(&sequence, INT32_MAX);
  }
};

// Asymmetric fences (membarrier(2), MEMBARRIER_CMD_GLOBAL_EXPEDITED): a side
// that publishes often (a ring's cursor) and must then see whether its peer
// sleeps can pair a plain store and a compiler-only fence with a process-wide
// fence on the rarely taken sleeping side, instead of paying a locked
// instruction per publication. Both sides must be processes that called
// enable_light_fences(); the heavy side calls heavy_fence() between
// announcing that it sleeps and checking its condition again.
//
// Registers this process (once; again in a forked child) for the heavy
// fences of others; returns whether its publications may use light fences.
// False when the kernel or a sandbox refuses membarrier: then publishers use
// seq_cst read-modify-writes. Never throws.
bool enable_light_fences();
// A full memory barrier on every CPU that runs a registered process, or a
// seq_cst fence where membarrier is unavailable. Costs a system call (and
// interprocessor interrupts): for the slow path only. Never throws.
void heavy_fence();

// Spins up to policy.spin, and never past `deadline`, until `ready()`: the
// CPU's pause hint between checks, and every 64 checks (a few microseconds)
// a sched_yield(), so that a spinner hands its CPU to a runnable process
// that shares it (more processes than cores: a pool on a small machine)
// instead of burning its time slice. Every 64 rather than 256 (Intel Xeon
// VM, 2 workers on 2 cores, map_into of 10,000 doubles): 26.8 -> 19.9 us at
// chunksize 4,096, 34.0 -> 25.7 us at 64, 41.8 -> 33.5 us at 8; the spinning
// round trips of //bench:ipc moved within their noise. A deadline already
// passed (the try_ forms) spins not at all. Returns whether `ready()` became
// true.
template <typename Ready>
bool spin_until_ready(const WaitPolicy& policy, const Deadline& deadline,
                      Ready&& ready) {
  if (policy.spin.count() <= 0) return false;
  const auto now = Clock::now();
  auto until = now + policy.spin;
  if (const auto at = deadline.at()) until = std::min(until, *at);
  if (until <= now) return false;
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    if (ready()) return true;
    if ((i & 63) == 0) {
      if (Clock::now() >= until) return false;
      sched_yield();
    }
  }
}

// How a blocking call ended, for the primitives' internals: done, timed out,
// or (gets) the stream ended.
enum class Outcome { kDone, kTimedOut, kEndOfStream };

enum class WaitResult { kReady, kTimedOut, kCheckPeers };

// One slice of a blocking wait, with any way to block: returns kReady when
// `ready()` is true, at once or after spinning for policy.spin, or when
// `block(slice)` (which blocks at most `slice` and returns whether the wait
// is over) says so; kTimedOut once `deadline` passes; otherwise kCheckPeers
// after blocking policy.liveness_check, so that the caller can check whether
// the processes it waits for still live and call again (see
// wait_while_peers_live in lib/peers.h). `ready` is checked often: it must
// be cheap, and may have a side effect only when it returns true (taking a
// semaphore's token).
template <typename Ready, typename Block>
WaitResult wait_slice(const WaitPolicy& policy, const Deadline& deadline,
                      Ready&& ready, Block&& block) {
  if (ready()) return WaitResult::kReady;
  if (spin_until_ready(policy, deadline, ready)) return WaitResult::kReady;
  if (deadline.passed()) return WaitResult::kTimedOut;
  if (block(deadline.remaining(policy.liveness_check)))
    return WaitResult::kReady;
  return deadline.passed() ? WaitResult::kTimedOut : WaitResult::kCheckPeers;
}

// Sleeps on `event` until `ready()` or until `slice` has passed; returns
// whether `ready()` became true. `ready` must be side-effect free.
// `announced()` runs after each announcement in event.sleepers, before
// `ready()` is checked again (heavy_fence, for wakers that use light fences).
template <typename Ready, typename Announced>
bool sleep_until_ready(SharedEvent& event, std::chrono::nanoseconds slice,
                       Ready&& ready, Announced&& announced) {
  const auto end = Clock::now() + slice;
  for (;;) {
    const uint32_t seen = event.sequence.load(std::memory_order_seq_cst);
    event.sleepers.fetch_add(1, std::memory_order_seq_cst);
    announced();
    if (ready()) {
      event.sleepers.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    const auto now = Clock::now();
    if (now >= end) {
      event.sleepers.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    futex_wait(&event.sequence, seen,
               std::chrono::duration_cast<std::chrono::nanoseconds>(end - now));
    event.sleepers.fetch_sub(1, std::memory_order_relaxed);
    if (ready()) return true;
  }
}

template <typename Ready>
bool sleep_until_ready(SharedEvent& event, std::chrono::nanoseconds slice,
                       Ready&& ready) {
  return sleep_until_ready(event, slice, ready, [] {});
}

// wait_slice on a SharedEvent: spin, then sleep on `event`, calling
// `announced()` after each announcement (see sleep_until_ready).
template <typename Ready, typename Announced>
WaitResult wait_for(SharedEvent& event, const WaitPolicy& policy,
                    const Deadline& deadline, Ready&& ready,
                    Announced&& announced) {
  return wait_slice(policy, deadline, ready,
                    [&](std::chrono::nanoseconds slice) {
                      return sleep_until_ready(event, slice, ready, announced);
                    });
}

template <typename Ready>
WaitResult wait_for(SharedEvent& event, const WaitPolicy& policy,
                    const Deadline& deadline, Ready&& ready) {
  return wait_for(event, policy, deadline, ready, [] {});
}

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_WAIT_H_
