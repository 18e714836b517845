// StartMethod::spawn: a child that is a fresh run of this program.
//
// The child is posix_spawn of /proc/self/exe (this process's executable, even
// if its file has since been replaced or removed), with default signal
// dispositions and an empty signal mask, and with an environment variable,
// MPBENCH_SPAWN_TASK_FD, naming a descriptor that holds its task (a memfd,
// lib/task.h). The descriptor and the task's own fds are handed over by
// inheritance (dup2 onto themselves in the spawn's file actions); nothing is
// named anywhere another process could open, and the memfd is visible only
// through /proc/<pid>/fd, closed to other users.
//
// Worker mode is entered from a static initialiser of lib/spawn.cc, during
// this library's static initialisation, before main: the child runs its task
// there and _exits, so main and the program's argument parsing never run in
// it. Consequence: a task function must not rely on namespace-scope objects of
// other translation units being constructed (they may not be yet; function-
// local statics are fine), nor on anything main sets up; and whatever the
// static initialisers that run before this one do (those of objects linked
// ahead of lib/spawn.cc, or of libraries loaded before it) happens in the
// child too. The variable is removed from the child's environment before its
// task runs.
#ifndef MPBENCH_LIB_SPAWN_H_
#define MPBENCH_LIB_SPAWN_H_

#include <sys/types.h>

#include <span>

namespace mp::internal {

inline constexpr char kSpawnTaskFdVariable[] = "MPBENCH_SPAWN_TASK_FD";

// Spawns a child running the task in `task_fd`, handing it `fds`; returns its
// pid. The caller holds the child table's mutex (no reaper may collect the
// child before it is registered). Throws mp::OsError("posix_spawn").
pid_t spawn_worker(int task_fd, std::span<const int> fds);

}  // namespace mp::internal

#endif  // MPBENCH_LIB_SPAWN_H_
