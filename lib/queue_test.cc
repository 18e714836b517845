#include "lib/queue.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/mapping.h"
#include "lib/process.h"
#include "lib/test_util.h"
#include "lib/testing/corrupt.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// Short liveness checks keep the dead-peer tests fast.
QueueOptions options(std::size_t capacity = 1 << 16,
                     std::size_t max_items = 0) {
  QueueOptions o;
  o.capacity_bytes = capacity;
  o.max_items = max_items;
  o.wait.liveness_check = 20ms;
  return o;
}

class QueueTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(QueueTest, FifoAcrossProcesses) {
  Queue q(options());
  Process producer([&] {
    for (int i = 0; i < 1000; ++i)
      q.put(std::string(i % 50, 'a' + i % 26) + std::to_string(i));
    q.close();
  });
  producer.start();
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(q.get<std::string>(),
              std::string(i % 50, 'a' + i % 26) + std::to_string(i));
  }
  EXPECT_EQ(q.get<std::string>(), std::nullopt);
  EXPECT_TRUE(q.end_of_stream());
  producer.join();
}

TEST_F(QueueTest, CloseDrainsThenEndsAndRefusesPuts) {
  Queue q(options());
  q.put(1);
  q.put(2);
  q.close();
  EXPECT_THROW(q.put(3), ClosedError);
  EXPECT_EQ(q.get<int>(), 1);
  EXPECT_FALSE(q.end_of_stream());
  EXPECT_EQ(q.get<int>(), 2);
  EXPECT_EQ(q.get<int>(), std::nullopt);
  EXPECT_EQ(q.try_get<int>(), std::nullopt);
}

TEST_F(QueueTest, CloseWakesABlockedConsumer) {
  Queue q(options());
  Process consumer([&] { return q.get<int>().has_value() ? 1 : 0; });
  consumer.start();
  std::this_thread::sleep_for(20ms);
  q.close();
  EXPECT_TRUE(consumer.join(10s));
  EXPECT_EQ(consumer.exitcode(), 0);
}

TEST_F(QueueTest, SentinelPatternFromTheSeeds) {
  Queue q(options());
  Mapping sums = Mapping::shared(2 * sizeof(std::int64_t));
  auto* sum = static_cast<std::atomic<std::int64_t>*>(sums.data());
  auto consume = [&] {
    while (true) {
      const auto item = q.get<std::int64_t>();
      if (!item || *item < 0) break;  // -1 is the sentinel
      sum->fetch_add(*item);
    }
  };
  Process a(consume), b(consume);
  a.start();
  b.start();
  for (std::int64_t i = 1; i <= 100; ++i) q.put(i);
  q.put(std::int64_t{-1});
  q.put(std::int64_t{-1});  // one sentinel per consumer
  a.join();
  b.join();
  EXPECT_EQ(sum->load(), 5050);
}

TEST_F(QueueTest, OversizedMessageIsRefusedWithNothingEnqueued) {
  Queue q(options(64));
  try {
    q.put_bytes(std::vector<std::byte>(61));
    FAIL();
  } catch (const MessageTooLong& e) {
    EXPECT_EQ(e.length(), 61u);
    EXPECT_EQ(e.limit(), 60u);
    EXPECT_THAT(e.what(),
                HasSubstr("exceeds the queue's capacity of 64 bytes"));
  }
  EXPECT_EQ(q.qsize(), 0u);
  q.put_bytes(std::vector<std::byte>(60));  // exactly fits
  EXPECT_EQ(q.qsize(), 1u);
}

TEST_F(QueueTest, BoundsInItemsAndTimeouts) {
  Queue q(options(1 << 16, 2));
  EXPECT_TRUE(q.try_put(1));
  EXPECT_TRUE(q.try_put(2));
  EXPECT_FALSE(q.try_put(3));
  EXPECT_THROW(q.put(3, 10ms), Full);
  EXPECT_EQ(q.get<int>(), 1);
  EXPECT_TRUE(q.try_put(3));
  EXPECT_EQ(q.get<int>(), 2);
  EXPECT_EQ(q.get<int>(), 3);
  EXPECT_THROW(q.get<int>(10ms), Empty);
  EXPECT_EQ(q.try_get<int>(), std::nullopt);
}

TEST_F(QueueTest, TooSmallBufferLeavesTheMessageQueued) {
  Queue q(options());
  q.put_bytes(std::vector<std::byte>(100, std::byte{7}));
  std::vector<std::byte> small(10);
  EXPECT_THROW(q.get_bytes_into(small), MessageTooLong);
  EXPECT_EQ(q.qsize(), 1u);
  auto message = q.get_bytes();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->size(), 100u);
}

// The try_ forms refuse what does not fit as the blocking forms do, and
// take nothing.
TEST_F(QueueTest, TryFormsRefuseWhatDoesNotFit) {
  QueueOptions opts = options();
  opts.wait = WaitPolicy::spin_then_block(std::chrono::microseconds(50));
  Queue q(opts);
  q.put_bytes(std::vector<std::byte>(100, std::byte{7}));
  std::vector<std::byte> small(10);
  EXPECT_THROW(q.try_get_bytes_into(small), MessageTooLong);
  EXPECT_THROW(q.try_put_bytes(std::vector<std::byte>(opts.capacity_bytes + 1)),
               MessageTooLong);
  EXPECT_EQ(q.qsize(), 1u);
  std::vector<std::byte> big(100);
  EXPECT_EQ(q.try_get_bytes_into(big), 100u);
  EXPECT_EQ(q.try_get_bytes_into(big), std::nullopt);
}

TEST_F(QueueTest, WrapsAroundWithMixedSizes) {
  Queue q(options(256));  // small ring: records wrap constantly
  Process producer([&] {
    for (int i = 0; i < 5000; ++i) q.put(std::vector<int>(i % 37, i));
    q.close();
  });
  producer.start();
  for (int i = 0; i < 5000; ++i)
    EXPECT_EQ(q.get<std::vector<int>>(), std::vector<int>(i % 37, i));
  EXPECT_EQ(q.get<std::vector<int>>(), std::nullopt);
  producer.join();
}

// `producers` processes put `per_producer` distinct items each while
// `consumers` processes take them; checks that each arrived exactly once.
void expect_each_item_exactly_once(const QueueOptions& options, int producers,
                                   int consumers, int per_producer) {
  const int total = producers * per_producer;
  Queue q(options);
  Mapping seen_memory = Mapping::shared(total * sizeof(std::atomic<int>));
  auto* seen = static_cast<std::atomic<int>*>(seen_memory.data());
  std::vector<Process> processes;
  for (int c = 0; c < consumers; ++c) {
    processes.emplace_back([&] {
      while (auto item = q.get<int>()) seen[*item].fetch_add(1);
    });
  }
  for (int p = 0; p < producers; ++p) {
    processes.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) q.put(p * per_producer + i);
    });
  }
  for (auto& process : processes) process.start();
  for (int p = 0; p < producers; ++p) processes[consumers + p].join();
  q.close();
  for (auto& process : processes) {
    process.join();
    EXPECT_EQ(process.exitcode(), 0);
  }
  for (int i = 0; i < total; ++i) ASSERT_EQ(seen[i].load(), 1) << "item " << i;
}

TEST_F(QueueTest, ManyProducersAndConsumersDeliverEachItemExactlyOnce) {
  expect_each_item_exactly_once(options(4096), 3, 3, 3000);
}

// Every wait sleeps at once (block_only), and sleeps are not cut short by
// liveness checks (an hour), so a wake-up that a put or get failed to send
// (Queue's wake_sleepers skips the system call when a wake-up is already on
// its way) would hang this test until Bazel's timeout.
TEST_F(QueueTest, SleepingProducersAndConsumersAreAlwaysWoken) {
  QueueOptions o = options(256);
  o.wait = WaitPolicy::block_only();
  o.wait.liveness_check = std::chrono::hours(1);
  expect_each_item_exactly_once(o, 2, 2, 2000);
}

// A producer that finds the queue full waits, while it spins, for room for
// more than its own record (put_impl); room for its record alone must still
// do for every form of put: a try_, a timeout shorter than the spin, and a
// blocking put once the spin is over.
TEST_F(QueueTest, RoomForOneMessageIsEnoughForEveryPut) {
  QueueOptions o = options(4096);
  o.wait = WaitPolicy::spin_then_block(20ms);
  Queue q(o);
  const std::vector<std::byte> message(60, std::byte{1});
  int queued = 0;
  while (q.try_put_bytes(message)) ++queued;
  ASSERT_GT(queued, 10);
  std::vector<std::byte> buffer(64);
  ASSERT_EQ(q.get_bytes_into(buffer), 60u);
  EXPECT_TRUE(q.try_put_bytes(message));
  ASSERT_EQ(q.get_bytes_into(buffer), 60u);
  EXPECT_NO_THROW(q.put_bytes(message, 1ms));
  ASSERT_EQ(q.get_bytes_into(buffer), 60u);
  q.put_bytes(message);
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(queued));
  EXPECT_FALSE(q.try_put_bytes(message));
}

// Consumers publish their cursor to spinning producers in batches
// (QueueShared::head_batched); room that one get made and no batch has
// published yet must still reach a producer in another process, whether it
// spins, sleeps or tries. Here the consumer takes one message from a full
// queue and then stops taking until the producer has put two more.
TEST_F(QueueTest, RoomThatNoBatchHasPublishedReachesTheProducer) {
  QueueOptions o = options(4096);
  o.wait = WaitPolicy::spin_then_block(1ms);
  Queue q(o);
  Queue done(options());
  const std::vector<std::byte> message(60, std::byte{1});
  int queued = 0;
  while (q.try_put_bytes(message)) ++queued;
  ASSERT_GT(queued, 10);
  Process consumer([&] {
    std::vector<std::byte> buffer(64);
    if (q.get_bytes_into(buffer) != 60u) _exit(1);
    if (q.get_bytes_into(buffer) != 60u) _exit(1);
    done.get<int>();  // holds back its next get until the puts are in
  });
  consumer.start();
  EXPECT_NO_THROW(q.put_bytes(message, 10s));  // spins, then sleeps
  while (!q.try_put_bytes(message)) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(queued));
  done.put(1);
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
}

TEST_F(QueueTest, JoinableQueueJoinWaitsForEveryTaskDone) {
  JoinableQueue q(options());
  Mapping done_memory = Mapping::shared(sizeof(std::atomic<int>));
  auto* done = static_cast<std::atomic<int>*>(done_memory.data());
  Process consumer([&] {
    while (auto item = q.get<int>()) {
      std::this_thread::sleep_for(1ms);
      done->fetch_add(1);
      q.task_done();
    }
  });
  consumer.set_daemon(true);
  consumer.start();
  for (int i = 0; i < 20; ++i) q.put(i);
  q.join();
  EXPECT_EQ(done->load(), 20);
  EXPECT_EQ(q.unfinished_tasks(), 0);
  q.close();
  consumer.join();
  EXPECT_THROW(q.task_done(), std::logic_error);
}

TEST_F(QueueTest, JoinWithTimeout) {
  JoinableQueue q(options());
  q.put(1);
  EXPECT_FALSE(q.join(10ms));
  ASSERT_TRUE(q.get<int>());
  q.task_done();
  EXPECT_TRUE(q.join(0ms));
}

TEST_F(QueueTest, KilledConsumerDoesNotHangTheProducer) {
  Queue q(options(64));
  Process consumer([&] {
    q.get<int>();
    for (;;) ::pause();
  });
  consumer.start();
  q.put(0);
  while (q.qsize() != 0)
    std::this_thread::yield();  // the consumer has registered
  consumer.kill();
  // Fill the queue; the put that finds no room must not wait forever.
  try {
    for (int i = 0;; ++i) q.put(i);
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("no process that could take from it is alive"));
    EXPECT_THAT(e.what(), HasSubstr("(gone)"));
  }
  consumer.join();
}

TEST_F(QueueTest, KilledProducerDoesNotHangTheConsumer) {
  Queue q(options());
  Process producer([&] {
    q.put(1);
    for (;;) ::pause();
  });
  producer.start();
  EXPECT_EQ(q.get<int>(), 1);
  producer.kill();
  EXPECT_THROW(q.get<int>(), PeerError);
  producer.join();
}

TEST_F(QueueTest, ConsumerKilledWhileHoldingTheLockIsRecovered) {
  Queue q(options());
  Process blocked(
      [&] { q.get<int>(); });  // holds the consumers' lock while it waits
  blocked.start();
  std::this_thread::sleep_for(30ms);
  blocked.kill();
  blocked.join();
  q.put(5);
  Process next([&] { return *q.get<int>(10s); });
  next.start();
  EXPECT_TRUE(next.join(20s));
  EXPECT_EQ(next.exitcode(), 5);
}

// A process killed in the middle of a copy leaves its side's lock held by a
// dead pid: the next caller on that side takes it over (after a liveness
// check) instead of waiting forever, and nothing is lost. A lock held by a
// live process is waited for: a try_ form gives up, as when full or empty.
TEST_F(QueueTest, LockOfAProcessKilledMidCopyIsTakenOver) {
  Queue q(options());
  q.put(1);
  Process gone([] { return 0; });
  gone.start();
  gone.join();
  internal::QueueTestAccess::hold_lock(q, /*consumers=*/false, gone.pid());
  internal::QueueTestAccess::hold_lock(q, /*consumers=*/true, gone.pid());
  q.put(2, 10s);
  EXPECT_EQ(q.get<int>(10s), 1);
  EXPECT_EQ(q.get<int>(10s), 2);

  internal::QueueTestAccess::hold_lock(q, /*consumers=*/false, ::getpid());
  internal::QueueTestAccess::hold_lock(q, /*consumers=*/true, ::getpid());
  EXPECT_FALSE(q.try_put(3));
  EXPECT_THROW(q.put(3, 30ms), Full);
  EXPECT_FALSE(q.try_get<int>());
  EXPECT_THROW(q.get<int>(30ms), Empty);
}

TEST_F(QueueTest, WorksWithBlockOnlyAndSpinPolicies) {
  for (auto policy :
       {WaitPolicy::block_only(), WaitPolicy::spin_then_block(200us)}) {
    QueueOptions o = options(128);
    o.wait = policy;
    Queue q(o);
    Process producer([&] {
      for (int i = 0; i < 2000; ++i) q.put(i);
      q.close();
    });
    producer.start();
    long sum = 0;
    while (auto item = q.get<int>()) sum += *item;
    producer.join();
    EXPECT_EQ(sum, 1999L * 2000 / 2);
  }
}

// A peer that scribbles over the shared ring must not make a reader copy
// out of bounds: the record's length is checked against what was published.
TEST_F(QueueTest, CorruptRecordIsRefusedNotFollowed) {
  Queue q(options(1024));
  std::vector<std::byte> ring(64, std::byte{0});
  const std::uint32_t bogus_length = 1'000'000;  // far beyond the ring
  std::memcpy(ring.data(), &bogus_length, sizeof bogus_length);
  // head at 0, tail claims 16 bytes published (count 1).
  internal::QueueTestAccess::overwrite(q, 0, (std::uint64_t{1} << 40) | 16,
                                       ring);
  try {
    q.try_get_bytes();
    FAIL();
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("corrupt queue"));
  }
}

// One Queue object shared by threads of one process (queue.h: every call may
// be made concurrently from any thread): two producer threads with typed
// puts (the encode buffer) and two consumer threads with typed gets (the
// peer registration); run under TSan and ASan too.
TEST_F(QueueTest, TwoThreadsPutAndTwoThreadsGetOnOneQueueObject) {
  Queue q(options(1 << 12));
  constexpr int kPerThread = 2000;
  std::atomic<long> sum{0};
  std::atomic<int> count{0};
  auto consume = [&] {
    while (auto s = q.get<std::string>()) {
      sum += std::stol(*s);
      ++count;
    }
  };
  auto produce = [&](int base) {
    for (int i = 0; i < kPerThread; ++i)
      q.put(std::string(i % 40, ' ') + std::to_string(base + i));
  };
  std::thread c1(consume), c2(consume);
  std::thread p1(produce, 0), p2(produce, kPerThread);
  p1.join();
  p2.join();
  q.close();
  c1.join();
  c2.join();
  EXPECT_EQ(count.load(), 2 * kPerThread);
  EXPECT_EQ(sum.load(), long{2 * kPerThread} * (2 * kPerThread - 1) / 2);
}

TEST_F(QueueTest, ReadingAnotherTypeIsADecodeErrorAndLosesNothing) {
  Queue q(options());
  q.put(std::int64_t{7});
  try {
    q.get<double>();
    FAIL() << "an int64_t read as a double must throw";
  } catch (const DecodeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not a double"));
    ASSERT_EQ(e.message().size(), sizeof(std::int64_t));
    EXPECT_EQ(decode<std::int64_t>(e.message()), 7);  // handed back
  }
  q.put(1.5);
  EXPECT_THROW(q.get<std::int64_t>(), DecodeError);
  q.put(std::vector<std::int32_t>{1, 2});
  EXPECT_THROW(q.get<std::vector<float>>(), DecodeError);
  q.put(std::string("x"));
  EXPECT_THROW(q.get<std::vector<char>>(), DecodeError);
  q.put(std::vector<std::int32_t>{1, 2});
  EXPECT_EQ(q.get<std::vector<std::int32_t>>(),
            (std::vector<std::int32_t>{1, 2}));
  // Bytes put untyped have no tag: a typed get says so.
  const std::byte raw[3] = {};
  q.put_bytes(raw);
  EXPECT_THROW(q.get<std::int32_t>(), DecodeError);
  EXPECT_EQ(q.qsize(), 0u);
}

TEST_F(QueueTest, InvalidOptionsAreRefused) {
  QueueOptions tiny;
  tiny.capacity_bytes = 4;
  EXPECT_THROW(Queue{tiny}, std::invalid_argument);
  QueueOptions huge;
  huge.capacity_bytes = std::size_t{1} << 40;
  EXPECT_THROW(Queue{huge}, std::invalid_argument);
  QueueOptions items;
  items.max_items = std::size_t{1} << 24;
  EXPECT_THROW(Queue{items}, std::invalid_argument);
}

}  // namespace
}  // namespace mp
