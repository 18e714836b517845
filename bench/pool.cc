// When does a process pool's map beat a plain serial map, and why?
//
// Workloads (each result is folded into a checksum and compared with the
// serial run's, so no work can be dropped):
//   double            x * 2 on 64-bit integers (seed 002's do_calculation):
//                     all dispatch, no work
//   sha512_inherited  SHA-512 (OpenSSL libcrypto) of a 64 KiB buffer per item;
//                     the buffers exist before the pool forks, the item is
//                     an index
//   sha512_sent       the same, with the 64 KiB buffer sent as the item
//   sleep             a 1 ms sleep per item (seed 000's test): latency-bound
// Families (real time; items_per_second; `speedup` = serial time of the same
// workload and size, measured in this process, over this time):
//   BM_SerialMap/<workload>/items:N
//   BM_PoolMap/<workload>/items:N/chunksize:C/workers:W        mp::Pool::map
//   BM_PoolImapUnordered/<...>                                 imap_unordered
//   BM_ForkMap/<...>        mp::fork_map: forks W workers per call
//   BM_ThreadPoolMap/<...>  std::thread workers: parallelism without processes
//   BM_PoolCreate/workers:W, BM_PoolTeardown/workers:W (close + join),
//   BM_ApplyAsyncRoundTrip (one apply_async(...).get() on a 1-worker pool)
// Pools and thread pools are created outside the timed loop. Chunksizes past
// the first one that covers all N items add nothing and are not registered;
// `chunksize:default` is CPython's ceil(N / (4 W)).

#include "lib/pool.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "bench/thread_pool.h"
#include "benchmark/benchmark.h"
#include "lib/fork_map.h"

namespace mp::bench {
namespace {

using Digest = std::array<unsigned char, 64>;
constexpr std::size_t kBufferBytes = 64 * 1024;
constexpr std::size_t kChunksizes[] = {1, 8, 64, 512, 4096};
constexpr std::size_t kWorkers[] = {1, 2, 4, 8};

// --- Workload functions (plain functions: Pool sends code references) -------

std::vector<std::vector<std::uint8_t>>
    g_buffers;  // inherited by forked workers

void ensure_buffers(std::size_t n) {
  std::uint64_t state = 0x9E3779B97F4A7C15ull + g_buffers.size();
  while (g_buffers.size() < n) {
    std::vector<std::uint8_t> buffer(kBufferBytes);
    for (auto& byte : buffer) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      byte = static_cast<std::uint8_t>(state);
    }
    g_buffers.push_back(std::move(buffer));
  }
}

Digest sha512(const std::uint8_t* data, std::size_t size) {
  Digest digest{};
  unsigned int length = 0;
  if (EVP_Digest(data, size, digest.data(), &length, EVP_sha512(), nullptr) !=
          1 ||
      length != digest.size()) {
    throw std::runtime_error("EVP_Digest(SHA-512) failed");
  }
  return digest;
}

std::int64_t twice(const std::int64_t& x) { return x * 2; }
Digest sha512_of_index(const std::int64_t& i) {
  const auto& buffer = g_buffers[static_cast<std::size_t>(i)];
  return sha512(buffer.data(), buffer.size());
}
Digest sha512_of_buffer(const std::vector<std::uint8_t>& buffer) {
  return sha512(buffer.data(), buffer.size());
}
std::int64_t sleep_1ms(const std::int64_t& x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return x;
}

std::uint64_t fold(std::int64_t value) {
  return static_cast<std::uint64_t>(value);
}
std::uint64_t fold(const Digest& digest) {
  std::uint64_t head;
  std::memcpy(&head, digest.data(), sizeof head);
  return head;
}
template <typename R>
std::uint64_t checksum(const std::vector<R>& results) {
  std::uint64_t sum = 0;
  for (const R& r : results) sum += fold(r);
  return sum;
}

// --- Workloads
// ----------------------------------------------------------------

class Workload {
 public:
  virtual ~Workload() = default;
  virtual const char* name() const = 0;
  virtual std::vector<std::size_t> sizes() const = 0;
  virtual void prepare(std::size_t n) = 0;  // builds the items; outside timing
  virtual std::uint64_t serial() = 0;
  virtual std::uint64_t pool_map(Pool& pool, std::size_t chunksize) = 0;
  virtual std::uint64_t pool_imap_unordered(Pool& pool,
                                            std::size_t chunksize) = 0;
  virtual std::uint64_t fork_map(std::size_t workers,
                                 std::size_t chunksize) = 0;
  virtual std::uint64_t thread_map(ThreadPool& threads,
                                   std::size_t chunksize) = 0;
  virtual PoolOptions pool_options(std::size_t workers) const {
    PoolOptions options;
    options.workers = static_cast<int>(workers);
    return options;
  }
};

template <typename T, auto Fn>
class WorkloadOf : public Workload {
 public:
  std::uint64_t serial() override {
    return checksum(serial_map(Fn, std::span<const T>(items_)));
  }
  std::uint64_t pool_map(Pool& pool, std::size_t chunksize) override {
    return checksum(pool.map(Fn, std::span<const T>(items_), chunksize));
  }
  std::uint64_t pool_imap_unordered(Pool& pool,
                                    std::size_t chunksize) override {
    if (chunksize == 0)
      chunksize = default_chunksize(items_.size(), pool.workers());
    std::uint64_t sum = 0;
    for (const auto& r :
         pool.imap_unordered(Fn, std::span<const T>(items_), chunksize))
      sum += fold(r);
    return sum;
  }
  std::uint64_t fork_map(std::size_t workers, std::size_t chunksize) override {
    return checksum(
        mp::fork_map(Fn, std::span<const T>(items_), workers, chunksize));
  }
  std::uint64_t thread_map(ThreadPool& threads,
                           std::size_t chunksize) override {
    return checksum(threads.map(Fn, std::span<const T>(items_), chunksize));
  }

 protected:
  std::vector<T> items_;
};

class DoubleWorkload final : public WorkloadOf<std::int64_t, twice> {
 public:
  const char* name() const override { return "double"; }
  std::vector<std::size_t> sizes() const override {
    return {100, 10'000, 1'000'000};
  }
  void prepare(std::size_t n) override {
    items_.resize(n);
    std::iota(items_.begin(), items_.end(), 0);
  }
};

class Sha512InheritedWorkload final
    : public WorkloadOf<std::int64_t, sha512_of_index> {
 public:
  const char* name() const override { return "sha512_inherited"; }
  std::vector<std::size_t> sizes() const override { return {64, 1024}; }
  void prepare(std::size_t n) override {
    ensure_buffers(n);  // before any pool forks: workers inherit them
    items_.resize(n);
    std::iota(items_.begin(), items_.end(), 0);
  }
};

class Sha512SentWorkload final
    : public WorkloadOf<std::vector<std::uint8_t>, sha512_of_buffer> {
 public:
  const char* name() const override { return "sha512_sent"; }
  std::vector<std::size_t> sizes() const override { return {64, 1024}; }
  void prepare(std::size_t n) override {
    ensure_buffers(n);
    items_.assign(g_buffers.begin(),
                  g_buffers.begin() + static_cast<std::ptrdiff_t>(n));
  }
  PoolOptions pool_options(std::size_t workers) const override {
    PoolOptions options = Workload::pool_options(workers);
    // A chunk of all 1024 buffers is one 64 MiB message.
    options.task_queue_bytes = std::size_t{80} << 20;
    return options;
  }
};

class SleepWorkload final : public WorkloadOf<std::int64_t, sleep_1ms> {
 public:
  const char* name() const override { return "sleep"; }
  std::vector<std::size_t> sizes() const override { return {100}; }
  void prepare(std::size_t n) override {
    items_.resize(n);
    std::iota(items_.begin(), items_.end(), 0);
  }
};

std::vector<std::unique_ptr<Workload>>& workloads() {
  static auto* all = [] {
    auto* w = new std::vector<std::unique_ptr<Workload>>();
    w->push_back(std::make_unique<DoubleWorkload>());
    w->push_back(std::make_unique<Sha512InheritedWorkload>());
    w->push_back(std::make_unique<Sha512SentWorkload>());
    w->push_back(std::make_unique<SleepWorkload>());
    return w;
  }();
  return *all;
}

// The serial run of (workload, n), measured once per process: the checksum
// every parallel run must match, and the time `speedup` divides. The items
// must be prepared (prepare() below).
struct SerialReference {
  std::uint64_t checksum;
  double seconds;
};

SerialReference serial_reference(Workload& workload, std::size_t n) {
  static std::map<std::pair<std::string, std::size_t>, SerialReference> cache;
  const auto key = std::make_pair(std::string(workload.name()), n);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const std::uint64_t sum = workload.serial();  // warm-up: pages and caches
  // The median of at least 3 runs and 0.2 s, like one BM_SerialMap result.
  std::vector<double> runs;
  double total = 0;
  while (runs.size() < 3 || total < 0.2) {
    const auto begin = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(workload.serial());
    runs.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin)
            .count());
    total += runs.back();
  }
  std::nth_element(runs.begin(), runs.begin() + runs.size() / 2, runs.end());
  return cache[key] = SerialReference{sum, runs[runs.size() / 2]};
}

// `elapsed`: the timed loop's wall time, measured alongside Google
// Benchmark's real-time clock (a rate counter would print "/s" after a ratio).
void finish(benchmark::State& state, std::size_t n,
            const SerialReference& reference, double elapsed) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
  if (state.iterations() > 0 && elapsed > 0) {
    state.counters["speedup"] =
        reference.seconds * static_cast<double>(state.iterations()) / elapsed;
  }
}

// The serial reference of (workload, n), with the workload's items (and the
// buffers workers inherit) in place: call it before creating a pool, whose
// workers must be forked after the data they inherit exists.
SerialReference prepare(Workload& workload, std::size_t n) {
  workload.prepare(n);
  return serial_reference(workload, n);
}

template <typename Body>
void run_map(benchmark::State& state, const SerialReference& reference,
             std::size_t n, Body body) {
  const auto begin = std::chrono::steady_clock::now();
  try {
    for (auto _ : state) {
      const std::uint64_t sum = body();
      if (sum != reference.checksum) {
        state.SkipWithError("results differ from the serial map's");
        break;
      }
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  finish(state, n, reference,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - begin)
             .count());
}

// Creates the pool (which may fail: no processes, no shared memory) and runs
// `body` with it, reporting a failure to create it through SkipWithError.
template <typename Body>
void with_pool(benchmark::State& state, const PoolOptions& options, Body body) {
  std::unique_ptr<Pool> pool;
  try {
    pool = std::make_unique<Pool>(options);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  body(*pool);
}

// --- Registration
// --------------------------------------------------------------

std::string chunk_name(std::size_t chunksize) {
  return chunksize == 0 ? "default" : std::to_string(chunksize);
}

const bool registered = [] {
  for (auto& owned : workloads()) {
    Workload* w = owned.get();
    for (std::size_t n : w->sizes()) {
      const std::string base =
          std::string(w->name()) + "/items:" + std::to_string(n);
      benchmark::RegisterBenchmark(("BM_SerialMap/" + base).c_str(),
                                   [w, n](benchmark::State& state) {
                                     run_map(state, prepare(*w, n), n,
                                             [&] { return w->serial(); });
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);

      std::vector<std::size_t> chunksizes;
      for (std::size_t c : kChunksizes) {
        chunksizes.push_back(c);
        if (c >= n) break;
      }
      chunksizes.push_back(0);
      for (std::size_t c : chunksizes) {
        for (std::size_t workers : kWorkers) {
          const std::string args = base + "/chunksize:" + chunk_name(c) +
                                   "/workers:" + std::to_string(workers);
          benchmark::RegisterBenchmark(
              ("BM_PoolMap/" + args).c_str(),
              [w, n, c, workers](benchmark::State& state) {
                const SerialReference reference = prepare(*w, n);
                with_pool(state, w->pool_options(workers), [&](Pool& pool) {
                  run_map(state, reference, n,
                          [&] { return w->pool_map(pool, c); });
                });
              })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
          benchmark::RegisterBenchmark(
              ("BM_PoolImapUnordered/" + args).c_str(),
              [w, n, c, workers](benchmark::State& state) {
                const SerialReference reference = prepare(*w, n);
                with_pool(state, w->pool_options(workers), [&](Pool& pool) {
                  run_map(state, reference, n,
                          [&] { return w->pool_imap_unordered(pool, c); });
                });
              })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
          benchmark::RegisterBenchmark(
              ("BM_ForkMap/" + args).c_str(),
              [w, n, c, workers](benchmark::State& state) {
                run_map(state, prepare(*w, n), n,
                        [&] { return w->fork_map(workers, c); });
              })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
          benchmark::RegisterBenchmark(
              ("BM_ThreadPoolMap/" + args).c_str(),
              [w, n, c, workers](benchmark::State& state) {
                const SerialReference reference = prepare(*w, n);
                ThreadPool threads(workers);
                const std::size_t chunksize =
                    c == 0 ? default_chunksize(n, workers) : c;
                run_map(state, reference, n,
                        [&] { return w->thread_map(threads, chunksize); });
              })
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  return true;
}();

void BM_PoolCreate(benchmark::State& state) {
  PoolOptions options;
  options.workers = static_cast<int>(state.range(0));
  for (auto _ : state) {
    try {
      const auto begin = std::chrono::steady_clock::now();
      Pool pool(options);
      state.SetIterationTime(std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - begin)
                                 .count());
      pool.close();
      pool.join();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_PoolTeardown(benchmark::State& state) {
  PoolOptions options;
  options.workers = static_cast<int>(state.range(0));
  for (auto _ : state) {
    try {
      Pool pool(options);
      const auto begin = std::chrono::steady_clock::now();
      pool.close();
      pool.join();
      state.SetIterationTime(std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - begin)
                                 .count());
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ApplyAsyncRoundTrip(benchmark::State& state) {
  PoolOptions options;
  options.workers = 1;
  with_pool(state, options, [&](Pool& pool) {
    std::int64_t i = 0;
    try {
      for (auto _ : state) {
        if (pool.apply_async(twice, i).get() != 2 * i) {
          state.SkipWithError("wrong result");
          break;
        }
        ++i;
      }
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
    }
    state.SetItemsProcessed(state.iterations());
  });
}

BENCHMARK(BM_PoolCreate)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_PoolTeardown)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Arg(8)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ApplyAsyncRoundTrip)->UseRealTime();

}  // namespace
}  // namespace mp::bench
