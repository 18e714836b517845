// Internal: who uses a shared queue or channel, so that a blocked waiter can
// tell "slow" from "nobody left who could ever wake me".
//
// Each process registers the role it plays the first time it plays it
// (producer on its first put, consumer on its first get). A waiter that has
// slept for a while asks anyone_alive(role) about the other side: a
// registered process of that role that is still alive (not exited, not a
// zombie), or the creator of the object (when it is not the caller), which
// may still take either role. Only if processes did take the role and all
// of them are gone does the wait fail with mp::PeerError instead of hanging
// forever (before anyone has, one may still be starting: timeouts bound
// that case). Lives in MAP_SHARED memory;
// zero-initialised is a valid empty table.
#ifndef MPBENCH_LIB_PEERS_H_
#define MPBENCH_LIB_PEERS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "lib/error.h"
#include "lib/wait.h"

namespace mp::internal {

// This process's pid, cached (getpid() is a system call) and refreshed in
// forked children by a pthread_atfork handler installed on first use.
pid_t current_pid();

// True if `pid` exists and is not a zombie. Reads /proc; slow path only.
bool process_alive(pid_t pid);

class PeerTable {
 public:
  enum Role : std::uint32_t { kProducer = 1, kConsumer = 2 };
  static constexpr int kSlots = 64;

  void set_creator(pid_t pid) {
    creator_.store(pid, std::memory_order_relaxed);
  }
  // Records that the calling process plays `role`. Idempotent.
  void join(Role role);
  // Whether some process could still act in `role` (see above).
  // Conservative: true if the table overflowed or nobody took the role yet.
  bool anyone_alive(Role role) const;
  // "consumers: pid 12 (gone), pid 15 (gone)" for error messages.
  std::string describe(Role role) const;

 private:
  struct Slot {
    std::atomic<pid_t> pid{0};
    std::atomic<std::uint32_t> roles{0};
  };
  std::atomic<pid_t> creator_{0};
  std::atomic<std::uint32_t> overflowed_{0};
  Slot slots_[kSlots];
};

// Caches a process's registration so the fast path is one atomic load and a
// comparison: a forked copy has the parent's pid in it and registers again.
// Safe to call from several threads at once (threads share the object that
// holds it); two racing first calls both join, which is idempotent.
class PeerRegistration {
 public:
  PeerRegistration() = default;
  PeerRegistration(PeerRegistration&& other) noexcept
      : state_(other.state_.load(std::memory_order_relaxed)) {}
  PeerRegistration& operator=(PeerRegistration&& other) noexcept {
    state_.store(other.state_.load(std::memory_order_relaxed),
                 std::memory_order_relaxed);
    return *this;
  }

  void ensure(PeerTable& table, PeerTable::Role role) {
    const std::uint64_t self = static_cast<std::uint32_t>(current_pid());
    std::uint64_t seen = state_.load(std::memory_order_acquire);
    if ((seen >> 32) == self && (seen & role)) [[likely]]
      return;
    table.join(role);
    for (;;) {
      const std::uint64_t roles = (seen >> 32) == self ? seen & 0xffffffffu : 0;
      if (state_.compare_exchange_weak(seen, (self << 32) | roles | role,
                                       std::memory_order_acq_rel))
        return;
    }
  }

 private:
  // pid << 32 | roles registered by that pid.
  std::atomic<std::uint64_t> state_{0};
};

// The one "spin, block in slices, check peers" wait of the shared-memory
// primitives: calls `slice()` (a wait_slice or wait_for, lib/wait.h) until it
// reports kReady (returns true) or kTimedOut (false); between slices, throws
// mp::PeerError "<what()> (<the role's pids>)" when no process that could
// end the wait is alive.
template <typename Slice, typename What>
bool wait_while_peers_live(Slice&& slice, const PeerTable& peers,
                           PeerTable::Role role, What&& what) {
  for (;;) {
    const WaitResult result = slice();
    if (result == WaitResult::kReady) return true;
    if (result == WaitResult::kTimedOut) return false;
    if (!peers.anyone_alive(role))
      throw PeerError(std::string(what()) + " (" + peers.describe(role) + ")");
  }
}

// The same, sleeping on a SharedEvent between checks of `ready()` (wait_for).
template <typename Ready, typename What>
bool wait_on_event(SharedEvent& event, const WaitPolicy& policy,
                   const Deadline& deadline, Ready&& ready,
                   const PeerTable& peers, PeerTable::Role role, What&& what) {
  return wait_while_peers_live(
      [&] { return wait_for(event, policy, deadline, ready); }, peers, role,
      what);
}

}  // namespace mp::internal

#endif  // MPBENCH_LIB_PEERS_H_
