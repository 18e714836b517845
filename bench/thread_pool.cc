#include "bench/thread_pool.h"

#include <algorithm>

namespace mp::bench {

ThreadPool::ThreadPool(std::size_t workers) {
  for (std::size_t i = 0; i < workers; ++i)
    threads_.emplace_back([this] { loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::run(
    std::size_t items, std::size_t chunksize,
    const std::function<void(std::size_t, std::size_t)>& body) {
  if (items == 0) return;
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return busy_ == 0; });
  body_ = &body;
  items_ = items;
  chunksize_ = chunksize;
  chunks_ = (items + chunksize - 1) / chunksize;
  next_ = 0;
  finished_ = 0;
  ++generation_;
  wake_.notify_all();
  // Wait for every thread to leave this run, so none can claim a chunk of
  // the next one with this one's parameters.
  done_.wait(lock, [&] { return finished_ == chunks_ && busy_ == 0; });
  body_ = nullptr;
}

void ThreadPool::loop() {
  std::size_t seen = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    if (finished_ == chunks_) continue;  // woke too late: that run is over
    ++busy_;
    const auto* body = body_;
    const std::size_t items = items_, chunksize = chunksize_, chunks = chunks_;
    lock.unlock();
    std::size_t done = 0;
    for (std::size_t chunk; (chunk = next_.fetch_add(1)) < chunks;) {
      const std::size_t first = chunk * chunksize;
      (*body)(first, std::min(chunksize, items - first));
      ++done;
    }
    lock.lock();
    finished_ += done;
    --busy_;
    if (finished_ == chunks_ && busy_ == 0) done_.notify_all();
  }
}

}  // namespace mp::bench
