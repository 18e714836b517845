// Reaping finished children, as in the zombie-reaping recipes of seed 004.
//
// mp::reap() is the polling form: call it now and then and every child that
// has exited is collected, so none lingers as a zombie. mp::ChildReaper is the
// SIGCHLD-driven form: while one exists, children are collected as soon as
// they exit.
//
// Neither steals an exit status from a mp::Process: a child that a Process
// still owns is reaped too, but its status is kept for that Process
// (join(), exitcode()); only children started some other way (raw fork,
// posix_spawn, std::system) are reported to the caller.
#ifndef MPBENCH_LIB_REAPER_H_
#define MPBENCH_LIB_REAPER_H_

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace mp {
namespace internal {
class SignalPipe;
}  // namespace internal

struct ReapedChild {
  pid_t pid = 0;
  int exitcode = 0;  // Python's meaning: status, or minus the signal number
};

// Collects every exited child without blocking and returns those that no
// mp::Process owns. Throws mp::OsError("waitpid") on unexpected failure.
// Thread-safe.
std::vector<ReapedChild> reap();

// Installs a SIGCHLD handler for its lifetime and reaps from a background
// thread whenever a child exits. `on_reaped`, if given, is called on that
// thread for each child no Process owns. The handler only writes a byte to a
// non-blocking self-pipe (async-signal-safe); all reaping happens on the
// thread. At most one ChildReaper may exist at a time (std::logic_error).
// The destructor restores the previous SIGCHLD disposition and joins the
// thread; it never throws. Forked children start without the reaper.
class ChildReaper {
 public:
  using Callback = std::function<void(const ReapedChild&)>;

  explicit ChildReaper(Callback on_reaped = {});
  ChildReaper(const ChildReaper&) = delete;
  ChildReaper& operator=(const ChildReaper&) = delete;
  ~ChildReaper();

 private:
  void loop();

  Callback on_reaped_;
  std::unique_ptr<internal::SignalPipe> pipe_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace mp

#endif  // MPBENCH_LIB_REAPER_H_
