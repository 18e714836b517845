// Process: runs a callable in a forked child, with multiprocessing.Process's
// lifecycle.
//
//   mp::Process p([] { do_work(); });
//   p.start();              // fork; the child runs the callable, then _exit
//   p.join();               // wait and reap
//   int code = *p.exitcode();
//
// Exit codes follow Python: 0 when the callable returns normally (or the
// value it returns, if it returns an int), the code given to mp::SystemExit,
// 1 when an exception escapes it (its message goes to stderr, as
// multiprocessing's _bootstrap prints the traceback), and minus the signal
// number when a signal ends the child.
//
// Ownership: a Process owns its child until the child is reaped. Destroying a
// Process whose child still runs sends SIGTERM, waits up to
// kTerminateGracePeriod, then sends SIGKILL and reaps: no zombie and no
// orphan is left behind. Move-only.
//
// Daemon children (set_daemon(true) before start) get PR_SET_PDEATHSIG
// (SIGKILL), so they die when the parent dies however it dies, and they are
// sent SIGTERM and reaped at the parent's normal exit. Non-daemon children
// still running at normal exit are joined, as multiprocessing does. Note that
// Linux delivers PDEATHSIG when the *thread* that forked exits: start daemon
// processes from a thread that lives as long as they should.
//
// Fork safety: like multiprocessing's "fork" start method, the child is a copy
// of the calling thread only; locks held by other threads stay locked in it.
// stdout, stderr and the C++ standard streams are flushed before fork so
// buffered output is not written twice, and again when the child ends (as
// multiprocessing flushes sys.stdout and sys.stderr); other FILE streams are
// the caller's to flush. The child never returns into the caller: it ends in
// _exit.
//
// Start methods (lib/start_method.h): a Process starts with its own method
// (set_start_method) or, if given none, with the process-wide default read at
// start() (mp::set_start_method; fork unless changed). StartMethod::fork runs
// any callable. StartMethod::forkserver and StartMethod::spawn run only an
// mp::Task (lib/task.h): a plain function and a bytes argument; start() throws
// std::logic_error for a callable under them, as CPython fails to pickle a
// closure. Everything else (join, exit codes, signals, daemon, reaping) is the
// same whatever the method: the child is always a child of this process.
//
// Thread safety: one Process object must not be used from two threads at
// once; distinct Process objects may be used concurrently.
#ifndef MPBENCH_LIB_PROCESS_H_
#define MPBENCH_LIB_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "lib/fd.h"
#include "lib/start_method.h"
#include "lib/task.h"

namespace mp {

namespace internal {

// Type-erased callable. Small callables live inside the Process object
// (no heap allocation, so nothing to free after fork: see children.h).
class Target {
 public:
  static constexpr std::size_t kInlineSize = 64;
  virtual ~Target() = default;
  virtual int run() = 0;
  // Move-constructs this target into `buffer` (kInlineSize bytes).
  virtual Target* move_into(void* buffer) noexcept = 0;
};

template <typename F>
class TargetOf final : public Target {
 public:
  explicit TargetOf(F f) : f_(std::move(f)) {}
  int run() override {
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      f_();
      return 0;
    } else {
      return static_cast<int>(f_());
    }
  }
  Target* move_into(void* buffer) noexcept override {
    return new (buffer) TargetOf(std::move(f_));
  }

  static constexpr bool kFitsInline =
      sizeof(F) + sizeof(void*) <= kInlineSize &&
      alignof(F) <= alignof(std::max_align_t) &&
      std::is_nothrow_move_constructible_v<F>;

 private:
  F f_;
};

}  // namespace internal

// Throw from a Process's callable to end the child with `code` after stack
// unwinding, like Python's sys.exit(code).
struct SystemExit {
  int code = 0;
};

class Process {
 public:
  // How long the destructor waits after SIGTERM before it sends SIGKILL.
  static constexpr std::chrono::milliseconds kTerminateGracePeriod{500};

  // An empty Process: start() throws std::logic_error.
  Process() noexcept = default;

  // `target` is moved into the Process and called in the child. It may
  // return void or a value convertible to int (the exit code). `name`
  // defaults to "Process-N" as in Python.
  template <typename F>
  requires std::invocable < std::decay_t<F>
  & > &&(!std::same_as<std::decay_t<F>, Process>)explicit Process(
          F&& target, std::string name = {})
      : name_(std::move(name)) {
    using T = internal::TargetOf<std::decay_t<F>>;
    if constexpr (T::kFitsInline) {
      target_ = new (inline_target_) T(std::forward<F>(target));
    } else {
      target_ = new T(std::forward<F>(target));
    }
  }

  // Runs `task.function(task.argument)` in the child, under any start method.
  // Throws std::invalid_argument for a task without a function.
  explicit Process(Task task, std::string name = {});

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Terminates and reaps a running child (see above). Never throws.
  ~Process();

  // Starts the child with start_method(). Throws std::logic_error if already
  // started or empty, or for a callable (not a Task) under forkserver or
  // spawn; std::invalid_argument for a Task whose function cannot be
  // referenced (lib/task.h); mp::OsError when the system cannot create a
  // process ("fork", "posix_spawn", "clone"); mp::PeerError /
  // mp::TimeoutError when the fork server has died or does not answer
  // (lib/forkserver.h). forkserver starts the fork server on first use.
  void start();

  // Blocks until the child exits and reaps it. Returns at once if it has
  // already been reaped. Throws std::logic_error before start(). A child
  // reaped by code outside mp (SIGCHLD ignored, waitpid(-1) in another
  // thread) counts as exited: see exit_status_unavailable().
  void join();

  // Like join() but gives up after `timeout`; returns true if the child has
  // exited (and is reaped), false if it still runs.
  template <typename Rep, typename Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(
        std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }

  // True between start() and the child's exit. Reaps an exited child. Never
  // blocks.
  bool is_alive();

  // Python's exitcode: nullopt before start and while the child runs. Reaps
  // an exited child. Never blocks. Also nullopt for a child that has exited
  // but was reaped by code outside mp, whose status is gone
  // (exit_status_unavailable() tells that case apart); it does not throw.
  std::optional<int> exitcode();
  // True once the child is known to have exited and its exit status was
  // taken by someone else (the program ignores SIGCHLD, or reaps with
  // waitpid(-1)): waitpid then fails with ECHILD, which only a reaped child
  // of ours gives (confirmed by its pidfd when one is open).
  bool exit_status_unavailable() const noexcept { return status_unavailable_; }

  // 0 before start().
  pid_t pid() const noexcept { return pid_; }
  // The name given at construction, or "Process-N" assigned on first call.
  const std::string& name() const;
  bool daemon() const noexcept { return daemon_; }
  // Throws std::logic_error after start().
  void set_daemon(bool daemon);
  // The method start() uses: the one set here, else the process-wide default
  // (as it is now). set_start_method throws std::logic_error after start().
  StartMethod start_method() const noexcept;
  void set_start_method(StartMethod method);

  // Send SIGTERM / SIGKILL / any signal to a child that has not been reaped;
  // no-op once it has been (as Python's terminate() on a finished process).
  // Throws std::logic_error before start(), mp::OsError("kill") otherwise.
  void terminate();
  void kill();
  void send_signal(int signal_number);

 private:
  bool join_for(std::chrono::nanoseconds timeout);
  // waitpid(pid_, flags); returns true once the child is reaped.
  bool poll(int flags);
  // Starts the child of a Task under forkserver or spawn and registers it.
  pid_t start_task(StartMethod method, pid_t parent);
  // With the table locked: takes a status a reaper left for us.
  bool collect_locked();
  // With the table locked and the child not reaped by mp: opens pidfd_ if it
  // is not open. Returns 0 when it is, else why not: ENOSYS (kernel before
  // 5.3: fall back to the pid), ESRCH or ECHILD (reaped outside mp). Opened on
  // first need, not at start: pidfd_open and its close cost about 3 us, some
  // 2.5% of fork's whole start+join (Intel Xeon VM).
  int open_pidfd_locked();
  // Whether the pidfd reports the child has exited (reaped or not).
  bool exited_per_pidfd() const;
  void require_started(const char* what) const;
  void destroy() noexcept;
  void destroy_target() noexcept;
  void take_target(Process& other) noexcept;
  bool target_is_inline() const noexcept {
    return static_cast<const void*>(target_) ==
           static_cast<const void*>(inline_target_);
  }

  alignas(std::max_align_t) unsigned char inline_target_
      [internal::Target::kInlineSize];
  internal::Target* target_ = nullptr;
  std::unique_ptr<Task> task_;  // instead of target_, for a Task
  std::optional<StartMethod> start_method_;
  mutable std::string name_;
  bool daemon_ = false;
  pid_t pid_ = 0;
  bool reaped_ = false;
  bool status_unavailable_ = false;  // reaped_ by code outside mp
  int status_ = 0;                   // waitpid status once reaped_
  // The running child, once a timed join or a signal needed it, until reaped
  // (if supported).
  Fd pidfd_;
};

}  // namespace mp

#endif  // MPBENCH_LIB_PROCESS_H_
