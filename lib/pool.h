// Pool: multiprocessing.Pool for C++ — persistent forked workers, each fed
// through a pair of lock-free shared-memory rings (mp::SpscRing), with map,
// map_into, imap, imap_unordered and apply_async.
//
//   int64_t twice(const int64_t& x) { return 2 * x; }
//   mp::Pool pool(mp::PoolOptions{.workers = 4});
//   std::vector<int64_t> out = pool.map(twice, items);   // in order
//   pool.map_into(twice, items, out);                     // reuses `out`
//   for (int64_t r : pool.imap_unordered(twice, items, 64)) use(r);
//   auto handle = pool.apply_async(twice, int64_t{21});
//   int64_t answer = handle.get();
//   pool.close();
//   pool.join();
//
// Functions: like multiprocessing, which pickles a function by name, the pool
// sends workers a reference to code, not a closure: `fn` must be a function
// pointer or a captureless lambda taking one argument. With the fork start
// method workers are forked copies of this process, so the reference is
// valid in them (code loaded with dlopen after the pool started is not);
// with forkserver and spawn it travels as a code handle (PoolOptions::start).
// State reaches workers through the items, through memory they inherited
// when forked (fork only), or through the initializer, which runs once in
// each worker as it starts.
//
// Views: items of type std::vector<E>, E trivially copyable, reach a
// function that takes std::span<const E> as a view of the task message,
// read where it arrived in the worker's ring: no vector is allocated and no
// element copied, where a `const std::vector<E>&` parameter gets a decoded
// copy. The span is valid during the call only. (SHA-512 of 1,024 sent
// 64 KiB buffers on 2 workers, default chunksize: 52.6 -> 50.2 ms, Intel
// Xeon VM.)
//
// Data: each chunk of `chunksize` items travels as one message to a worker
// (encoded with mp::Codec, written in place into that worker's task ring)
// and its results come back as one message in the worker's result ring,
// read in place. Small chunks of a map (or map_into) whose items and results
// travel as their object bytes go together: the consecutive chunks dealt to
// one worker in one pass share one message of up to 512 items, unless
// max_tasks_per_child is set; the worker still runs them chunk by chunk, and
// an error or its death names the exact chunk. Chunksize 1 then costs about
// twice what chunksize 64 does, not ten times (map_into of 10,000 doubles on
// 2 workers: 87 and 38 us; 859 us at chunksize 1 when each chunk was a
// message; Intel Xeon VM). The rings are reused lap after lap: a busy pool
// makes no system call and, once the rings have been round once, touches no new
// page (map_into also writes into the caller's buffer; map makes a fresh
// vector, as Python's does). A pool
// created before its data is honest about the cost of moving it;
// mp::fork_map forks workers for one call instead, so inputs are inherited
// copy-on-write and only results travel.
//
// Failures: an exception thrown by `fn` (of any type, `throw 42;` included)
// fails that call with mp::TaskError, which names the one item whose call
// threw and the message; the pool stays usable. A chunk's results that do
// not fit one message of the worker's result ring fail the call with
// mp::MessageTooLong naming the chunk (the worker lives on). A
// worker that dies (killed, crashed) fails the call whose chunk it was
// running with mp::WorkerLost, which names the chunk; the worker is replaced
// and tasks queued for it are run by its replacement (which gets fresh
// rings). Every chunk is either
// delivered exactly once or reported failed. With max_tasks_per_child,
// workers retire after that many chunks and are replaced without losing any.
//
// Shutdown: close() refuses new work; join() waits for submitted work and
// then for the workers to exit; terminate() kills workers at once. The
// destructor terminates, like leaving Python's `with Pool()` block. Workers
// are daemons (they die with this process), and mp::GracefulShutdown
// (lib/graceful_shutdown.h) turns SIGTERM into "finish the running chunks,
// reap every worker, then exit". For one call over inherited data, see
// mp::fork_map (lib/fork_map.h).
//
// Start methods: see PoolOptions::start. Every rule above (failures,
// replacement, shutdown, SIGTERM) holds under each; with forkserver, a fork
// server found dead when a worker must be (re)started breaks the pool: the
// constructor throws mp::PeerError, a replacement fails pending and later
// calls with mp::PoolError naming the cause.
//
// Children reaped elsewhere: a program that ignores SIGCHLD or reaps with
// waitpid(-1) in another thread takes the workers' exit statuses. The pool
// still notices a worker's exit (through its pidfd), reports its chunk with
// mp::WorkerLost ("exit status unavailable (reaped elsewhere)"), and
// replaces it.
//
// Thread safety: a Pool and its iterators and results are used by one thread
// at a time. Blocking calls wait with the pool's WaitPolicy and check the
// workers' health every few milliseconds: no call hangs on a dead worker.
#ifndef MPBENCH_LIB_POOL_H_
#define MPBENCH_LIB_POOL_H_

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lib/codec.h"
#include "lib/error.h"
#include "lib/pool_internal.h"
#include "lib/start_method.h"
#include "lib/wait.h"

namespace mp {

struct PoolOptions {
  // Worker processes; 0 means std::thread::hardware_concurrency().
  int workers = 0;
  // Runs once in every worker before its first task (and in replacements).
  // If it throws, the pool is broken: calls fail with mp::PoolError.
  std::function<void()> initializer;
  // Chunks a worker runs before it is replaced; 0 means no limit.
  std::size_t max_tasks_per_child = 0;
  // Chunks queued for each worker ahead of the one it runs.
  std::size_t prefetch = 4;
  // Capacity of each worker's task ring and of each worker's result ring
  // (rounded up to a power of two; shared memory). One chunk (or its
  // results) must fit in one message (mp::MessageTooLong otherwise; map's
  // default chunksize is lowered to fit a quarter of a ring where items and
  // results have a fixed size, so only an explicit chunksize, or items of
  // varying size, can meet that limit). Small rings stay in the CPU's caches
  // and are gone round (every page touched) after a few calls; larger ones cost
  // a page fault per 4 KiB on their first lap. The result ring takes at least
  // 4096 bytes (std::invalid_argument).
  std::size_t task_queue_bytes = 2 << 20;
  std::size_t result_queue_bytes = 2 << 20;
  // How the pool and its workers wait for each other.
  WaitPolicy wait = WaitPolicy::spin_then_block(std::chrono::microseconds(20));
  // How workers (and their replacements) start (lib/start_method.h); none:
  // the process-wide default (mp::get_start_method()) read when the pool is
  // made. Under forkserver and spawn a worker is not a copy of this process:
  // its rings and the pool's shared state live in memfd-backed shared memory
  // whose descriptors are handed to it (nothing another process can open by
  // name), it receives functions as code handles (mp::Task's rule: code of
  // the executable or of a library loaded at program start; a function from
  // a dlopen'ed library throws std::invalid_argument at the call), and it
  // sees no memory of this process but the items. The initializer must then
  // hold a plain function pointer (`+[] { ... }` or `&init`, so that
  // initializer.target<void (*)()>() finds it); a closure throws
  // std::logic_error at construction, as CPython fails to pickle one.
  std::optional<StartMethod> start;
};

// CPython's default chunksize for map: ceil(items / (4 * workers)), at least 1.
std::size_t default_chunksize(std::size_t items, std::size_t workers);

// The most item bytes a chunk made at map's default chunksize carries.
// CPython's default only counts items, to spread a fixed cost per task
// (pickling, a pipe write) over many of them; a chunk of large items has
// nothing left to spread once it holds a quarter of a megabyte (its copy
// takes ~25 us, the message's own cost ~1 us), and a larger one only makes
// the first worker wait for its whole copy before starting and leaves up
// to a chunk of work on one worker at the end. Measured (SHA-512 of 1,024
// sent 64 KiB buffers, 2 workers, 2-vCPU Intel Xeon VM): chunks of 128
// items (8 MiB) 1.47x serial, of 15 (1 MiB) 1.60x, of 3 (256 KiB) 1.69x;
// maps of 10,000 and 1,000,000 doubles the same with 1 MiB and 256 KiB.
inline constexpr std::size_t kDefaultChunkBytes = 256 << 10;

// map's default chunksize for `items` items of `mean_item_bytes` each
// (encoded; 0 when unknown): CPython's, lowered so that a chunk carries at
// most kDefaultChunkBytes, at least 1.
std::size_t default_chunksize(std::size_t items, std::size_t workers,
                              std::size_t mean_item_bytes);

// Results of imap / imap_unordered, pulled lazily: iterate with range-for or
// call next(). Errors (TaskError, WorkerLost, MessageTooLong) surface from
// next().
template <typename R>
class MapIterator {
 public:
  MapIterator(MapIterator&& other) noexcept;
  MapIterator& operator=(MapIterator&&) = delete;
  ~MapIterator();

  // The next result; nullopt after the last. With a timeout, throws
  // mp::TimeoutError if the next result is not ready in time.
  std::optional<R> next();
  std::optional<R> next(std::chrono::nanoseconds timeout);

  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    explicit iterator(MapIterator* owner) : owner_(owner) { advance(); }
    iterator() = default;
    const R& operator*() const { return *current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    bool operator==(const iterator& other) const {
      return (owner_ == nullptr) == (other.owner_ == nullptr);
    }

   private:
    void advance() {
      current_ = owner_->next();
      if (!current_) owner_ = nullptr;
    }
    MapIterator* owner_ = nullptr;
    std::optional<R> current_;
  };
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  friend class Pool;
  MapIterator(internal::PoolCore* core, std::uint64_t job)
      : core_(core), job_(job) {}
  std::optional<R> next_until(const internal::Deadline& deadline);

  internal::PoolCore* core_;
  std::uint64_t job_;
  std::vector<std::byte> chunk_;
  std::optional<Reader> reader_;
  std::uint64_t left_in_chunk_ = 0;
};

// Python's AsyncResult for apply_async.
template <typename R>
class AsyncResult {
 public:
  AsyncResult(AsyncResult&& other) noexcept;
  AsyncResult& operator=(AsyncResult&&) = delete;
  ~AsyncResult();

  // Blocks until the result is ready and returns it, or throws the task's
  // error (TaskError, WorkerLost, MessageTooLong). May be called again:
  // returns the same.
  const R& get();
  // Same; throws mp::TimeoutError if not ready within `timeout`.
  const R& get(std::chrono::nanoseconds timeout);
  // Whether the call has completed (successfully or not). Never blocks.
  bool ready();
  // Whether it completed without error; throws std::logic_error if not ready,
  // as Python raises ValueError.
  bool successful();
  void wait();
  bool wait(std::chrono::nanoseconds timeout);

 private:
  friend class Pool;
  AsyncResult(internal::PoolCore* core, std::uint64_t job)
      : core_(core), job_(job) {}
  bool settle(const internal::Deadline& deadline);

  internal::PoolCore* core_;
  std::uint64_t job_;
  std::optional<R> value_;
  std::exception_ptr error_;
};

class Pool {
 public:
  // Forks the workers. Throws mp::OsError when processes or shared memory
  // cannot be created.
  explicit Pool(PoolOptions options = {});
  explicit Pool(int workers) : Pool(options_with(workers)) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  // terminate(); never throws.
  ~Pool();

  // fn(item) for every item of `items` (any contiguous range: a vector, an
  // array, a span), results in order. `fn` must satisfy
  // internal::PoolFunction (a function or captureless lambda taking
  // const T&). chunksize 0 picks CPython's default, lowered for large items
  // (default_chunksize with the items' mean encoded size; at most
  // kDefaultChunkBytes a chunk). Throws TaskError, WorkerLost,
  // MessageTooLong (a chunk or its results larger than the queues),
  // PoolError.
  template <internal::ItemRange Range,
            internal::PoolFunction<internal::item_of<Range>> F>
  auto map(F fn, Range&& items, std::size_t chunksize = 0) {
    using T = internal::item_of<Range>;
    using R = internal::result_of<F, T>;
    const std::span<const T> all = internal::as_items(items);
    if constexpr (std::is_default_constructible_v<R> &&
                  std::is_move_assignable_v<R>) {
      std::vector<R> out(all.size());
      map_into(fn, all, std::span<R>(out), chunksize);
      return out;
    } else {
      MapIterator<R> results =
          imap_impl<R, T>(fn, all, chunksize_for<T, R>(chunksize, all),
                          /*ordered=*/true, /*unbounded=*/true);
      std::vector<R> out;
      out.reserve(all.size());
      while (auto r = results.next()) out.push_back(std::move(*r));
      return out;
    }
  }

  // map() into the caller's buffer: out[i] = fn(items[i]), each result
  // decoded straight from the worker's message into `out` (no result vector
  // is made, so a buffer reused from call to call touches no new page). R
  // is fn's result type, default-constructible and move-assignable. Throws
  // std::invalid_argument unless out.size() == items.size(), and what map()
  // throws; on an error, `out` holds some results and is otherwise
  // untouched, and nothing writes into it once map_into has returned.
  template <internal::ItemRange Range,
            internal::PoolFunction<internal::item_of<Range>> F, typename R>
  void map_into(F fn, Range&& items, std::span<R> out,
                std::size_t chunksize = 0) {
    using T = internal::item_of<Range>;
    static_assert(std::is_same_v<R, internal::result_of<F, T>>,
                  "map_into: out must hold fn's result type");
    const std::span<const T> all = internal::as_items(items);
    if (out.size() != all.size()) {
      throw std::invalid_argument(
          "Pool::map_into: " + std::to_string(all.size()) + " items but " +
          std::to_string(out.size()) + " places for results");
    }
    const std::uint64_t job =
        start(function_pointer(fn), internal::chunk_code<F, T>(),
              std::make_unique<internal::SpanSource<T>>(
                  all, chunksize_for<T, R>(chunksize, all)),
              /*ordered=*/false, /*unbounded=*/true, &internal::decode_into<R>,
              out.data());
    internal::finish_job(*core_, job);
  }
  // The same into a vector, resized to items.size() (its capacity reused).
  template <internal::ItemRange Range,
            internal::PoolFunction<internal::item_of<Range>> F, typename R>
  void map_into(F fn, Range&& items, std::vector<R>& out,
                std::size_t chunksize = 0) {
    out.resize(std::ranges::size(items));
    map_into(fn, std::forward<Range>(items), std::span<R>(out), chunksize);
  }

  // Ordered results, computed ahead of the consumer by a bounded number of
  // chunks. Python's default chunksize for imap is 1. `items` must outlive
  // the iterator.
  template <internal::ItemRange Range,
            internal::PoolFunction<internal::item_of<Range>> F>
  requires internal::OutlivesTheCall<Range>
  auto imap(F fn, Range&& items, std::size_t chunksize = 1) {
    using T = internal::item_of<Range>;
    return imap_impl<internal::result_of<F, T>, T>(
        fn, internal::as_items(items), std::max<std::size_t>(chunksize, 1),
        true, false);
  }
  // Results in completion order (each chunk's results stay together).
  template <internal::ItemRange Range,
            internal::PoolFunction<internal::item_of<Range>> F>
  requires internal::OutlivesTheCall<Range>
  auto imap_unordered(F fn, Range&& items, std::size_t chunksize = 1) {
    using T = internal::item_of<Range>;
    return imap_impl<internal::result_of<F, T>, T>(
        fn, internal::as_items(items), std::max<std::size_t>(chunksize, 1),
        false, false);
  }

  // fn(arg) in a worker.
  template <typename T, internal::PoolFunction<T> F>
  AsyncResult<internal::result_of<F, T>> apply_async(F fn, const T& arg) {
    return AsyncResult<internal::result_of<F, T>>(
        core_.get(), start(function_pointer(fn), internal::chunk_code<F, T>(),
                           std::make_unique<internal::SpanSource<T>>(
                               std::span<const T>(&arg, 1), 1),
                           true, true));
  }

  // No more work may be submitted; workers exit once the work already
  // submitted is done (join waits for that).
  void close();
  // Waits for submitted work and for the workers to exit. Requires close()
  // or terminate() first (std::logic_error otherwise, as in Python).
  void join();
  // Stops workers at once (SIGKILL) and reaps them; pending calls fail with
  // PoolError. Idempotent; never throws.
  void terminate() noexcept;

  int workers() const;
  // The method the workers start with.
  StartMethod start_method() const;
  // Current worker pids (replacements included), for diagnostics and tests.
  // Safe to call from another thread.
  std::vector<pid_t> worker_pids() const;
  // Workers started so far, replacements included.
  std::uint64_t workers_started() const;
  // Makes every worker finish its running chunk and exit, as on SIGTERM
  // (used by GracefulShutdown; async-signal-safe).
  void request_stop() noexcept;

 private:
  static PoolOptions options_with(int workers) {
    PoolOptions options;
    options.workers = workers;
    return options;
  }

  template <typename F>
  static void* function_pointer(F fn) {
    return reinterpret_cast<void*>(+fn);
  }

  // Bytes one item or its result takes in a message when both travel as
  // their object bytes (mp::Codec's rule for trivially copyable types), the
  // larger of the two; 0 when that is not known before encoding.
  template <typename T, typename R>
  static constexpr std::size_t flat_bytes() {
    if constexpr (internal::kFlat<T> && internal::kFlat<R>) {
      return std::max(sizeof(T), sizeof(R));
    } else {
      return 0;
    }
  }
  // map's default: default_chunksize(items, workers, mean_bytes), lowered
  // where `item_bytes` (the larger of an item's and a result's fixed size)
  // is known so that a chunk and its results take at most a quarter of a
  // ring (a large map at the default chunksize never fails with
  // MessageTooLong).
  std::size_t map_default_chunksize(std::size_t items, std::size_t item_bytes,
                                    std::size_t mean_bytes) const;
  // `chunksize`, or for 0 map's default for `items` (whose sizes are summed
  // only then).
  template <typename T, typename R>
  std::size_t chunksize_for(std::size_t chunksize,
                            std::span<const T> items) const {
    if (chunksize != 0) return chunksize;
    return map_default_chunksize(items.size(), flat_bytes<T, R>(),
                                 internal::mean_encoded_bytes(items));
  }
  std::uint64_t start(void* fn, internal::ChunkCode code,
                      std::unique_ptr<internal::ChunkSource> source,
                      bool ordered, bool unbounded,
                      internal::ResultSink sink = nullptr, void* out = nullptr);

  template <typename R, typename T, typename F>
  MapIterator<R> imap_impl(F fn, std::span<const T> items,
                           std::size_t chunksize, bool ordered,
                           bool unbounded) {
    return MapIterator<R>(
        core_.get(),
        start(function_pointer(fn), internal::chunk_code<F, T>(),
              std::make_unique<internal::SpanSource<T>>(items, chunksize),
              ordered, unbounded));
  }

  std::unique_ptr<internal::PoolCore> core_;
};

// The plain loop every pool is compared with: fn(item) for every item of
// any contiguous range, in order, in this thread.
template <internal::ItemRange Range, typename F>
requires std::invocable < F&, const internal::item_of<Range>
& > auto serial_map(F&& fn, Range&& items) {
  using T = internal::item_of<Range>;
  std::vector<internal::result_of<F, T>> out;
  out.reserve(std::ranges::size(items));
  for (const T& item : internal::as_items(items)) out.push_back(fn(item));
  return out;
}

// --- Template member definitions ----------------------------------------

template <typename R>
MapIterator<R>::MapIterator(MapIterator&& other) noexcept
    : core_(std::exchange(other.core_, nullptr)),
      job_(other.job_),
      chunk_(std::move(other.chunk_)),
      left_in_chunk_(std::exchange(other.left_in_chunk_, 0)) {
  if (left_in_chunk_ > 0) {
    // Rebuild the reader over the moved buffer at the same position.
    const std::size_t consumed = chunk_.size() - other.reader_->remaining();
    reader_.emplace(std::span<const std::byte>(chunk_));
    reader_->read(consumed);
  }
}

template <typename R>
MapIterator<R>::~MapIterator() {
  if (core_ != nullptr) internal::forget_job(*core_, job_);
}

template <typename R>
std::optional<R> MapIterator<R>::next_until(
    const internal::Deadline& deadline) {
  if (core_ == nullptr) return std::nullopt;
  while (left_in_chunk_ == 0) {
    auto chunk = internal::next_chunk(*core_, job_, deadline);
    if (!chunk) {
      internal::forget_job(*core_, job_);
      core_ = nullptr;
      return std::nullopt;
    }
    chunk_ = std::move(chunk->payload);
    reader_.emplace(std::span<const std::byte>(chunk_));
    left_in_chunk_ = chunk->count;
  }
  --left_in_chunk_;
  return Codec<R>::decode(*reader_);
}

template <typename R>
std::optional<R> MapIterator<R>::next() {
  return next_until(internal::Deadline());
}

template <typename R>
std::optional<R> MapIterator<R>::next(std::chrono::nanoseconds timeout) {
  return next_until(internal::Deadline::after(timeout));
}

template <typename R>
AsyncResult<R>::AsyncResult(AsyncResult&& other) noexcept
    : core_(std::exchange(other.core_, nullptr)),
      job_(other.job_),
      value_(std::move(other.value_)),
      error_(std::move(other.error_)) {}

template <typename R>
AsyncResult<R>::~AsyncResult() {
  if (core_ != nullptr && !value_ && !error_)
    internal::forget_job(*core_, job_);
}

template <typename R>
bool AsyncResult<R>::settle(const internal::Deadline& deadline) {
  if (value_ || error_) return true;
  if (core_ == nullptr) throw std::logic_error("AsyncResult: moved from");
  try {
    auto chunk = internal::next_chunk(*core_, job_, deadline);
    if (!chunk) throw PoolError("AsyncResult: the task produced no result");
    Reader reader(chunk->payload);
    value_ = Codec<R>::decode(reader);
  } catch (const TimeoutError&) {
    return false;
  } catch (...) {
    error_ = std::current_exception();
  }
  internal::forget_job(*core_, job_);
  return true;
}

template <typename R>
const R& AsyncResult<R>::get() {
  settle(internal::Deadline());
  if (error_) std::rethrow_exception(error_);
  return *value_;
}

template <typename R>
const R& AsyncResult<R>::get(std::chrono::nanoseconds timeout) {
  if (!settle(internal::Deadline::after(timeout))) {
    throw TimeoutError("AsyncResult::get: not ready within the timeout");
  }
  if (error_) std::rethrow_exception(error_);
  return *value_;
}

template <typename R>
bool AsyncResult<R>::ready() {
  return settle(internal::Deadline::now());
}

template <typename R>
bool AsyncResult<R>::successful() {
  if (!ready())
    throw std::logic_error("AsyncResult::successful: result is not ready");
  return !error_;
}

template <typename R>
void AsyncResult<R>::wait() {
  settle(internal::Deadline());
}

template <typename R>
bool AsyncResult<R>::wait(std::chrono::nanoseconds timeout) {
  return settle(internal::Deadline::after(timeout));
}

}  // namespace mp

#endif  // MPBENCH_LIB_POOL_H_
