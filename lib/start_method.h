// How mp::Process (and, later, mp::Pool) starts a child: Python's three start
// methods.
//
//   fork        The child is a copy of the calling process (fork(2)): it runs
//               any callable, closures and their captured state included, and
//               sees the parent's memory copy-on-write. Cost grows with the
//               parent's page tables, and only the calling thread is copied:
//               a lock another thread held at fork stays locked in the child
//               (a child can deadlock in any mutex the parent's threads use).
//   forkserver  The child is a copy of a small fork server process started
//               early, while the program was single-threaded and small
//               (lib/forkserver.h). Cheap whatever the parent's size, and no
//               lock of the parent's threads is copied.
//   spawn       The child is a fresh run of this program's executable
//               (posix_spawn of /proc/self/exe) in worker mode
//               (lib/spawn.h). Nothing of the parent's state is copied.
//
// forkserver and spawn cannot run a closure, whose captured state exists only
// in this address space; they run an mp::Task (lib/task.h): a plain function
// of this program and a bytes argument, as CPython's forkserver and spawn run
// a picklable function with picklable arguments. Process::start throws
// std::logic_error for a closure under either method.
#ifndef MPBENCH_LIB_START_METHOD_H_
#define MPBENCH_LIB_START_METHOD_H_

#include <optional>
#include <string_view>

namespace mp {

enum class StartMethod { fork, forkserver, spawn };

// The process-wide default, used by every Process that was not given its own
// method. Starts as StartMethod::fork; unlike Python's, it may be changed any
// number of times. Thread-safe; never throws.
void set_start_method(StartMethod method) noexcept;
StartMethod get_start_method() noexcept;

// "fork", "forkserver", "spawn" (Python's names). Never throws.
std::string_view to_string(StartMethod method) noexcept;
// The method named `name`, or nullopt. Never throws.
std::optional<StartMethod> start_method_from_string(
    std::string_view name) noexcept;

}  // namespace mp

#endif  // MPBENCH_LIB_START_METHOD_H_
