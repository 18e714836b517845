// The pool's transport in its barest form, for the benchmarks' raw limit
// (BM_RawRingPoolMap) and the ring thread pool (BM_ThreadPoolMap): a
// single-producer single-consumer ring of fixed 8-byte records, and a futex
// flag a side sleeps on only after announcing it.
//
// A RecordRing lives in memory its owner provides (MAP_SHARED for forked
// peers, anywhere for threads); it is plain data, valid at the same address
// in every process forked after it was placed. Producer and Consumer are the
// two sides' private handles: each keeps its own cursor and a cached copy of
// the peer's, touches the shared cursors only when its cache runs out, and
// publishes its cursor in batches (publish()/release()), so a busy pair
// shares one cache line per batch and makes no syscall at all.
//
// Not a library primitive: no framing, no liveness (the pool using it
// checks its peers), one producer and one consumer. Nothing here throws
// except Sleeper::wait (mp::OsError naming futex).
#ifndef MPBENCH_BENCH_RING_H_
#define MPBENCH_BENCH_RING_H_

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace mp::bench {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// A futex word one waiter sleeps on: 1 while it announces that it sleeps.
// The waker checks the word after publishing, so a side that never sleeps
// is never sent a syscall. Announcement, cursor stores and the loads on
// either side are seq_cst (no lost wake-up: one side sees the other); on
// x86 that costs the publishing store's lock prefix and nothing else.
// Process-shared futex operations: works between forked processes and between
// threads.
struct Sleeper {
  std::atomic<std::uint32_t> word{0};

  // Waits until ready() is true: spins `spins` rounds of pause, then
  // announces itself and blocks in futex_wait, rechecking ready() after the
  // announcement. Returns false when `timeout` passed first (the caller
  // checks its peers and calls again). Throws mp::OsError("futex").
  template <typename Ready>
  bool wait(Ready ready, int spins, std::chrono::nanoseconds timeout) {
    for (int i = 1; i <= spins; ++i) {
      if (ready()) return true;
      cpu_relax();
      // More processes than cores (a parent and two workers on two): hand
      // the CPU to a runnable peer now and then, as mp's own spins do.
      if ((i & 63) == 0) sched_yield();
    }
    word.store(1, std::memory_order_seq_cst);
    if (ready()) {
      word.store(0, std::memory_order_relaxed);
      return true;
    }
    block(timeout);
    word.store(0, std::memory_order_relaxed);
    return ready();
  }

  // Wakes the waiter if it announced itself. Call after publishing what it
  // waits for; never throws (a failed wake leaves the waiter to its timeout).
  void wake() noexcept {
    if (word.load(std::memory_order_seq_cst) != 0 &&
        word.exchange(0, std::memory_order_relaxed) != 0)
      wake_one();
  }

 private:
  // futex_wait(word, 1) for at most `timeout`.
  void block(std::chrono::nanoseconds timeout);
  void wake_one() noexcept;
};

inline constexpr std::size_t kCacheLine = 64;

// Shared state of one ring: cursors on their own cache lines, then slots.
template <std::size_t Records>
struct RecordRing {
  static_assert((Records & (Records - 1)) == 0, "a power of two");
  static constexpr std::size_t kRecords = Records;
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};  // producer's
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};  // consumer's
  // Where the consumer sleeps for data and the producer for space; set by
  // the owner before either side starts.
  alignas(kCacheLine) Sleeper* data_waiter = nullptr;
  Sleeper* space_waiter = nullptr;
  alignas(kCacheLine) std::uint64_t slots[Records];
};

template <typename Ring>
class Producer {
 public:
  explicit Producer(Ring* ring) noexcept
      : ring_(ring),
        tail_(ring->tail.load(std::memory_order_relaxed)),
        published_(tail_),
        head_(ring->head.load(std::memory_order_acquire)) {}
  // Writes one record unless the ring is full; invisible until publish().
  bool try_push(std::uint64_t record) noexcept {
    if (tail_ - head_ == Ring::kRecords && !refresh()) return false;
    ring_->slots[tail_ & (Ring::kRecords - 1)] = record;
    ++tail_;
    return true;
  }
  bool full() noexcept { return tail_ - head_ == Ring::kRecords && !refresh(); }
  // Up to `max` free slots, contiguous, to fill and then commit() (empty
  // when the ring is full): a loop over them is a plain array loop.
  std::span<std::uint64_t> slots(std::size_t max) noexcept {
    if (tail_ - head_ == Ring::kRecords) refresh();
    const std::size_t offset = tail_ & (Ring::kRecords - 1);
    const std::size_t n = std::min(
        {max, static_cast<std::size_t>(Ring::kRecords - (tail_ - head_)),
         Ring::kRecords - offset});
    return {ring_->slots + offset, n};
  }
  // Writes the first n slots of the last slots() (invisible until publish).
  void commit(std::size_t n) noexcept { tail_ += n; }
  // Makes the records written so far visible and wakes a sleeping consumer.
  std::uint64_t unpublished() const noexcept { return tail_ - published_; }
  void publish() noexcept {
    if (published_ == tail_) return;
    published_ = tail_;
    ring_->tail.store(tail_, std::memory_order_seq_cst);
    ring_->data_waiter->wake();
  }

 private:
  bool refresh() noexcept {
    head_ = ring_->head.load(std::memory_order_seq_cst);
    return tail_ - head_ < Ring::kRecords;
  }
  Ring* ring_;
  std::uint64_t tail_;
  std::uint64_t published_;
  std::uint64_t head_;  // cached
};

template <typename Ring>
class Consumer {
 public:
  explicit Consumer(Ring* ring) noexcept
      : ring_(ring),
        head_(ring->head.load(std::memory_order_relaxed)),
        released_(head_),
        tail_(ring->tail.load(std::memory_order_acquire)) {}
  // Up to `max` published records, contiguous (empty when none is), to read
  // and then consume().
  std::span<const std::uint64_t> records(std::size_t max) noexcept {
    if (head_ == tail_) refresh();
    const std::size_t offset = head_ & (Ring::kRecords - 1);
    const std::size_t n =
        std::min({max, static_cast<std::size_t>(tail_ - head_),
                  Ring::kRecords - offset});
    return {ring_->slots + offset, n};
  }
  void consume(std::size_t n) noexcept { head_ += n; }
  // True when a published record is waiting (reads the shared tail only
  // when the cached one is used up).
  bool ready() noexcept { return head_ != tail_ || refresh(); }
  // True when a record is waiting among those already seen published.
  bool ready_cached() const noexcept { return head_ != tail_; }
  // Gives the slots read so far back to the producer and wakes it if it
  // sleeps for space.
  void release() noexcept {
    if (released_ == head_) return;
    released_ = head_;
    ring_->head.store(head_, std::memory_order_seq_cst);
    ring_->space_waiter->wake();
  }
  std::uint64_t unreleased() const noexcept { return head_ - released_; }

 private:
  bool refresh() noexcept {
    tail_ = ring_->tail.load(std::memory_order_seq_cst);
    return head_ != tail_;
  }
  Ring* ring_;
  std::uint64_t head_;
  std::uint64_t released_;
  std::uint64_t tail_;  // cached
};

}  // namespace mp::bench

#endif  // MPBENCH_BENCH_RING_H_
