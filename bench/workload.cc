#include "bench/workload.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <tuple>
#include <utility>

#include "bench/faults.h"
#include "benchmark/benchmark.h"

namespace mp::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point begin) {
  return std::chrono::duration<double>(Clock::now() - begin).count();
}

// BM_SerialMap's time for (workload, n), measured once per process after
// prepare(n): the numerator of every `speedup`. The median of at least 3
// runs and 0.2 s, like one BM_SerialMap result.
double serial_seconds(Workload& workload, std::size_t n) {
  static std::map<std::pair<std::string, std::size_t>, double> cache;
  const auto key = std::make_pair(workload.name(), n);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::vector<double> runs;
  double total = 0;
  while (runs.size() < 3 || total < 0.2) {
    const auto begin = Clock::now();
    workload.serial();
    runs.push_back(seconds_since(begin));
    total += runs.back();
  }
  std::nth_element(runs.begin(), runs.begin() + runs.size() / 2, runs.end());
  return cache[key] = runs[runs.size() / 2];
}

// Times `body` (one map) per iteration, then: minor_faults of this process
// and `peers`, the results checked against the serial loop's, items/s, and
// `speedup` against the serial loop.
template <typename Body>
void run_map(benchmark::State& state, Workload& workload, std::size_t n,
             double serial, const std::vector<pid_t>& peers, bool ordered,
             Body body) {
  mpbench::MinorFaults faults(peers);
  const auto begin = Clock::now();
  for (auto _ : state) body();
  const double elapsed = seconds_since(begin);
  faults.report(state);
  if (!workload.verify(ordered)) {
    state.SkipWithError("results differ from the serial map's");
    return;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
  if (state.iterations() > 0 && elapsed > 0)
    state.counters["speedup"] =
        serial * static_cast<double>(state.iterations()) / elapsed;
}

// Runs `bench` and turns anything it throws into SkipWithError, so one
// failing row does not end the run.
template <typename Bench>
void guarded(benchmark::State& state, Bench bench) {
  try {
    bench();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

std::string chunk_name(std::size_t chunksize) {
  return chunksize == 0 ? "default" : std::to_string(chunksize);
}

void add(const std::string& name,
         std::function<void(benchmark::State&)> bench) {
  benchmark::RegisterBenchmark(name.c_str(), std::move(bench))
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace

void warm_until_steady(const std::vector<pid_t>& peers,
                       const std::function<void()>& body) {
  const auto begin = Clock::now();
  for (int calls = 0; calls < 64 && seconds_since(begin) < 0.25; ++calls) {
    const std::uint64_t before = mpbench::minor_faults_now(peers);
    body();
    if (mpbench::minor_faults_now(peers) == before) return;
  }
}

namespace {

std::vector<std::shared_ptr<Workload>>& registered_workloads() {
  static std::vector<std::shared_ptr<Workload>> alive;
  return alive;
}

}  // namespace

void release_workloads() {
  for (const std::shared_ptr<Workload>& w : registered_workloads())
    w->release();
  ::malloc_trim(0);
}

void register_workload(std::shared_ptr<Workload> workload,
                       const MapGrid& grid) {
  Workload* w = workload.get();
  registered_workloads().push_back(std::move(workload));

  for (std::size_t n : grid.items) {
    const std::string base = w->name() + "/items:" + std::to_string(n);
    // The three serial loops.
    using Method = void (Workload::*)();
    for (auto [family, method] :
         {std::pair<const char*, Method>{"BM_SerialMap/", &Workload::serial},
          {"BM_SerialMapPointer/", &Workload::serial_pointer},
          {"BM_SerialMapInto/", &Workload::serial_into}}) {
      add(family + base, [w, n, method](benchmark::State& state) {
        guarded(state, [&] {
          w->prepare(n);
          const double serial = serial_seconds(*w, n);
          run_map(state, *w, n, serial, {}, true, [&] { (w->*method)(); });
        });
      });
    }

    std::vector<std::size_t> chunksizes;
    for (std::size_t c : grid.chunksizes) {
      chunksizes.push_back(c);
      if (c >= n) break;
    }
    if (grid.default_chunksize) chunksizes.push_back(0);
    for (std::size_t c : chunksizes) {
      for (std::size_t workers : grid.workers) {
        const std::string args = base + "/chunksize:" + chunk_name(c) +
                                 "/workers:" + std::to_string(workers);
        // Pool.map (ordered results) and imap_unordered.
        using PoolMethod = void (Workload::*)(Pool&, std::size_t);
        for (auto [family, method, ordered] :
             {std::tuple<const char*, PoolMethod, bool>{
                  "BM_PoolMap/", &Workload::pool_map, true},
              {"BM_PoolImapUnordered/", &Workload::pool_imap_unordered,
               false}}) {
          add(family + args, [=](benchmark::State& state) {
            guarded(state, [&] {
              w->prepare(n);
              const double serial = serial_seconds(*w, n);
              Pool pool(w->pool_options(workers, c));
              // Steady state, as for BM_PoolMapInto below: the rings' first
              // laps are the pool's set-up, so minor_faults counts what a
              // call touches anew (the fresh result vector's pages).
              warm_until_steady(pool.worker_pids(),
                                [&] { (w->*method)(pool, c); });
              run_map(state, *w, n, serial, pool.worker_pids(), ordered,
                      [&] { (w->*method)(pool, c); });
            });
          });
        }
        add("BM_ForkMap/" + args, [=](benchmark::State& state) {
          guarded(state, [&] {
            w->prepare(n);
            const double serial = serial_seconds(*w, n);
            run_map(state, *w, n, serial, {}, true,
                    [&] { w->fork_map(workers, c); });
          });
        });
        add("BM_ThreadPoolMap/" + args, [=](benchmark::State& state) {
          guarded(state, [&] {
            w->prepare(n);
            const double serial = serial_seconds(*w, n);
            auto threads = w->thread_pool(workers);
            const auto map = [&] { threads->map(c); };
            warm_until_steady({}, map);
            run_map(state, *w, n, serial, {}, true, map);
          });
        });
      }
    }

    // Pool.map_into over its own grid.
    if (std::find(grid.map_into_items.begin(), grid.map_into_items.end(), n) ==
        grid.map_into_items.end())
      continue;
    for (std::size_t c : grid.chunksizes) {
      for (std::size_t workers : grid.map_into_workers) {
        add("BM_PoolMapInto/" + base + "/chunksize:" + chunk_name(c) +
                "/workers:" + std::to_string(workers),
            [=](benchmark::State& state) {
              guarded(state, [&] {
                w->prepare(n);
                const double serial = serial_seconds(*w, n);
                Pool pool(w->pool_options(workers, c));
                // Steady state: the result vector and every page of the
                // rings touched (by the parent and each worker) before the
                // timed loop, so that minor_faults shows what a call
                // touches anew.
                warm_until_steady(pool.worker_pids(),
                                  [&] { w->pool_map_into(pool, c); });
                run_map(state, *w, n, serial, pool.worker_pids(), true,
                        [&] { w->pool_map_into(pool, c); });
              });
            });
      }
    }
  }
}

}  // namespace mp::bench
