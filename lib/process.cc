#include "lib/process.h"

#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "lib/children.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/forkserver.h"
#include "lib/slowdown.h"
#include "lib/spawn.h"

namespace mp {
namespace {

using internal::ChildTable;

std::string pid_context(pid_t pid) { return "pid " + std::to_string(pid); }

// The C++ standard streams' buffers as set up at start: while they are
// unchanged, the streams write through to C stdio and hold nothing of their
// own. <iostream> above guarantees they exist when these are initialised.
std::streambuf* const g_initial_cout = std::cout.rdbuf();
std::streambuf* const g_initial_cerr = std::cerr.rdbuf();
std::streambuf* const g_initial_clog = std::clog.rdbuf();

// Whether `stream` holds unwritten output. Reads the FILE itself rather than
// calling __fpending: in a forked child, a call into a page of libc's code
// that the child has not run yet costs a page fault.
bool pending_output(FILE* stream) {
#ifdef __GLIBC__
  if (stream->_mode <= 0)  // byte-oriented: __fpending's own computation
    return stream->_IO_write_ptr > stream->_IO_write_base;
#endif
  return ::__fpending(stream) > 0;
}

// Flushes only what holds data: in a freshly forked child every write, even
// taking an uncontended stdio lock, copies a page.
void flush_standard_streams() {
  if (std::cout.rdbuf() != g_initial_cout) std::cout.flush();
  if (std::cerr.rdbuf() != g_initial_cerr) std::cerr.flush();
  if (std::clog.rdbuf() != g_initial_clog) std::clog.flush();
  if (pending_output(stdout)) std::fflush(stdout);
  if (pending_output(stderr)) std::fflush(stderr);
}

// `run` returns the exit code; `name` gives the child's name for messages.
template <typename Run, typename Name>
[[noreturn]] void run_child(Run&& run, Name&& name, bool daemon,
                            pid_t parent) noexcept {
  int code = 1;
  try {
    if (daemon) {
      internal::check(::prctl(PR_SET_PDEATHSIG, SIGKILL),
                      "prctl(PR_SET_PDEATHSIG)");
      // The parent may have died before prctl took effect.
      if (::getppid() != parent) ::raise(SIGKILL);
    }
    code = run();
  } catch (const SystemExit& exit) {
    code = exit.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "Process %s (pid %d): uncaught exception: %s\n",
                 std::string(name()).c_str(), static_cast<int>(::getpid()),
                 e.what());
    code = 1;
  } catch (...) {
    std::fprintf(stderr,
                 "Process %s (pid %d): uncaught non-standard exception\n",
                 std::string(name()).c_str(), static_cast<int>(::getpid()));
    code = 1;
  }
  // Checked here, not in finish_children, which lives on a page of code
  // this child would otherwise not touch (one page fault less).
  if (internal::ChildTable::in_use_by_this_process())
    internal::finish_children();
  flush_standard_streams();
  ::_exit(code);
}

}  // namespace

namespace internal {

void run_worker(TaskFunction function, std::string_view argument,
                std::string_view name, bool daemon, pid_t parent) noexcept {
  run_child([&] { return function(argument); }, [&] { return name; }, daemon,
            parent);
}

}  // namespace internal

Process::Process(Task task, std::string name)
    : task_(std::make_unique<Task>(std::move(task))), name_(std::move(name)) {
  if (task_->function == nullptr)
    throw std::invalid_argument("Process: mp::Task without a function");
}

void Process::take_target(Process& other) noexcept {
  if (other.target_ == nullptr) {
    target_ = nullptr;
  } else if (other.target_is_inline()) {
    target_ = other.target_->move_into(inline_target_);
    other.destroy_target();
  } else {
    target_ = std::exchange(other.target_, nullptr);
  }
}

void Process::destroy_target() noexcept {
  if (target_ == nullptr) return;
  if (target_is_inline()) {
    target_->~Target();
  } else {
    delete target_;
  }
  target_ = nullptr;
}

Process::Process(Process&& other) noexcept
    : task_(std::move(other.task_)),
      start_method_(other.start_method_),
      name_(std::move(other.name_)),
      daemon_(other.daemon_),
      pid_(std::exchange(other.pid_, 0)),
      reaped_(other.reaped_),
      status_unavailable_(other.status_unavailable_),
      status_(other.status_),
      pidfd_(std::move(other.pidfd_)) {
  take_target(other);
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    destroy();
    destroy_target();
    take_target(other);
    task_ = std::move(other.task_);
    start_method_ = other.start_method_;
    name_ = std::move(other.name_);
    daemon_ = other.daemon_;
    pid_ = std::exchange(other.pid_, 0);
    reaped_ = other.reaped_;
    status_unavailable_ = other.status_unavailable_;
    status_ = other.status_;
    pidfd_ = std::move(other.pidfd_);
  }
  return *this;
}

Process::~Process() {
  destroy();
  destroy_target();
}

void Process::destroy() noexcept {
  if (pid_ == 0) return;
  try {
    if (!poll(WNOHANG)) {
      send_signal(SIGTERM);
      if (!join(kTerminateGracePeriod)) {
        send_signal(SIGKILL);
        join();
      }
    }
  } catch (...) {
    // Reaped by code outside mp: there is no child left to stop, only our
    // record in the table to drop.
    ChildTable& table = ChildTable::instance();
    std::lock_guard lock(table.mutex());
    table.remove(pid_);
  }
  pid_ = 0;
}

const std::string& Process::name() const {
  // Numbered on demand rather than at construction: a counter bumped on every
  // construction is one more page written after each fork.
  static std::atomic<int> counter{0};
  if (name_.empty()) name_ = "Process-" + std::to_string(++counter);
  return name_;
}

void Process::set_daemon(bool daemon) {
  if (pid_ != 0)
    throw std::logic_error("Process::set_daemon: process already started");
  daemon_ = daemon;
}

StartMethod Process::start_method() const noexcept {
  return start_method_.value_or(get_start_method());
}

void Process::set_start_method(StartMethod method) {
  if (pid_ != 0) {
    throw std::logic_error(
        "Process::set_start_method: process already started");
  }
  start_method_ = method;
}

void Process::require_started(const char* what) const {
  if (pid_ == 0) {
    throw std::logic_error(std::string("Process::") + what +
                           ": process not started");
  }
}

void Process::start() {
  [[maybe_unused]] const internal::InjectedSlowdown<
      internal::Primitive::kProcess>
      slowdown;
  if (target_ == nullptr && task_ == nullptr)
    throw std::logic_error("Process::start: no target");
  if (pid_ != 0) {
    throw std::logic_error("Process::start: cannot start a process twice (" +
                           pid_context(pid_) + ")");
  }
  const StartMethod method = start_method();
  if (method != StartMethod::fork && task_ == nullptr) {
    throw std::logic_error(
        "Process::start: start method " + std::string(to_string(method)) +
        " cannot run a callable, whose state lives only in this process; "
        "give the Process an mp::Task (a plain function and a bytes "
        "argument), or use StartMethod::fork");
  }
  if (method == StartMethod::forkserver) internal::ensure_fork_server();
  flush_standard_streams();
  ChildTable& table = ChildTable::instance();
  // Only a daemon child (and a task's encoding) needs the parent's pid: one
  // system call less on fork's start+join path.
  const pid_t parent =
      daemon_ || method != StartMethod::fork ? ::getpid() : pid_t{0};
  if (method != StartMethod::fork) {
    pid_ = start_task(method, parent);
    reaped_ = false;
    status_unavailable_ = false;
    return;
  }
  // Held across fork so that no reaper can collect the child before it is
  // registered as ours. The child does not inherit a usable lock: it rebuilds
  // its table on first use (see children.h).
  table.mutex().lock();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (task_) {
      run_child([this] { return task_->function(task_->argument); },
                [this] { return name(); }, daemon_, parent);
    }
    run_child([this] { return target_->run(); }, [this] { return name(); },
              daemon_, parent);
  }
  if (pid == -1) {
    const int error = errno;
    table.mutex().unlock();
    internal::throw_os_error("fork", error);
  }
  try {
    table.add(pid, daemon_);
  } catch (...) {  // only the table's overflow vector can fail to grow
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    table.mutex().unlock();
    throw;
  }
  table.mutex().unlock();
  pid_ = pid;
  reaped_ = false;
  status_unavailable_ = false;
}

pid_t Process::start_task(StartMethod method, pid_t parent) {
  const std::string task =
      internal::encode_task(*task_, name(), daemon_, parent);
  const Fd task_fd =
      method == StartMethod::spawn ? internal::task_memfd(task) : Fd();
  ChildTable& table = ChildTable::instance();
  // Held until the child is registered, as for fork.
  std::lock_guard lock(table.mutex());
  const pid_t pid = method == StartMethod::spawn
                        ? internal::spawn_worker(task_fd.get(), task_->fds)
                        : internal::forkserver_start_worker(task, task_->fds);
  try {
    table.add(pid, daemon_);
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  return pid;
}

bool Process::collect_locked() {
  internal::ChildRecord* record = ChildTable::instance().find(pid_);
  if (record == nullptr || !record->reaped) return false;
  status_ = record->status;
  reaped_ = true;
  ChildTable::instance().remove(pid_);
  return true;
}

bool Process::poll(int flags) {
  if (reaped_) return true;
  int status = 0;
  const pid_t got =
      internal::retry_on_eintr([&] { return ::waitpid(pid_, &status, flags); });
  if (got == 0) return false;
  const int error = errno;
  ChildTable& table = ChildTable::instance();
  std::lock_guard lock(table.mutex());
  if (got == pid_) {
    table.remove(pid_);
    status_ = status;
    reaped_ = true;
    pidfd_.reset();
    return true;
  }
  // A reaper (mp::reap, mp::ChildReaper) may have collected the child first;
  // it leaves the status in our record.
  if (error == ECHILD && collect_locked()) return true;
  // Reaped outside mp: SIGCHLD ignored, or waitpid(-1) in another thread.
  // The child has exited (a pidfd, when we have one, confirms it); its
  // status is gone.
  if (error == ECHILD && (!pidfd_ || exited_per_pidfd())) {
    table.remove(pid_);
    reaped_ = true;
    status_unavailable_ = true;
    pidfd_.reset();
    return true;
  }
  internal::throw_os_error("waitpid", error, pid_context(pid_));
}

int Process::open_pidfd_locked() {
  if (pidfd_) return 0;
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd) return errno;  // ENOSYS before Linux 5.3; ESRCH: reaped
  // The pid was ours while the child lived unreaped; a child reaped outside
  // mp may have left it to a stranger, who is not our child.
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), pidfd.get(), &info,
               WEXITED | WNOHANG | WNOWAIT) == -1 &&
      errno == ECHILD) {
    return ECHILD;
  }
  pidfd_ = std::move(pidfd);
  return 0;
}

bool Process::exited_per_pidfd() const {
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  return internal::retry_on_eintr([&] { return ::poll(&pfd, 1, 0); }) > 0;
}

void Process::join() {
  require_started("join");
  poll(0);
}

bool Process::join_for(std::chrono::nanoseconds timeout) {
  require_started("join");
  if (poll(WNOHANG)) return true;
  if (timeout <= std::chrono::nanoseconds::zero()) return false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;

  {
    ChildTable& table = ChildTable::instance();
    std::lock_guard lock(table.mutex());
    if (collect_locked()) return true;
    open_pidfd_locked();  // without one, the loop below polls
  }
  auto backoff = std::chrono::microseconds(50);
  for (;;) {
    const auto remaining = deadline - std::chrono::steady_clock::now();
    if (remaining <= std::chrono::nanoseconds::zero()) return poll(WNOHANG);
    if (pidfd_) {
      const auto ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(remaining);
      const timespec ts{static_cast<time_t>(ns.count() / 1'000'000'000),
                        static_cast<long>(ns.count() % 1'000'000'000)};
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      const int ready = ::ppoll(&pfd, 1, &ts, nullptr);
      if (ready == -1 && errno != EINTR) {
        internal::throw_os_error("ppoll", errno, pid_context(pid_));
      }
      if (ready > 0 && poll(WNOHANG)) return true;
    } else {
      // Kernels before 5.3 have no pidfd: poll with a growing sleep.
      std::this_thread::sleep_for(
          std::min<std::chrono::nanoseconds>(backoff, remaining));
      backoff = std::min(backoff * 2, std::chrono::microseconds(10'000));
      if (poll(WNOHANG)) return true;
    }
  }
}

bool Process::is_alive() {
  if (pid_ == 0) return false;
  try {
    return !poll(WNOHANG);
  } catch (const OsError&) {
    return false;  // reaped by someone else: certainly not running
  }
}

std::optional<int> Process::exitcode() {
  if (pid_ == 0 || !poll(WNOHANG) || status_unavailable_) return std::nullopt;
  return internal::exit_code_from_status(status_);
}

void Process::terminate() { send_signal(SIGTERM); }
void Process::kill() { send_signal(SIGKILL); }

void Process::send_signal(int signal_number) {
  require_started("send_signal");
  if (reaped_) return;
  // Under the table lock no reaper can collect the child, so the pid cannot
  // be reused between the check and kill.
  std::lock_guard lock(ChildTable::instance().mutex());
  if (collect_locked()) return;
  const int pidfd_error = open_pidfd_locked();
  // Reaped outside mp (the pid may be a stranger's by now): nothing to stop.
  if (pidfd_error == ESRCH || pidfd_error == ECHILD) return;
  if (pidfd_) {
    // A pidfd names our child even if someone else reaped it and its pid
    // was reused; ESRCH: it has exited, nothing to stop.
    if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signal_number, nullptr,
                  0) == 0 ||
        errno == ESRCH)
      return;
    internal::throw_os_error("pidfd_send_signal", errno, pid_context(pid_));
  }
  if (::kill(pid_, signal_number) == -1) {
    internal::throw_os_error("kill", errno, pid_context(pid_));
  }
}

}  // namespace mp
