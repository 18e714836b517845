// Internal: the self-pipe trick, once. A signal handler may do almost
// nothing, so SignalPipe's handler only writes a byte to a non-blocking pipe
// (async-signal-safe; a full pipe already guarantees a wake-up); a thread
// blocked in wait() does the real work. Used by mp::ChildReaper (SIGCHLD) and
// mp::GracefulShutdown (SIGTERM).
#ifndef MPBENCH_LIB_SIGNAL_PIPE_H_
#define MPBENCH_LIB_SIGNAL_PIPE_H_

#include <signal.h>

#include "lib/fd.h"

namespace mp::internal {

class SignalPipe {
 public:
  // Creates the pipe and installs the handler for `signal_number` with
  // `sa_flags` (SA_RESTART is always added). At most one SignalPipe per
  // signal at a time: std::logic_error naming `owner` otherwise. Throws
  // mp::OsError("pipe2" / "sigaction"). A forked child starts with the
  // previous disposition back and without the pipe.
  SignalPipe(int signal_number, int sa_flags, const char* owner);
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;
  // Restores the previous disposition (if restore() has not) and closes the
  // pipe. Never throws.
  ~SignalPipe();

  // Puts the disposition that was there before back now and stops writing
  // to the pipe (another SignalPipe may then be made). Idempotent.
  void restore() noexcept;
  // Wakes wait() as if the signal had come (from any thread), or, with
  // `signal` false, only wakes it. Never throws.
  void notify(bool signal = true) const noexcept;
  // Blocks until the pipe has bytes, takes them all, and returns whether one
  // of them was the signal's (rather than a notify(false)). Throws
  // mp::OsError("poll").
  bool wait();

 private:
  int signal_number_;
  Fd read_end_;
  Fd write_end_;
};

}  // namespace mp::internal

#endif  // MPBENCH_LIB_SIGNAL_PIPE_H_
