// Internal: the table of children this process started through mp::Process.
//
// The table is what lets mp::reap() and mp::ChildReaper reap every zombie
// without stealing the exit status of a child that a Process still owns: a
// reaper that collects an owned child stores its status in the child's
// record, and the Process reads it back.
//
// Cost matters here: after fork every writable page of the parent is
// copy-on-write again, and each page the parent or the child writes while the
// child lives costs a page fault (a few microseconds on a virtual machine).
// So the table is one page that holds the records themselves (no heap),
// marked MADV_WIPEONFORK where the kernel allows: a forked child receives it
// zero-filled instead of sharing it, so the parent registering the child just
// after fork copies nothing. A forked child touches the table only if it
// starts children of its own: it notices that the table is not its own (owner
// pid) and rebuilds it lazily.
#ifndef MPBENCH_LIB_CHILDREN_H_
#define MPBENCH_LIB_CHILDREN_H_

#include <sys/types.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <mutex>
#include <vector>

namespace mp::internal {

struct ChildRecord {
  pid_t pid = 0;
  bool daemon = false;
  bool reaped = false;  // collected by a reaper; `status` is valid
  int status = 0;       // waitpid status
};

class ChildTable {
 public:
  // This process's table, rebuilt empty on first use in a forked child. Never
  // destroyed, so it outlives static objects.
  static ChildTable& instance();
  // True if this process has (or had) children registered here; never writes.
  // Reads a copy of the owner kept outside the table's page, so that a forked
  // child checking this on its way out touches no page (and takes no page
  // fault) that it would not touch anyway.
  static bool in_use_by_this_process() {
    return owner_copy_.load(std::memory_order_acquire) == ::getpid();
  }

  std::mutex& mutex() { return mutex_; }

  // The functions below require mutex() held. A record stays until its
  // Process removes it, reaped or not; pointers are valid until the next add
  // or remove.
  void add(pid_t pid, bool daemon);
  void remove(pid_t pid);
  ChildRecord* find(pid_t pid);
  template <typename F>
  void for_each(F f) {
    for (std::size_t i = 0; i < inline_count_; ++i) f(inline_[i]);
    for (ChildRecord& record : overflow_) f(record);
  }

 private:
  static constexpr std::size_t kInline = 96;

  ChildTable() = default;
  static ChildTable* storage();
  void reset_for(pid_t owner);

  std::atomic<pid_t> owner_{0};
  static inline std::atomic<pid_t> owner_copy_{0};
  std::mutex mutex_;
  std::size_t inline_count_ = 0;
  std::array<ChildRecord, kInline> inline_{};
  std::vector<ChildRecord> overflow_;
};

// Python's exit code for a waitpid status: the exit status, or minus the
// signal number that ended the process.
int exit_code_from_status(int status) noexcept;

// Reaps `pid` if it has exited, keeping its status in the table for the
// Process that owns it (used by threads other than the owner's). Never
// blocks, never throws.
void reap_owned(pid_t pid) noexcept;

// Terminates daemon children and joins every child still in the table, as
// multiprocessing's _exit_function does; run at normal exit (atexit) and at
// the end of every mp::Process child. Never throws.
void finish_children() noexcept;

}  // namespace mp::internal

#endif  // MPBENCH_LIB_CHILDREN_H_
