// Task: what a child started with StartMethod::forkserver or ::spawn runs.
//
//   int work(std::string_view argument) { ...; return 0; }
//   mp::Process p(mp::Task{work, "bytes for the child"});
//   p.set_start_method(mp::StartMethod::spawn);
//
// A closure cannot cross into a process that is not a copy of the caller: its
// captured state lives in this address space. A Task is what can: a plain
// function of this program, referenced by its offset from the start of the
// executable or shared library that holds it (checked in the child against
// that file's GNU build id, or its device, inode, size and mtime when it has
// none), and an argument of bytes, copied. The function must live in the
// executable or in a library loaded at program start: a function from a
// library loaded later with dlopen cannot be referenced (std::invalid_argument
// at start), since the child does not load it. What the function returns is
// the exit code; exceptions and mp::SystemExit are handled as for any
// Process.
//
// Descriptors listed in `fds` reach the child under the same numbers (so an
// argument may name them); every other descriptor of the child is closed,
// except 0, 1 and 2. Memory is not shared unless a descriptor shares it (a
// memfd); anonymous shared memory (mp::Mapping::shared) and the queues built
// on it reach only children started with StartMethod::fork.
//
// With StartMethod::fork a Task is simply called in the forked child.
#ifndef MPBENCH_LIB_TASK_H_
#define MPBENCH_LIB_TASK_H_

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lib/fd.h"

namespace mp {

using TaskFunction = int (*)(std::string_view argument);

struct Task {
  Task() = default;
  Task(TaskFunction f, std::string a = {}, std::vector<int> d = {})
      : function(f), argument(std::move(a)), fds(std::move(d)) {}

  TaskFunction function = nullptr;
  std::string argument;
  // Each >= 3, distinct, open in the caller at start; at most kMaxTaskFds.
  std::vector<int> fds;
};

inline constexpr std::size_t kMaxTaskFds = 64;

namespace internal {

// Encodes `task` with the child's name, daemon flag and parent pid, for
// worker_main. Throws std::invalid_argument for a function that cannot be
// referenced (see above) or bad fds.
std::string encode_task(const Task& task, std::string_view name, bool daemon,
                        pid_t parent);
// A new close-on-exec memfd holding `task`. Throws mp::OsError.
Fd task_memfd(std::string_view task);

// The child's side: decodes `task` (without allocating), puts `received`
// (the descriptors that came with it, forkserver) at the task's fd numbers,
// closes every other descriptor above 2, resolves the function and runs it
// through run_worker. A task that cannot be decoded or resolved is reported
// on stderr and ends the child with exit code 1. Never returns.
[[noreturn]] void worker_main(std::string_view task,
                              std::span<const int> received) noexcept;
// The same for a task in a memfd (spawn, or a forkserver task too large to
// travel inline); the descriptor is closed before the task runs.
[[noreturn]] void worker_main_from_fd(int task_fd,
                                      std::span<const int> received) noexcept;

// Code of this program as a number that stays valid in a forkserver or spawn
// child (mp::Pool sends its workers functions this way): the index of the
// object loaded at program start that holds `address`, and the offset in it.
// Throws std::invalid_argument, as for a Task's function, for code loaded
// later (dlopen) or for an address in no object's code.
std::uint64_t code_handle(const void* address);
// `handle`'s address in this process; nullptr when it names no code here.
// Never throws; allocates nothing.
void* code_address(std::uint64_t handle) noexcept;
// The names and identities of the objects loaded at program start. A child
// whose own fingerprint differs must not take code handles from this
// process. Never throws (but may throw std::bad_alloc).
std::string startup_fingerprint();

// Closes every descriptor above 2 that is not in `keep` (sorted in place).
// Never throws.
void close_fds_except(std::span<int> keep) noexcept;

// Runs `function(argument)` as a Process child runs its callable (daemon
// death signal, exit code, exceptions, flushing) and _exits. Defined in
// process.cc. Never returns.
[[noreturn]] void run_worker(TaskFunction function, std::string_view argument,
                             std::string_view name, bool daemon,
                             pid_t parent) noexcept;

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_TASK_H_
