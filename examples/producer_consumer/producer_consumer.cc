// Producers and consumers in separate processes over mp::Queue, the C++
// counterpart of Python's
//
//   tasks, results = multiprocessing.Queue(), multiprocessing.Queue()
//   consumers = [multiprocessing.Process(target=square, args=(tasks, results))
//                for _ in range(2)]
//
// Create the queues before starting the processes that use them: each
// forked child shares them. close() ends the stream: consumers drain what
// is left, then get() returns std::nullopt. A queue whose every consumer
// died fails put() with mp::PeerError instead of blocking for ever.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <vector>

#include "lib/process.h"
#include "lib/queue.h"

namespace {

constexpr std::int64_t kTasks = 10000;
constexpr int kConsumers = 2;

int run() {
  mp::QueueOptions small;
  small.capacity_bytes = 1 << 16;  // bytes of messages it holds (+4 each)
  mp::Queue tasks(small);
  mp::Queue results;  // default: 1 MiB

  std::vector<mp::Process> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&tasks, &results] {
      while (std::optional<std::int64_t> n = tasks.get<std::int64_t>()) {
        results.put(*n * *n);
      }
    });
    consumers.back().start();
  }

  // The producer: this process. put() blocks while the queue is full.
  for (std::int64_t n = 1; n <= kTasks; ++n) tasks.put(n);
  tasks.close();

  std::int64_t sum = 0;
  for (std::int64_t i = 0; i < kTasks; ++i) {
    sum += results.get<std::int64_t>().value();
  }
  for (mp::Process& p : consumers) {
    p.join();
    if (p.exitcode() != 0) {
      std::fprintf(stderr, "producer_consumer: %s exited with %d\n",
                   p.name().c_str(), p.exitcode().value_or(-1));
      return 1;
    }
  }
  const std::int64_t expected = kTasks * (kTasks + 1) * (2 * kTasks + 1) / 6;
  if (sum != expected) {
    std::fprintf(stderr,
                 "producer_consumer: sum of squares %lld, expected %lld\n",
                 static_cast<long long>(sum), static_cast<long long>(expected));
    return 1;
  }
  std::printf(
      "producer_consumer: %lld squares by %d consumer processes, sum %lld\n",
      static_cast<long long>(kTasks), kConsumers, static_cast<long long>(sum));
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {  // mp::PeerError, mp::OsError, ...
    std::fprintf(stderr, "producer_consumer: %s\n", e.what());
    return 1;
  }
}
