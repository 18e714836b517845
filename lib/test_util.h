// Test helpers: what a test checks for leaks. Test-only.
#ifndef MPBENCH_LIB_TEST_UTIL_H_
#define MPBENCH_LIB_TEST_UTIL_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace mp::testing {

// Open descriptors of this process (entries of /proc/self/fd).
int count_open_fds();

// Pids whose parent is this process, zombies included (scans /proc).
std::vector<pid_t> child_pids();

// One-letter state of `pid` from /proc/<pid>/stat ('Z' for a zombie), or 0
// when no such process exists.
char process_state(pid_t pid);

// True while `pid` exists and is not a zombie.
bool process_running(pid_t pid);

// Waits up to `timeout` for `pid` to stop running (exited or zombie).
bool wait_until_gone(pid_t pid, std::chrono::milliseconds timeout);

// Snapshot of the resources a test must give back (descriptors and child
// processes; the library's shared memory is anonymous, so nothing can be
// left in /dev/shm); Check() reports what leaked as a readable string (empty
// when nothing did).
class LeakCheck {
 public:
  LeakCheck();
  std::string Check() const;

 private:
  int fds_;
};

}  // namespace mp::testing

#endif  // MPBENCH_LIB_TEST_UTIL_H_
