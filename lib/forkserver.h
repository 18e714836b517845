// ForkServer: the server behind StartMethod::forkserver.
//
//   int main(int argc, char** argv) {
//     mp::ForkServer::start();  // first thing, while single-threaded and small
//     ...
//   }
//
// The server is a child of this process, forked while the program is
// single-threaded and small; it waits for requests and forks one child per
// Process started with StartMethod::forkserver. Each such child is a copy of
// the small server, not of the big, multi-threaded program, so starting it
// costs the same whatever this process's size, and no lock another thread
// holds is copied into it. The child becomes a child of *this* process
// (clone with CLONE_PARENT): Process::join, exit codes, reapers, daemon and
// exit-time joining work exactly as with fork. A daemon child's death signal
// follows the thread that started the server (Linux ties PR_SET_PDEATHSIG to
// the parent thread): start the server from main's thread.
//
// Started explicitly, the server is what the program was at that point.
// Started lazily (the first forkserver Process starts it), it is a copy of the
// program at that moment: as big as the program then is, and, if other
// threads exist, with their locks copied (the server itself only makes system
// calls and does not allocate, but the children it forks inherit that state).
// The laziness is for convenience; call start() at the top of main.
//
// Reach: the server listens on nothing. Its only channel is one end of a
// socketpair inherited from this process; requests carry the child's
// descriptors (SCM_RIGHTS) and its task (inline, or in a memfd). Another user
// cannot open either end (no name exists; /proc/<pid>/fd is closed to other
// uids). Children forked from this process with StartMethod::fork inherit this
// process's end, and may use the server only through their own
// ForkServer::start() (an inherited one is closed, not shared).
//
// Signals: the server ignores SIGINT (a terminal's Ctrl-C reaches the whole
// process group; the program decides what it means) and dies of SIGTERM; the
// children it forks start with every disposition at its default.
//
// Failure: the server dying (killed, for example) makes the next request throw
// mp::PeerError naming it, and reaps it; a server that does not answer within
// reply_timeout() is killed and reaped, and the request throws
// mp::TimeoutError. Neither hangs. start() again starts a new server.
//
// Blocking: a request (and start()) holds this process's child table while it
// waits for the server, as fork holds it across fork, so that no reaper can
// collect the new child before it is registered: reapers, other starts and
// joins wait meanwhile, at most reply_timeout() for a server that hangs.
//
// Linux-only; relies on glibc keeping the thread id in its thread descriptor,
// which start() locates (std::runtime_error if it cannot).
#ifndef MPBENCH_LIB_FORKSERVER_H_
#define MPBENCH_LIB_FORKSERVER_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <span>
#include <string_view>

namespace mp {

class ForkServer {
 public:
  static constexpr std::chrono::milliseconds kDefaultReplyTimeout{10'000};

  // How long a request or start() waits for the server before it is taken
  // for hung. Thread-safe; never throws.
  static std::chrono::milliseconds reply_timeout() noexcept;
  static void set_reply_timeout(std::chrono::milliseconds timeout) noexcept;

  // Starts this process's fork server unless one runs. Thread-safe. Throws
  // mp::OsError when a call fails, mp::PeerError / TimeoutError when the new
  // server does not come up.
  static void start();
  // True while this process has a server that has not been found dead.
  static bool running();
  // The server's pid, or 0.
  static pid_t pid();
  // Closes the channel (the server exits) and reaps the server. Children it
  // started are unaffected. Never throws.
  static void stop() noexcept;
};

namespace internal {

// Starts the server unless one was started (and not stopped) in this
// process; a server found dead stays dead until start() (lazy start).
void ensure_fork_server();

// Has the server fork a child running `task` (internal::encode_task), with
// `fds` passed along; returns the child's pid (a child of this process). A
// task up to kInlineTask bytes travels in the request itself, a larger one
// in a memfd. The caller
// holds the child table's mutex, so that no reaper collects the child before
// it is registered; the server must already run (start()). Throws as
// described above.
inline constexpr std::size_t kInlineTask = 64 * 1024;
pid_t forkserver_start_worker(std::string_view task, std::span<const int> fds);

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_FORKSERVER_H_
