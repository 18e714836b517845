// When does a process pool's map beat a plain serial map, and why?
//
// Workloads (bench/workload.h registers each one's serial, Pool, fork_map
// and thread-pool rows; every map's results are checked against the serial
// loop's after its timed loop):
//   double            x * 2 on 64-bit integers (seed 002's do_calculation):
//                     all dispatch, no work
//   sha512_inherited  SHA-512 (OpenSSL libcrypto) of a 64 KiB buffer per item;
//                     the buffers exist before the pool forks, the item is
//                     an index
//   sha512_sent       the same, with the 64 KiB buffer sent as the item
//   sleep             a 1 ms sleep per item (seed 000's test): latency-bound
// Families besides workload.h's (real time; items_per_second; minor_faults
// per iteration, workers included):
//   BM_RawRingPoolMap/double/items:N/chunksize:C/workers:W   the pool's raw
//       limit: forked workers over SPSC rings of 8-byte records, x * 2
//       inlined, output reused (bench/ring_pool.h); what Pool.map is
//       measured against, as the raw pipe is for Pipe
//   BM_PoolCreate/workers:W, BM_PoolTeardown/workers:W (close + join),
//   BM_PoolCreate/start:M/workers:W/rss_mib:N (workers started with
//       StartMethod M while this process holds N MiB of ballast,
//       bench/ballast.h), BM_PoolMap/double/items:10000/chunksize:64/
//       workers:2/start:M (one workload under each start method),
//   BM_ApplyAsyncRoundTrip (one apply_async(...).get() on a 1-worker pool)
// Pools and workers are started outside the timed loop.

#include "lib/pool.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/ballast.h"
#include "bench/faults.h"
#include "bench/ring_pool.h"
#include "bench/workload.h"
#include "benchmark/benchmark.h"
#include "lib/error.h"
#include "lib/fork_map.h"
#include "lib/forkserver.h"
#include "lib/start_method.h"

namespace mp::bench {
namespace {

using Digest = std::array<unsigned char, 64>;
constexpr std::size_t kBufferBytes = 64 * 1024;

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

// SHA-512 fetched from OpenSSL's providers once per process, not per digest
// (EVP_sha512() makes every EVP_Digest look the implementation up again, a
// few microseconds of an 85 us digest of 64 KiB here), as CPython's hashlib
// keeps the ones it has fetched. Null if the fetch failed.
const EVP_MD* sha512_method() {
  static EVP_MD* const method = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  return method;
}

Digest sha512(const std::uint8_t* data, std::size_t size) {
  const EVP_MD* method = sha512_method();
  if (method == nullptr)
    throw std::runtime_error("EVP_MD_fetch(SHA512) failed");
  Digest digest{};
  unsigned int length = 0;
  if (EVP_Digest(data, size, digest.data(), &length, method, nullptr) != 1 ||
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
// Takes a span, so that Pool's workers read the sent buffer where it arrived
// (in the task ring) rather than decoding a copy of it first.
Digest sha512_of_buffer(std::span<const std::uint8_t> buffer) {
  return sha512(buffer.data(), buffer.size());
}
std::int64_t sleep_1ms(const std::int64_t& x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return x;
}

std::vector<std::int64_t> indices(std::size_t n) {
  std::vector<std::int64_t> items(n);
  std::iota(items.begin(), items.end(), 0);
  return items;
}

// --- Start methods
// ------------------------------------------------------------ Rows run in
// random order (scripts/bench interleaves them), so a row that forks from this
// process (pool creation and teardown, the fork server's start) first sheds
// what earlier rows left: the workloads' inputs and results, the SHA-512
// buffers (64 MiB for 1,024 items; the next sha512 row makes them again before
// its pool forks), ballast, freed heap. Otherwise "rss_mib:0" would copy the
// page tables of whatever the last map row held (45 MiB after a map of
// 1,000,000 doubles: creation of a 2-worker fork pool 170 us -> 830 us; 74 MiB
// in a full run: 1.6 ms). Outside timing; `parent_rss_mib` reports what this
// process holds while the row runs.

void shed_parent_memory() {
  std::vector<std::vector<std::uint8_t>>().swap(g_buffers);
  release_workloads();  // trims the heap, the buffers' included
  hold_ballast(0);
}

// This process's resident memory in MiB (/proc/self/statm).
double resident_mib() {
  std::FILE* statm = std::fopen("/proc/self/statm", "r");
  if (statm == nullptr)
    mp::internal::throw_os_error("fopen /proc/self/statm", errno);
  long size = 0, resident = 0;
  const int read = std::fscanf(statm, "%ld %ld", &size, &resident);
  std::fclose(statm);
  if (read != 2)
    throw std::runtime_error("/proc/self/statm: unexpected format");
  return static_cast<double>(resident) *
         static_cast<double>(::sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// The fork server is started with no ballast and no workload held, as a
// program starts it at the top of main.
bool small_fork_server(benchmark::State& state) {
  try {
    if (!ForkServer::running()) {
      shed_parent_memory();
      ForkServer::start();
    }
    return true;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return false;
  }
}

// Arguments: workers, rss_mib (ballast held by this process while pools are
// made; released afterwards, so that no later row carries it).

// Times the constructor of Pool(options) per iteration (manual time); close
// and join follow outside the timed part.
void time_pool_creation(benchmark::State& state, const PoolOptions& options) {
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
}

void PoolCreateStart(benchmark::State& state, StartMethod method) {
  if (method == StartMethod::forkserver && !small_fork_server(state)) return;
  PoolOptions options;
  options.workers = static_cast<int>(state.range(0));
  options.start = method;
  double parent_mib = 0;
  try {
    shed_parent_memory();
    hold_ballast(static_cast<std::size_t>(state.range(1)));
    parent_mib = resident_mib();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  mpbench::MinorFaults faults(method == StartMethod::forkserver
                                  ? std::vector<pid_t>{ForkServer::pid()}
                                  : std::vector<pid_t>{});
  faults.start();
  time_pool_creation(state, options);
  faults.report(state);
  hold_ballast(0);
  state.counters["parent_rss_mib"] = parent_mib;
  state.SetItemsProcessed(state.iterations());
}

// Pool.map of x * 2 over 10,000 items, chunksize 64, 2 workers started with
// `method`; the pool is made outside the timed loop.
void PoolMapStart(benchmark::State& state, StartMethod method) {
  if (method == StartMethod::forkserver && !small_fork_server(state)) return;
  constexpr std::size_t kItems = 10'000;
  constexpr std::size_t kChunksize = 64;
  try {
    const std::vector<std::int64_t> items = indices(kItems);
    PoolOptions options;
    options.workers = 2;
    options.start = method;
    Pool pool(options);
    std::vector<std::int64_t> out = pool.map(twice, items, kChunksize);
    mpbench::MinorFaults faults(pool.worker_pids());
    for (auto _ : state) {
      out = pool.map(twice, items, kChunksize);
      benchmark::DoNotOptimize(out.data());
    }
    faults.report(state);
    for (std::size_t i = 0; i < kItems; ++i) {
      if (out[i] != twice(items[i])) {
        state.SkipWithError("results differ from x * 2");
        return;
      }
    }
    state.SetItemsProcessed(state.iterations() *
                            static_cast<std::int64_t>(kItems));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

const bool start_methods_registered = [] {
  for (StartMethod method :
       {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    const std::string start = "/start:" + std::string(to_string(method));
    benchmark::RegisterBenchmark(("BM_PoolCreate" + start).c_str(),
                                 PoolCreateStart, method)
        ->ArgNames({"workers", "rss_mib"})
        ->ArgsProduct({{1, 2}, {0, 2048}})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  for (StartMethod method :
       {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    benchmark::RegisterBenchmark(
        ("BM_PoolMap/double/items:10000/chunksize:64/workers:2/start:" +
         std::string(to_string(method)))
            .c_str(),
        PoolMapStart, method)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

MapGrid grid(std::vector<std::size_t> items,
             std::vector<std::size_t> map_into_items = {}) {
  MapGrid g;
  g.items = std::move(items);
  g.map_into_items = std::move(map_into_items);
  return g;
}

const bool workloads_registered = [] {
  // BM_PoolMapInto on BM_RawRingPoolMap's grid.
  register_map_benchmarks<twice>(
      "double", indices, grid({100, 10'000, 1'000'000}, {10'000, 1'000'000}));
  register_map_benchmarks<sha512_of_index>(
      "sha512_inherited",
      [](std::size_t n) {
        ensure_buffers(n);  // before any pool forks: workers inherit them
        return indices(n);
      },
      grid({64, 1024}));
  // Each row's task ring is sized to hold two of its chunks
  // (Workload::pool_options), at least PoolOptions' 2 MiB: 2 MiB at the
  // default chunksize (3 buffers, mp::kDefaultChunkBytes), 256 MiB when all
  // 1,024 buffers are one chunk.
  register_map_benchmarks<sha512_of_buffer>(
      "sha512_sent",
      [](std::size_t n) {
        ensure_buffers(n);
        return std::vector<std::vector<std::uint8_t>>(
            g_buffers.begin(),
            g_buffers.begin() + static_cast<std::ptrdiff_t>(n));
      },
      grid({64, 1024}));
  register_map_benchmarks<sleep_1ms>("sleep", indices, grid({100}));
  return true;
}();

// --- The pool's raw limit ---------------------------------------------------

struct Twice {
  std::uint64_t operator()(std::uint64_t x) const {
    return static_cast<std::uint64_t>(twice(static_cast<std::int64_t>(x)));
  }
};

// Arguments: items, chunksize, workers.
void BM_RawRingPoolMap(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto chunksize = static_cast<std::size_t>(state.range(1));
  const auto workers = static_cast<std::size_t>(state.range(2));
  try {
    const std::vector<std::int64_t> items = indices(n);
    std::vector<std::int64_t> out(n, -1);
    RingPool<Twice> pool(workers, WorkerKind::kProcesses, Twice{});
    const auto map = [&] {
      pool.map(
          n, chunksize,
          [&](std::size_t i) { return static_cast<std::uint64_t>(items[i]); },
          [&](std::size_t i, std::uint64_t r) {
            out[i] = static_cast<std::int64_t>(r);
          });
    };
    warm_until_steady(pool.pids(), map);  // the rings lap, `out` is touched
    mpbench::MinorFaults faults(pool.pids());
    for (auto _ : state) map();
    faults.report(state);
    for (std::size_t i = 0; i < n; ++i) {
      if (out[i] != twice(items[i])) {
        state.SkipWithError("results differ from x * 2");
        return;
      }
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

BENCHMARK(BM_RawRingPoolMap)
    ->Name("BM_RawRingPoolMap/double")
    ->ArgNames({"items", "chunksize", "workers"})
    ->ArgsProduct({{10'000, 1'000'000}, {1, 8, 64, 512, 4096}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// A small parent, as for the start-method rows above; `parent_rss_mib` as
// there.
bool small_parent(benchmark::State& state) {
  try {
    shed_parent_memory();
    state.counters["parent_rss_mib"] = resident_mib();
    return true;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return false;
  }
}

void BM_PoolCreate(benchmark::State& state) {
  if (!small_parent(state)) return;
  PoolOptions options;
  options.workers = static_cast<int>(state.range(0));
  mpbench::MinorFaults faults;
  time_pool_creation(state, options);
  faults.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_PoolTeardown(benchmark::State& state) {
  if (!small_parent(state)) return;
  PoolOptions options;
  options.workers = static_cast<int>(state.range(0));
  mpbench::MinorFaults faults;
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
  faults.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_ApplyAsyncRoundTrip(benchmark::State& state) {
  try {
    Pool pool(1);
    std::int64_t i = 0;
    mpbench::MinorFaults faults(pool.worker_pids());
    for (auto _ : state) {
      if (pool.apply_async(twice, i).get() != 2 * i) {
        state.SkipWithError("wrong result");
        break;
      }
      ++i;
    }
    faults.report(state);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  state.SetItemsProcessed(state.iterations());
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
