// fork_map: one parallel map over data the workers inherit.
//
//   std::vector<Image> images = load();            // no copy to the workers
//   auto sizes = mp::fork_map([&](const Image& im) { return im.size(); },
//                             std::span<const Image>(images), 4);
//
// Forks `workers` processes for this one call: the items (and anything else
// fn reads) are inherited copy-on-write, and only results travel back, one
// message per chunk through an mp::Queue. fn may be any callable, closures
// included. Results come back in item order. Blocks until every chunk is
// back or the call has failed; every worker is reaped before it returns or
// throws.
//
// Errors: an exception of any type thrown by fn (`throw 42;` included) fails
// the call with mp::TaskError naming the one item whose call threw; the
// remaining workers stop taking chunks. A worker that dies fails it with
// mp::WorkerLost naming the lost chunk's items (also when the program
// reaps children itself: "exit status unavailable (reaped elsewhere)"). A
// chunk whose results do not fit one message of the result queue fails it
// with mp::MessageTooLong (raise result_queue_bytes or lower chunksize).
//
// Start methods: fork_map is fork. While the process-wide start method
// (mp::set_start_method) is forkserver or spawn, it throws std::logic_error
// rather than fork a threaded program (mp::Pool with PoolOptions::start is
// the way to map with workers that are not forks).
// mp::OsError when processes or shared memory cannot be created.
#ifndef MPBENCH_LIB_FORK_MAP_H_
#define MPBENCH_LIB_FORK_MAP_H_

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

#include "lib/codec.h"
#include "lib/error.h"
#include "lib/pool.h"
#include "lib/pool_internal.h"
#include "lib/wait.h"

namespace mp {

struct ForkMapOptions {
  // Worker processes; 0 means std::thread::hardware_concurrency().
  std::size_t workers = 0;
  // Items per chunk; 0 picks CPython's default (mp::default_chunksize).
  std::size_t chunksize = 0;
  // Capacity of the result queue: one chunk's results must fit in one
  // message of it (mp::MessageTooLong otherwise). At least 4096
  // (std::invalid_argument).
  std::size_t result_queue_bytes = 32 << 20;
  WaitPolicy wait = WaitPolicy::spin_then_block(std::chrono::microseconds(20));
};

namespace internal {
// Runs the `count` items from `first` in a forked worker, encoding results
// into `out`; false (with `failure` set) when fn threw.
using ForkMapRunner =
    std::function<bool(std::uint64_t first, std::uint64_t count,
                       std::vector<std::byte>& out, ChunkFailure& failure)>;
// Forks the workers, which take chunks from a shared counter and send back
// encoded results; returns every chunk's payload in order. Throws as
// fork_map does.
std::vector<std::vector<std::byte>> fork_map_chunks(
    std::size_t items, const ForkMapOptions& options, const ForkMapRunner& run);
}  // namespace internal

// fn(item) for every item of `items` (any contiguous range).
template <internal::ItemRange Range, typename F>
requires std::invocable < F&, const internal::item_of<Range>
& > auto fork_map(F&& fn, Range&& range, ForkMapOptions options) {
  using T = internal::item_of<Range>;
  using R = internal::result_of<F, T>;
  const std::span<const T> items = internal::as_items(range);
  if (options.workers == 0)
    options.workers = std::max(1u, std::thread::hardware_concurrency());
  if (options.chunksize == 0)
    options.chunksize = default_chunksize(items.size(), options.workers);
  const auto payloads = internal::fork_map_chunks(
      items.size(), options,
      [&](std::uint64_t first, std::uint64_t count, std::vector<std::byte>& out,
          internal::ChunkFailure& failure) {
        Writer writer(out);
        return internal::run_chunk(count, failure, [&](std::uint64_t i) {
          Codec<R>::encode(fn(items[first + i]), writer);
        });
      });
  std::vector<R> out;
  out.reserve(items.size());
  for (const auto& payload : payloads) {
    Reader reader(payload);
    while (reader.remaining() > 0) out.push_back(Codec<R>::decode(reader));
  }
  return out;
}

// The same with the common options as arguments.
template <internal::ItemRange Range, typename F>
requires std::invocable < F&, const internal::item_of<Range>
& > auto fork_map(F&& fn, Range&& items, std::size_t workers,
                  std::size_t chunksize = 0,
                  WaitPolicy policy = ForkMapOptions{}.wait) {
  ForkMapOptions options;
  options.workers = workers;
  options.chunksize = chunksize;
  options.wait = policy;
  return fork_map(std::forward<F>(fn), std::forward<Range>(items), options);
}

}  // namespace mp

#endif  // MPBENCH_LIB_FORK_MAP_H_
