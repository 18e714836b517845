// GracefulShutdown: SIGTERM as "finish what is running, then exit", for a
// process that runs an mp::Pool (the way of seed 003).
//
//   mp::Pool pool(4);
//   mp::GracefulShutdown graceful(pool);   // until it is destroyed
//   pool.map(work, items);                 // SIGTERM now ends the process
//                                          // cleanly
//
// While one exists, SIGTERM makes the pool stop taking tasks; running chunks
// finish (up to `grace`, then their workers are killed), every worker is
// reaped, and the process exits as killed by SIGTERM (its parent sees
// -SIGTERM). A background thread does the work (a signal handler may not).
//
// Ownership: the pool must outlive it. At most one exists at a time
// (std::logic_error). The constructor throws mp::OsError when the pipe or
// the handler cannot be set up; the destructor restores the previous SIGTERM
// disposition, stops the thread and never throws. A forked child (a pool
// worker) starts with the previous disposition back.
#ifndef MPBENCH_LIB_GRACEFUL_SHUTDOWN_H_
#define MPBENCH_LIB_GRACEFUL_SHUTDOWN_H_

#include <chrono>
#include <memory>

#include "lib/pool.h"

namespace mp {

class GracefulShutdown {
 public:
  explicit GracefulShutdown(
      Pool& pool, std::chrono::milliseconds grace = std::chrono::seconds(10));
  GracefulShutdown(const GracefulShutdown&) = delete;
  GracefulShutdown& operator=(const GracefulShutdown&) = delete;
  ~GracefulShutdown();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace mp

#endif  // MPBENCH_LIB_GRACEFUL_SHUTDOWN_H_
