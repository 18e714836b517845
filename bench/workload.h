// Benchmarking a map of your own function.
//
//   std::int64_t cube(const std::int64_t& x) { return x * x * x; }
//   const bool registered = (mp::bench::register_map_benchmarks<cube>(
//       "cube", [](std::size_t n) { return std::vector<std::int64_t>(n, 3); },
//       {.items = {10'000}, .chunksizes = {1, 64}, .workers = {2}}), true);
//
// registers, for every size N, chunksize C and worker count W of the grid
// (real time, items_per_second, `minor_faults` per iteration):
//   BM_SerialMap/<name>/items:N         the plain loop, fn inlined, fresh
//                                       result vector (what map returns)
//   BM_SerialMapPointer/<name>/items:N  the same through a function pointer
//                                       (as Pool calls fn)
//   BM_SerialMapInto/<name>/items:N     fn inlined, result vector reused
//   BM_PoolMap/<name>/items:N/chunksize:C/workers:W          mp::Pool::map
//   BM_PoolImapUnordered/<...>           Pool::imap_unordered
//   BM_PoolMapInto/<...>                 Pool::map_into, the result vector
//                                        reused (its own grid: map_into_*)
//   BM_ForkMap/<...>                     mp::fork_map (forks W per call)
//   BM_ThreadPoolMap/<...>               RingPool on threads (ring_pool.h)
// with `speedup` = BM_SerialMap's time (measured once per process) over
// this time. Pools are started outside the timed loop, and called untimed
// until a call faults in no new page (their rings have lapped, the heap
// holds a fresh result vector), at most 64 calls; the timed loop runs
// the map alone, and its last results are checked against the serial
// loop's after the loop (SkipWithError when they differ). Chunksizes past
// the first that covers all N items add nothing and are skipped;
// `chunksize:default` is mp::default_chunksize: CPython's ceil(N / (4 W)),
// lowered so that a chunk carries at most mp::kDefaultChunkBytes.
//
// fn: a plain function R fn(const T&) (Pool sends code references, so no
// closures), or R fn(std::span<const E>) for items std::vector<E> (Pool's
// workers pass a view of the task message, lib/pool.h), R copyable and
// ==-comparable (and < for imap_unordered's check; without < only the count is
// checked). The items are made by make_items(N) once per size before any pool
// or worker of that size starts, so workers inherit whatever make_items set up.
// Call before benchmark::Initialize (e.g. from a static initialiser); not
// thread-safe. The ring thread pool sends 8-byte trivially copyable items and
// results by value and anything else by index into the shared vectors.
#ifndef MPBENCH_BENCH_WORKLOAD_H_
#define MPBENCH_BENCH_WORKLOAD_H_

#include <sys/types.h>

#include <algorithm>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench/ring_pool.h"
#include "lib/fork_map.h"
#include "lib/pool.h"

namespace mp::bench {

struct MapGrid {
  std::vector<std::size_t> items;
  std::vector<std::size_t> chunksizes = {1, 8, 64, 512, 4096};
  bool default_chunksize = true;  // also chunksize:default
  std::vector<std::size_t> workers = {1, 2, 4, 8};
  // BM_PoolMapInto rows: these sizes and worker counts, with `chunksizes`
  // (no default); none unless asked for.
  std::vector<std::size_t> map_into_items;
  std::vector<std::size_t> map_into_workers = {1, 2};
};

// A map benchmark's subject, type-erased; WorkloadOf below implements it.
// Each map method runs one map and keeps its results for verify().
class Workload {
 public:
  // Runs one map of the workload on ring-pool threads; made by
  // Workload::thread_pool outside the timed loop.
  class ThreadMap {
   public:
    virtual ~ThreadMap() = default;
    virtual void map(std::size_t chunksize) = 0;
  };

  virtual ~Workload() = default;
  virtual const std::string& name() const = 0;
  // Makes the items of size n (no-op when they exist) and the serial
  // reference results. Outside timing; before pools of this size start.
  virtual void prepare(std::size_t n) = 0;
  // The options of a row's Pool: the workload's, with `workers`, and a
  // task ring that holds two of the row's chunks (one chunk travels as one
  // message, see PoolOptions::task_queue_bytes; with room for the next, a
  // worker starts on it while its results travel) when the workload's own
  // is smaller. Call after prepare().
  virtual PoolOptions pool_options(std::size_t workers,
                                   std::size_t chunksize) const = 0;
  virtual void serial() = 0;
  virtual void serial_pointer() = 0;
  virtual void serial_into() = 0;
  virtual void pool_map(Pool& pool, std::size_t chunksize) = 0;
  virtual void pool_imap_unordered(Pool& pool, std::size_t chunksize) = 0;
  // Pool::map_into the results of the last map (reused, resized to N).
  virtual void pool_map_into(Pool& pool, std::size_t chunksize) = 0;
  virtual void fork_map(std::size_t workers, std::size_t chunksize) = 0;
  virtual std::unique_ptr<ThreadMap> thread_pool(std::size_t workers) = 0;
  // The last map's results equal the serial loop's (as a multiset when
  // !ordered).
  virtual bool verify(bool ordered) const = 0;
  // Frees the items and results; the next prepare() makes them again.
  virtual void release() = 0;
};

// Registers the serial, Pool, fork_map and thread-pool rows of `workload`
// over `grid` (see the top of this file). The workload lives as long as the
// process.
void register_workload(std::shared_ptr<Workload> workload, const MapGrid& grid);

// Releases every registered workload's items and results and hands the freed
// heap back to the system (malloc_trim), so that a row which forks from this
// process (BM_PoolCreate, BM_PoolTeardown) copies the page tables of a small
// parent, whatever rows ran before it (rows run in random order). Outside
// timing.
void release_workloads();

// Calls `body` (one map) until one call faults in no new page in this
// process or `peers` (a pool's rings lap after a few calls), at most 64
// calls or about a quarter of a second (a row of slow calls, SHA-512 maps,
// pays no more); at least once. Outside timing, before a row's timed loop.
void warm_until_steady(const std::vector<pid_t>& peers,
                       const std::function<void()>& body);

namespace workload_internal {
// The items a function of A maps: A's value type, and std::vector<E> for a
// function that takes std::span<const E> (which Pool's workers pass as a view
// of the task message).
template <typename A>
struct ItemOf {
  using type = std::decay_t<A>;
};
template <typename E>
struct ItemOf<std::span<const E>> {
  using type = std::vector<E>;
};
template <auto Fn>
struct Signature;
template <typename R, typename A, R (*F)(A)>
struct Signature<F> {
  using Arg = A;
  using Item = typename ItemOf<std::decay_t<A>>::type;
  using Result = std::decay_t<R>;
};
// Read through a volatile: the compiler cannot see which function it is.
template <auto Fn>
inline decltype(Fn) volatile opaque = Fn;
}  // namespace workload_internal

template <typename T, auto Fn>
class WorkloadOf : public Workload {
 public:
  using R = typename workload_internal::Signature<Fn>::Result;

  WorkloadOf(std::string name,
             std::function<std::vector<T>(std::size_t)> make_items,
             PoolOptions options = {})
      : name_(std::move(name)),
        make_items_(std::move(make_items)),
        options_(std::move(options)) {}

  const std::string& name() const override { return name_; }
  void prepare(std::size_t n) override {
    if (prepared_ && items_.size() == n) return;
    items_ = make_items_(n);
    if (items_.size() != n)
      throw std::invalid_argument(name_ + ": make_items(" + std::to_string(n) +
                                  ") made " + std::to_string(items_.size()) +
                                  " items");
    serial();
    reference_ = results_;
    prepared_ = true;
  }
  // Pool::map's default chunksize for these items (mp::default_chunksize
  // with their mean size), which the other rows at chunksize:default use.
  std::size_t map_default_chunksize(std::size_t workers) const {
    return default_chunksize(
        items_.size(), workers,
        internal::mean_encoded_bytes(std::span<const T>(items_)));
  }
  PoolOptions pool_options(std::size_t workers,
                           std::size_t chunksize) const override {
    PoolOptions options = options_;
    options.workers = static_cast<int>(workers);
    if (items_.empty()) return options;
    // The first chunk, encoded (a workload's items are alike in size), twice,
    // plus room for headers.
    const std::size_t c =
        chunksize != 0 ? chunksize : map_default_chunksize(workers);
    std::vector<std::byte> chunk;
    Writer writer(chunk);
    for (std::size_t i = 0; i < std::min(c, items_.size()); ++i)
      Codec<T>::encode(items_[i], writer);
    options.task_queue_bytes = std::max(options.task_queue_bytes,
                                        std::bit_ceil(2 * chunk.size() + 4096));
    return options;
  }

  void serial() override {
    serial_with([](const T& item) { return Fn(item); });
  }
  void serial_pointer() override { serial_with(workload_internal::opaque<Fn>); }
  void serial_into() override {
    if (results_.size() != items_.size()) serial();
    for (std::size_t i = 0; i < items_.size(); ++i) results_[i] = Fn(items_[i]);
  }
  void pool_map(Pool& pool, std::size_t chunksize) override {
    results_ = pool.map(kInlined, std::span<const T>(items_), chunksize);
  }
  void pool_map_into(Pool& pool, std::size_t chunksize) override {
    if constexpr (std::is_default_constructible_v<R>) {
      results_.resize(items_.size());
      pool.map_into(kInlined, std::span<const T>(items_),
                    std::span<R>(results_), chunksize);
    } else {
      throw std::logic_error(name_ +
                             ": map_into needs a default-constructible result");
    }
  }
  void pool_imap_unordered(Pool& pool, std::size_t chunksize) override {
    if (chunksize == 0) chunksize = map_default_chunksize(pool.workers());
    results_.clear();
    for (auto& r :
         pool.imap_unordered(kInlined, std::span<const T>(items_), chunksize))
      results_.push_back(std::move(r));
  }
  void fork_map(std::size_t workers, std::size_t chunksize) override {
    results_ = mp::fork_map(Fn, std::span<const T>(items_), workers, chunksize);
  }
  std::unique_ptr<ThreadMap> thread_pool(std::size_t workers) override {
    return std::make_unique<RingThreadMap>(this, workers);
  }
  bool verify(bool ordered) const override {
    if (ordered || !std::totally_ordered<R>) {
      if (!ordered) return results_.size() == reference_.size();
      return results_ == reference_;
    }
    if constexpr (std::totally_ordered<R>) {
      std::vector<R> a = results_, b = reference_;
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      return a == b;
    }
    return false;
  }

 private:
  // Fn as a captureless lambda: the pool calls it through its type, so its
  // workers inline it into their chunk loop, as the serial loop and the raw
  // ring pool's workers do.
  // It takes what Fn takes, so that a span parameter still reaches Pool.
  static constexpr auto kInlined =
      [](typename workload_internal::Signature<Fn>::Arg item) {
        return Fn(item);
      };

  // The plain loop into a fresh vector; `fn` a lambda the compiler inlines
  // or a pointer it cannot see through.
  template <typename F>
  void serial_with(F fn) {
    if constexpr (std::is_default_constructible_v<R>) {
      std::vector<R> out(items_.size());
      for (std::size_t i = 0; i < items_.size(); ++i) out[i] = fn(items_[i]);
      results_ = std::move(out);
    } else {
      results_ = mp::serial_map(fn, std::span<const T>(items_));
    }
  }

  static constexpr bool kByValue = sizeof(T) == 8 && sizeof(R) == 8 &&
                                   std::is_trivially_copyable_v<T> &&
                                   std::is_trivially_copyable_v<R>;

  // A record is the item itself (kByValue) or its index; in the latter case
  // the worker thread writes the result in place and answers the index.
  struct Kernel {
    WorkloadOf* self;
    std::uint64_t operator()(std::uint64_t record) const {
      if constexpr (kByValue) {
        return std::bit_cast<std::uint64_t>(R(Fn(std::bit_cast<T>(record))));
      } else {
        self->results_[record] = Fn(self->items_[record]);
        return record;
      }
    }
  };

  class RingThreadMap : public ThreadMap {
   public:
    RingThreadMap(WorkloadOf* self, std::size_t workers)
        : self_(self), pool_(workers, WorkerKind::kThreads, Kernel{self}) {}
    void map(std::size_t chunksize) override {
      WorkloadOf& w = *self_;
      if (w.results_.size() != w.items_.size()) w.serial();
      if (chunksize == 0) chunksize = w.map_default_chunksize(pool_.workers());
      if constexpr (kByValue) {
        pool_.map(
            w.items_.size(), chunksize,
            [&](std::size_t i) {
              return std::bit_cast<std::uint64_t>(w.items_[i]);
            },
            [&](std::size_t i, std::uint64_t r) {
              w.results_[i] = std::bit_cast<R>(r);
            });
      } else {
        pool_.map(
            w.items_.size(), chunksize,
            [](std::size_t i) { return std::uint64_t{i}; },
            [](std::size_t, std::uint64_t) {});
      }
    }

   private:
    WorkloadOf* self_;
    RingPool<Kernel> pool_;
  };

  std::string name_;
  std::function<std::vector<T>(std::size_t)> make_items_;
  PoolOptions options_;
  void release() override {
    prepared_ = false;
    std::vector<T>().swap(items_);
    std::vector<R>().swap(results_);
    std::vector<R>().swap(reference_);
  }

  bool prepared_ = false;
  std::vector<T> items_;
  std::vector<R> results_;
  std::vector<R> reference_;
};

// One call for a user's function: see the top of this file. `options`
// (workers aside) apply to every Pool of these rows.
template <auto Fn>
void register_map_benchmarks(
    std::string name,
    std::function<std::vector<typename workload_internal::Signature<Fn>::Item>(
        std::size_t)>
        make_items,
    const MapGrid& grid, PoolOptions options = {}) {
  using T = typename workload_internal::Signature<Fn>::Item;
  register_workload(
      std::make_shared<WorkloadOf<T, Fn>>(
          std::move(name), std::move(make_items), std::move(options)),
      grid);
}

}  // namespace mp::bench

#endif  // MPBENCH_BENCH_WORKLOAD_H_
