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

// Caches a process's registration so the fast path is one comparison: a
// forked copy has the parent's pid in it and registers again.
class PeerRegistration {
 public:
  void ensure(PeerTable& table, PeerTable::Role role) {
    const pid_t self = current_pid();
    if (pid_ == self && (roles_ & role)) [[likely]]
      return;
    if (pid_ != self) roles_ = 0;
    table.join(role);
    pid_ = self;
    roles_ |= role;
  }

 private:
  pid_t pid_ = 0;
  std::uint32_t roles_ = 0;
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_PEERS_H_
