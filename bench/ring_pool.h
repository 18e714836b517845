// RingPool: a map over workers joined to the parent by one RecordRing per
// direction per worker (bench/ring.h): the pool's design in its barest form.
// The same class runs its workers as forked processes (BM_RawRingPoolMap,
// the pool's raw limit) or as threads (BM_ThreadPoolMap), so "processes
// against threads" compares one design.
//
// Wire: the parent sends a chunk as one record holding its item count, then
// one record per item; a worker answers with one record per result, in
// order. Both sides move records through contiguous spans of the rings
// (plain array loops, the kernel inlined into the worker's), publish their
// cursors every kBatch records and at a chunk's end (the parent: at the end
// of its pass over the workers; a worker: unless the next chunk is already
// in view), and always before they wait. The parent keeps each worker's
// chunks in flight (no chunk ids on the wire) and hands a worker a new chunk
// while fewer than half a ring of its items, and fewer than its share of
// the call's, are in flight: a slow worker is not handed everything, and a
// call smaller than the rings is split over every worker. Chunks larger
// than a ring stream through it.
//
// `Kernel` (copyable; `std::uint64_t operator()(std::uint64_t) const`) is
// the work, fixed at construction so workers forked with it run it inlined.
// The shared memory is anonymous MAP_SHARED (mp::Mapping), placed before the
// workers start. Workers start in the constructor and stop in the
// destructor: processes are killed (SIGKILL) and reaped, threads are sent a
// stop record and joined; nothing is left behind. The parent notices a dead
// worker process within a wait timeout (RingPoolError). One thread uses a
// RingPool at a time. Forked workers never return into the caller (they end
// with _exit) and die with the parent (PR_SET_PDEATHSIG).
#ifndef MPBENCH_BENCH_RING_POOL_H_
#define MPBENCH_BENCH_RING_POOL_H_

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/ring.h"
#include "lib/mapping.h"

namespace mp::bench {

enum class WorkerKind { kProcesses, kThreads };

class RingPoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace ring_pool {

// 1 MiB a ring: a call of 10,000 items is in flight at once, and a worker
// of a 1,000,000-item call is handed 65,536 items at a time. Rounds of
// pause before a side sleeps (with a sched_yield every 64, Sleeper::wait):
// more than the parent needs to collect a call's last results and start
// the next one. The yields hand a core to the third process (10,000 items
// at chunksize 64: 58 -> 19 us, at 4,096: 53 -> 17 us). Measured in
// interleaved runs (Intel Xeon VM, 2 workers, double, 10,000 and 1,000,000
// items, chunksizes 1, 8, 64 and 4,096): the former 4,096-record rings and
// 64 rounds took 1.3x-6x as long (1,000,000 items at chunksize 64: 13.5 ->
// 2.2 ms), every worker waking through a futex every few thousand items;
// 64 rounds with 1 MiB rings took up to 1.2x as long as 1,024, and 4,096
// rounds up to 1.4x at 10,000 items (three processes on two cores: a long
// spin takes a core from the others).
inline constexpr std::size_t kRingRecords = std::size_t{1} << 17;
inline constexpr int kSpins = 1024;
inline constexpr std::uint64_t kStop = ~std::uint64_t{0};
inline constexpr std::chrono::milliseconds kLivenessTimeout{50};
// Records a side writes or reads before it publishes its cursor regardless.
inline constexpr std::uint64_t kBatch = kRingRecords / 16;

using Ring = RecordRing<kRingRecords>;

struct alignas(kCacheLine) Channel {
  Ring tasks;                          // parent -> worker
  Ring results;                        // worker -> parent
  alignas(kCacheLine) Sleeper worker;  // the worker sleeps here
};

struct Shared {
  alignas(kCacheLine) Sleeper parent;  // the parent sleeps here
  // Channels follow, one per worker.
};

// Runs a worker until a stop record arrives or parent_alive() turns false.
template <typename Kernel, typename Alive>
void work(Channel& channel, const Kernel& kernel, Alive parent_alive) {
  Consumer<Ring> tasks(&channel.tasks);
  Producer<Ring> results(&channel.results);
  auto idle = [&](auto ready) {
    results.publish();
    tasks.release();
    while (!channel.worker.wait(ready, kSpins, kLivenessTimeout)) {
      if (!parent_alive()) return false;
    }
    return true;
  };
  std::uint64_t left = 0;  // items of the current chunk still to come
  for (;;) {
    const std::span<const std::uint64_t> in = tasks.records(kRingRecords);
    if (in.empty()) {
      if (!idle([&] { return tasks.ready(); })) return;
      continue;
    }
    std::size_t j = 0;
    bool no_space = false;
    while (j < in.size()) {
      if (left == 0) {
        left = in[j++];  // a chunk's header: its item count
        if (left == kStop) return;
        continue;
      }
      const std::span<std::uint64_t> out =
          results.slots(std::min<std::uint64_t>(left, in.size() - j));
      if (out.empty()) {
        no_space = true;
        break;
      }
      for (std::size_t k = 0; k < out.size(); ++k) out[k] = kernel(in[j + k]);
      results.commit(out.size());
      j += out.size();
      left -= out.size();
      if (results.unpublished() >= kBatch) results.publish();
    }
    tasks.consume(j);
    // A chunk's results go back at its end, or with the next chunk's when
    // that one is already here (the parent sees them then at the latest:
    // the worker publishes before it waits).
    if (left == 0 && !tasks.ready_cached()) results.publish();
    if (tasks.unreleased() >= kBatch) tasks.release();
    if (no_space && !idle([&] { return !results.full(); })) return;
  }
}

// The parts that do not depend on the kernel (ring_pool.cc).
class Base {
 protected:
  Base(std::size_t workers, WorkerKind kind);
  ~Base();
  Base(const Base&) = delete;
  Base& operator=(const Base&) = delete;

  Channel& channel(std::size_t w) const;
  Sleeper& parent() const;
  // Forks one worker running child() (which must not return normally:
  // Base ends it with _exit). Throws mp::OsError("fork").
  template <typename Child>
  void spawn(Child child) {
    const pid_t pid = fork_worker();
    if (pid == 0) {
      int code = 0;
      try {
        child();
      } catch (...) {
        code = 70;
      }
      exit_child(code);
    }
    pids_.push_back(pid);
  }
  pid_t fork_worker();
  [[noreturn]] static void exit_child(int code) noexcept;
  bool parent_alive() const noexcept;
  // Throws RingPoolError when a worker process has exited or a worker
  // thread has failed.
  void check_workers();
  // Records the first failure of a worker thread (which then ends) for
  // check_workers(). Never throws.
  void thread_failed(const char* what) noexcept;
  // Kills and reaps the processes, or stops and joins the threads.
  void stop() noexcept;

  std::size_t workers_;
  WorkerKind kind_;
  pid_t parent_pid_;
  Mapping memory_;
  std::vector<pid_t> pids_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};  // threads: leave at the next check
  std::atomic<bool> thread_failed_{false};
  std::mutex failure_mutex_;
  std::string thread_failure_;  // the first failed thread's message
  bool broken_ = false;

 public:
  std::size_t workers() const noexcept { return workers_; }
  // The worker processes (empty for threads), for fault counting.
  const std::vector<pid_t>& pids() const noexcept { return pids_; }
};

}  // namespace ring_pool

template <typename Kernel>
class RingPool : public ring_pool::Base {
 public:
  // Starts `workers` workers of `kind` running `kernel`. Throws
  // mp::OsError (mmap, fork), std::system_error (threads),
  // std::invalid_argument for 0 workers.
  RingPool(std::size_t workers, WorkerKind kind, Kernel kernel)
      : Base(workers, kind), kernel_(kernel) {
    for (std::size_t w = 0; w < workers; ++w) {
      ring_pool::Channel& ch = channel(w);
      if (kind == WorkerKind::kProcesses) {
        spawn([&] {
          ring_pool::work(ch, kernel_, [this] { return parent_alive(); });
        });
      } else {
        threads_.emplace_back([&ch, this] {
          try {
            ring_pool::work(ch, kernel_, [this] { return !stopping_.load(); });
          } catch (const std::exception& e) {
            thread_failed(e.what());
          } catch (...) {
            thread_failed("unknown exception");
          }
        });
      }
    }
    for (std::size_t w = 0; w < workers; ++w) {
      to_.emplace_back(&channel(w).tasks);
      from_.emplace_back(&channel(w).results);
      state_.emplace_back();
      state_.back().chunks.resize(ring_pool::kRingRecords);
    }
  }
  ~RingPool() { stop(); }

  // For i in [0, n): sends item(i) (a record) through the rings in chunks
  // of `chunksize` (>= 1) and calls sink(i, kernel's result record), in
  // completion order per worker. Allocates nothing. Throws RingPoolError
  // when a worker died or the pool is unusable after an earlier error,
  // mp::OsError from futex.
  template <typename Item, typename Sink>
  void map(std::size_t n, std::size_t chunksize, Item item, Sink sink) {
    using ring_pool::kRingRecords;
    if (broken_) throw RingPoolError("ring pool: unusable after an error");
    if (chunksize == 0) throw std::invalid_argument("chunksize 0");
    broken_ = true;  // until this map completes
    // Items a worker may have in flight: half a ring, but no more than its
    // share of the call, so that a call smaller than the rings (1,024
    // SHA-512 items) is split over every worker instead of queued behind
    // the first.
    const std::uint64_t limit = std::min<std::uint64_t>(
        kRingRecords / 2,
        std::max<std::uint64_t>(chunksize, (n + workers_ - 1) / workers_));
    std::uint64_t next = 0, received = 0;
    while (received < n) {
      bool progress = false;
      for (std::size_t w = 0; w < workers_; ++w) {
        Worker& s = state_[w];
        Producer<ring_pool::Ring>& to = to_[w];
        bool pushed = false;
        for (;;) {
          if (s.send_left == 0) {
            if (next >= n || s.in_flight >= limit) break;
            const std::uint64_t count =
                std::min<std::uint64_t>(chunksize, n - next);
            // The header and as many items as fit, in one span.
            const std::span<std::uint64_t> out = to.slots(1 + count);
            if (out.empty()) break;
            out[0] = count;
            const std::size_t fit = out.size() - 1;
            for (std::size_t j = 0; j < fit; ++j) out[1 + j] = item(next + j);
            to.commit(out.size());
            s.chunks[s.chunk_tail++ % kRingRecords] = Chunk{next, count};
            s.send_next = next + fit;
            s.send_left = count - fit;
            s.in_flight += count;
            next += count;
            pushed = true;
          }
          while (s.send_left != 0) {
            const std::span<std::uint64_t> out = to.slots(s.send_left);
            if (out.empty()) break;
            for (std::size_t j = 0; j < out.size(); ++j)
              out[j] = item(s.send_next + j);
            to.commit(out.size());
            s.send_next += out.size();
            s.send_left -= out.size();
            pushed = true;
            if (to.unpublished() >= ring_pool::kBatch) to.publish();
          }
          if (s.send_left != 0) break;
        }
        if (pushed) {
          to.publish();
          progress = true;
        }
        Consumer<ring_pool::Ring>& from = from_[w];
        bool popped = false;
        while (s.in_flight != 0) {
          const std::span<const std::uint64_t> in = from.records(s.in_flight);
          if (in.empty()) break;
          for (std::size_t j = 0; j < in.size();) {
            Chunk& chunk = s.chunks[s.chunk_head % kRingRecords];
            const std::size_t k = std::min<std::uint64_t>(
                in.size() - j, chunk.count - s.received_in_chunk);
            const std::uint64_t first = chunk.first + s.received_in_chunk;
            for (std::size_t t = 0; t < k; ++t) sink(first + t, in[j + t]);
            j += k;
            s.received_in_chunk += k;
            if (s.received_in_chunk == chunk.count) {
              ++s.chunk_head;
              s.received_in_chunk = 0;
            }
          }
          from.consume(in.size());
          s.in_flight -= in.size();
          received += in.size();
          popped = true;
          if (from.unreleased() >= ring_pool::kBatch) from.release();
        }
        if (popped) {
          from.release();
          progress = true;
        }
      }
      if (!progress) {
        const auto ready = [&] {
          for (std::size_t w = 0; w < workers_; ++w) {
            const Worker& s = state_[w];
            if (s.in_flight != 0 && from_[w].ready()) return true;
            const bool wants =
                s.send_left != 0 || (next < n && s.in_flight < limit);
            if (wants && !to_[w].full()) return true;
          }
          return false;
        };
        while (!parent().wait(ready, ring_pool::kSpins,
                              ring_pool::kLivenessTimeout)) {
          check_workers();
        }
      }
    }
    broken_ = false;
  }

 private:
  struct Chunk {
    std::uint64_t first, count;
  };
  struct Worker {
    std::vector<Chunk> chunks;  // in flight, a ring of kRingRecords
    std::uint64_t chunk_head = 0, chunk_tail = 0;
    std::uint64_t received_in_chunk = 0;
    std::uint64_t send_next = 0, send_left = 0;
    std::uint64_t in_flight = 0;  // items sent, results not yet received
  };

  Kernel kernel_;
  std::vector<Producer<ring_pool::Ring>> to_;
  std::vector<Consumer<ring_pool::Ring>> from_;
  std::vector<Worker> state_;
};

}  // namespace mp::bench

#endif  // MPBENCH_BENCH_RING_POOL_H_
