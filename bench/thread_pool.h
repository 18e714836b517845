// ThreadPool: the same map on std::thread workers — parallelism without any
// process cost — so the pool benchmarks can separate "parallel" from
// "processes". A reference implementation for the benchmarks, not a library
// primitive.
#ifndef MPBENCH_BENCH_THREAD_POOL_H_
#define MPBENCH_BENCH_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace mp::bench {

class ThreadPool {
 public:
  explicit ThreadPool(std::size_t workers);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs body(first, count) for every chunk of [0, items) on the workers and
  // waits for all of them. Chunks are claimed dynamically, as a process
  // pool's workers take them from a queue.
  void run(std::size_t items, std::size_t chunksize,
           const std::function<void(std::size_t, std::size_t)>& body);

  // map(fn, items) with results in order.
  template <typename T, typename F>
  auto map(F&& fn, std::span<const T> items, std::size_t chunksize) {
    std::vector<std::decay_t<std::invoke_result_t<F&, const T&>>> out(
        items.size());
    run(items.size(), chunksize, [&](std::size_t first, std::size_t count) {
      for (std::size_t i = first; i < first + count; ++i) out[i] = fn(items[i]);
    });
    return out;
  }

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::size_t, std::size_t)>* body_ = nullptr;
  std::size_t items_ = 0, chunksize_ = 1, chunks_ = 0;
  std::atomic<std::size_t> next_{0};
  std::size_t finished_ = 0;
  std::size_t busy_ = 0;  // threads inside a run
  std::size_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mp::bench

#endif  // MPBENCH_BENCH_THREAD_POOL_H_
