#include "lib/queue.h"

#include <pthread.h>

#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

#include "lib/corrupt_for_testing.h"
#include "lib/slowdown.h"

namespace mp {
namespace internal {

// The queue's shared state. Each side publishes its position in the ring and
// its message count in one atomic word (a cursor), so a process killed at any
// instant leaves both consistent: a put is either fully published or not at
// all, likewise a get. Positions are bytes modulo 2^40 and counts messages
// modulo 2^24, which bounds capacity at 2^39 bytes and a queue at 2^24 - 1
// messages (differences stay exact). Producers write `tail`, consumers
// `head`; each sits on its own cache line.
struct QueueShared {
  alignas(64) pthread_mutex_t put_lock;
  alignas(64) pthread_mutex_t get_lock;

  alignas(64) std::atomic<std::uint64_t> tail;  // producers' cursor
  alignas(64) std::atomic<std::uint64_t> head;  // consumers' cursor
  alignas(64) std::atomic<std::uint32_t> closed;
  alignas(64) std::atomic<std::uint32_t> done;  // task_done calls, modulo 2^24

  SharedEvent not_empty;
  SharedEvent not_full;
  SharedEvent all_done;
  PeerTable peers;

  std::byte* ring() {
    return reinterpret_cast<std::byte*>(this) + ring_offset();
  }
  static constexpr std::size_t ring_offset() {
    return (sizeof(QueueShared) + 63) / 64 * 64;
  }
};

// The ring as this process mapped it. Its size comes from the Queue object,
// never from shared memory, so a corrupted peer cannot steer copies out of
// bounds.
struct Ring {
  std::byte* data;
  std::uint64_t size;  // power of two
};

namespace {

constexpr std::size_t kRecordHeader = sizeof(std::uint32_t);
constexpr int kPositionBits = 40;
constexpr std::uint64_t kPositionMask = (std::uint64_t{1} << kPositionBits) - 1;
constexpr std::uint32_t kCountMask = (1u << 24) - 1;
constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 39;

struct Cursor {
  std::uint64_t position;  // modulo 2^40
  std::uint32_t count;     // modulo 2^24
  static Cursor unpack(std::uint64_t word) {
    return {word & kPositionMask,
            static_cast<std::uint32_t>(word >> kPositionBits)};
  }
  std::uint64_t pack() const {
    return (std::uint64_t{count & kCountMask} << kPositionBits) |
           (position & kPositionMask);
  }
  Cursor advanced(std::uint64_t bytes) const {
    return {(position + bytes) & kPositionMask, (count + 1) & kCountMask};
  }
};

std::uint64_t bytes_between(const Cursor& from, const Cursor& to) {
  return (to.position - from.position) & kPositionMask;
}
std::uint32_t messages_between(const Cursor& from, const Cursor& to) {
  return (to.count - from.count) & kCountMask;
}
Cursor load(const std::atomic<std::uint64_t>& word) {
  return Cursor::unpack(word.load(std::memory_order_acquire));
}

void init_robust_mutex(pthread_mutex_t* mutex) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int error = ::pthread_mutex_init(mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (error != 0) throw_os_error("pthread_mutex_init", error);
}

// An empty message may come with (or go to) a null pointer, which memcpy must
// not get even for zero bytes.
void copy_in(const Ring& ring, std::uint64_t position, const void* data,
             std::size_t size) {
  if (size == 0) return;
  const std::size_t offset = position & (ring.size - 1);
  const std::size_t first = std::min<std::size_t>(size, ring.size - offset);
  std::memcpy(ring.data + offset, data, first);
  std::memcpy(ring.data, static_cast<const std::byte*>(data) + first,
              size - first);
}

void copy_out(const Ring& ring, std::uint64_t position, void* data,
              std::size_t size) {
  if (size == 0) return;
  const std::size_t offset = position & (ring.size - 1);
  const std::size_t first = std::min<std::size_t>(size, ring.size - offset);
  std::memcpy(data, ring.data + offset, first);
  std::memcpy(static_cast<std::byte*>(data) + first, ring.data, size - first);
}

std::uint32_t record_length(const Ring& ring, std::uint64_t position) {
  std::uint32_t length;
  copy_out(ring, position, &length, sizeof length);
  return length;
}

enum class LockResult { kLocked, kTimedOut };

// Locks a robust mutex, waiting at most until `deadline`. A lock whose owner
// died is simply made consistent: cursors make every state it can have left
// a valid one.
LockResult lock(pthread_mutex_t* mutex, const Deadline& deadline) {
  int error;
  if (deadline.never()) {
    error = ::pthread_mutex_lock(mutex);
  } else {
    const auto left = deadline.remaining(std::chrono::hours(24 * 365));
    timespec now;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto until = std::chrono::seconds(now.tv_sec) +
                       std::chrono::nanoseconds(now.tv_nsec) + left;
    const timespec abs{static_cast<time_t>(until.count() / 1'000'000'000),
                       static_cast<long>(until.count() % 1'000'000'000)};
    error = ::pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, &abs);
  }
  if (error == ETIMEDOUT) return LockResult::kTimedOut;
  if (error == EOWNERDEAD) {
    ::pthread_mutex_consistent(mutex);
    return LockResult::kLocked;
  }
  if (error != 0) throw_os_error("pthread_mutex_lock", error);
  return LockResult::kLocked;
}

class Unlock {
 public:
  explicit Unlock(pthread_mutex_t* mutex) : mutex_(mutex) {}
  ~Unlock() { ::pthread_mutex_unlock(mutex_); }
  Unlock(const Unlock&) = delete;
  Unlock& operator=(const Unlock&) = delete;

 private:
  pthread_mutex_t* mutex_;
};

}  // namespace
}  // namespace internal

using internal::Deadline;
using internal::PeerTable;
using internal::QueueShared;
using internal::WaitResult;

Queue::Queue(QueueOptions options) : policy_(options.wait) {
  if (options.capacity_bytes < 8 ||
      options.capacity_bytes > internal::kMaxCapacity) {
    throw std::invalid_argument(
        "Queue: capacity_bytes must be in [8, 2^39], got " +
        std::to_string(options.capacity_bytes));
  }
  if (options.max_items > internal::kCountMask) {
    throw std::invalid_argument("Queue: max_items must be below 2^24, got " +
                                std::to_string(options.max_items));
  }
  const std::uint64_t ring_size =
      std::bit_ceil(std::uint64_t{options.capacity_bytes});
  memory_ = Mapping::shared(QueueShared::ring_offset() + ring_size);
  auto* q = new (memory_.data()) QueueShared();
  capacity_ = options.capacity_bytes;
  ring_size_ = ring_size;
  max_items_ =
      options.max_items == 0 ? internal::kCountMask : options.max_items;
  internal::init_robust_mutex(&q->put_lock);
  internal::init_robust_mutex(&q->get_lock);
  q->peers.set_creator(internal::current_pid());
}

// The shared state lives on in the other processes; this only unmaps.
Queue::~Queue() = default;

QueueShared& Queue::shared() const {
  return *static_cast<QueueShared*>(memory_.data());
}

Queue::Outcome Queue::put_impl(std::span<const std::byte> message,
                               const Deadline& deadline) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kQueue>
      slowdown;
  QueueShared& q = shared();
  const std::uint64_t need = internal::kRecordHeader + message.size();
  if (need > capacity_) {
    throw MessageTooLong(
        "Queue::put: message of " + std::to_string(message.size()) +
            " bytes exceeds the queue's capacity of " +
            std::to_string(capacity_) + " bytes (" +
            std::to_string(capacity_ - internal::kRecordHeader) +
            " per message)",
        message.size(), capacity_ - internal::kRecordHeader);
  }
  if (q.closed.load(std::memory_order_acquire))
    throw ClosedError("Queue::put: queue is closed");
  registration_.ensure(q.peers, PeerTable::kProducer);

  if (internal::lock(&q.put_lock, deadline) ==
      internal::LockResult::kTimedOut) {
    return Outcome::kTimedOut;
  }
  internal::Unlock unlock(&q.put_lock);
  const internal::Cursor tail = internal::load(q.tail);
  auto room = [&] {
    const internal::Cursor head = internal::load(q.head);
    return internal::bytes_between(head, tail) + need <= capacity_ &&
           internal::messages_between(head, tail) < max_items_;
  };
  auto ready = [&] {
    return room() || q.closed.load(std::memory_order_acquire) != 0;
  };
  for (;;) {
    const WaitResult result =
        internal::wait_for(q.not_full, policy_, deadline, ready);
    if (result == WaitResult::kReady) break;
    if (result == WaitResult::kTimedOut) return Outcome::kTimedOut;
    if (!q.peers.anyone_alive(PeerTable::kConsumer)) {
      throw PeerError(
          "Queue::put: the queue is full and no process that could take from "
          "it is alive (" +
          q.peers.describe(PeerTable::kConsumer) + ")");
    }
  }
  if (q.closed.load(std::memory_order_acquire))
    throw ClosedError("Queue::put: queue is closed");

  const auto length = static_cast<std::uint32_t>(message.size());
  internal::copy_in(ring(), tail.position, &length, sizeof length);
  internal::copy_in(ring(), tail.position + internal::kRecordHeader,
                    message.data(), message.size());
  q.tail.store(tail.advanced(need).pack(),
               std::memory_order_release);  // publish
  q.not_empty.notify_all();
  return Outcome::kDone;
}

template <typename Sink>
Queue::Outcome Queue::get_impl(const Deadline& deadline, Sink&& sink) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kQueue>
      slowdown;
  QueueShared& q = shared();
  registration_.ensure(q.peers, PeerTable::kConsumer);
  if (internal::lock(&q.get_lock, deadline) ==
      internal::LockResult::kTimedOut) {
    return Outcome::kTimedOut;
  }
  internal::Unlock unlock(&q.get_lock);
  const std::uint64_t head_word = q.head.load(std::memory_order_relaxed);
  const internal::Cursor head = internal::Cursor::unpack(head_word);
  auto ready = [&] {
    return q.tail.load(std::memory_order_acquire) != head_word ||
           q.closed.load(std::memory_order_acquire) != 0;
  };
  for (;;) {
    const WaitResult result =
        internal::wait_for(q.not_empty, policy_, deadline, ready);
    if (result == WaitResult::kReady) break;
    if (result == WaitResult::kTimedOut) return Outcome::kTimedOut;
    if (!q.peers.anyone_alive(PeerTable::kProducer)) {
      throw PeerError(
          "Queue::get: the queue is empty, not closed, and no process that "
          "could put into it is alive (" +
          q.peers.describe(PeerTable::kProducer) + ")");
    }
  }
  if (q.tail.load(std::memory_order_acquire) == head_word)
    return Outcome::kEndOfStream;

  const std::uint32_t length = internal::record_length(ring(), head.position);
  // The ring is shared with other processes: never trust a length that the
  // published bytes cannot hold.
  const std::uint64_t published =
      internal::bytes_between(head, internal::load(q.tail));
  if (published > capacity_ ||
      internal::kRecordHeader + std::uint64_t{length} > published) {
    throw PeerError("Queue::get: corrupt queue: a record of " +
                    std::to_string(length) + " bytes with " +
                    std::to_string(published) +
                    " bytes published (shared memory overwritten by a peer?)");
  }
  std::byte* destination = sink(length);  // may throw: nothing consumed yet
  internal::copy_out(ring(), head.position + internal::kRecordHeader,
                     destination, length);
  q.head.store(head.advanced(internal::kRecordHeader + length).pack(),
               std::memory_order_release);  // take
  q.not_full.notify_all();
  return Outcome::kDone;
}

void Queue::put_bytes(std::span<const std::byte> message) {
  put_impl(message, Deadline());
}

void Queue::put_bytes(std::span<const std::byte> message,
                      std::chrono::nanoseconds timeout) {
  if (put_impl(message, Deadline::after(timeout)) == Outcome::kTimedOut) {
    throw Full("Queue::put: no room within the timeout");
  }
}

bool Queue::try_put_bytes(std::span<const std::byte> message) {
  // A passed deadline spins not at all (internal::spin_until_ready).
  return put_impl(message, Deadline::now()) == Outcome::kDone;
}

template <typename Sink>
bool Queue::get_with(const Deadline& deadline, bool throw_on_timeout,
                     Sink&& sink) {
  switch (get_impl(deadline, std::forward<Sink>(sink))) {
    case Outcome::kDone:
      return true;
    case Outcome::kTimedOut:
      if (throw_on_timeout)
        throw Empty("Queue::get: nothing arrived within the timeout");
      return false;
    case Outcome::kEndOfStream:
      return false;
  }
  return false;
}

std::optional<std::vector<std::byte>> Queue::get_vector(
    const Deadline& deadline, bool throw_on_timeout) {
  std::vector<std::byte> message;
  if (!get_with(deadline, throw_on_timeout, [&](std::size_t length) {
        message.resize(length);
        return message.data();
      }))
    return std::nullopt;
  return message;
}

std::optional<std::vector<std::byte>> Queue::get_bytes() {
  return get_vector(Deadline(), true);
}

std::optional<std::vector<std::byte>> Queue::get_bytes(
    std::chrono::nanoseconds timeout) {
  return get_vector(Deadline::after(timeout), true);
}

std::optional<std::vector<std::byte>> Queue::try_get_bytes() {
  return get_vector(Deadline::now(), false);
}

std::optional<std::size_t> Queue::get_into(std::span<std::byte> buffer,
                                           const Deadline& deadline,
                                           bool throw_on_timeout) {
  std::size_t got = 0;
  const bool took =
      get_with(deadline, throw_on_timeout, [&](std::size_t length) {
        if (length > buffer.size()) {
          throw MessageTooLong(
              "Queue::get_bytes_into: message of " + std::to_string(length) +
                  " bytes does not fit the " + std::to_string(buffer.size()) +
                  "-byte buffer; it stays in the queue",
              length, buffer.size());
        }
        got = length;
        return buffer.data();
      });
  if (!took) return std::nullopt;
  return got;
}

std::optional<std::size_t> Queue::get_bytes_into(std::span<std::byte> buffer) {
  return get_into(buffer, Deadline(), true);
}

std::optional<std::size_t> Queue::get_bytes_into(
    std::span<std::byte> buffer, std::chrono::nanoseconds timeout) {
  return get_into(buffer, Deadline::after(timeout), true);
}

std::optional<std::size_t> Queue::try_get_bytes_into(
    std::span<std::byte> buffer) {
  return get_into(buffer, Deadline::now(), false);
}

void Queue::close() {
  QueueShared& q = shared();
  q.closed.store(1, std::memory_order_release);
  q.not_empty.notify_all();
  q.not_full.notify_all();
}

bool Queue::closed() const {
  return shared().closed.load(std::memory_order_acquire) != 0;
}

bool Queue::end_of_stream() const { return closed() && qsize() == 0; }

std::size_t Queue::qsize() const {
  QueueShared& q = shared();
  const internal::Cursor head = internal::load(q.head);
  return internal::messages_between(head, internal::load(q.tail));
}

std::size_t Queue::capacity_bytes() const { return capacity_; }

internal::Ring Queue::ring() const { return {shared().ring(), ring_size_}; }

// --- JoinableQueue -----------------------------------------------------------
// Unfinished tasks are messages ever put minus task_done calls, both modulo
// 2^24: derived, never stored, so a process killed mid-call cannot leave a
// phantom task behind.

JoinableQueue::JoinableQueue(QueueOptions options) : Queue(options) {}

std::int64_t JoinableQueue::unfinished_tasks() const {
  QueueShared& q = shared();
  const std::uint32_t puts = internal::load(q.tail).count;
  return (puts - q.done.load(std::memory_order_acquire)) & internal::kCountMask;
}

void JoinableQueue::task_done() {
  QueueShared& q = shared();
  std::uint32_t done = q.done.load(std::memory_order_relaxed);
  do {
    const std::uint32_t puts = internal::load(q.tail).count;
    if (((puts - done) & internal::kCountMask) == 0) {
      throw std::logic_error(
          "JoinableQueue::task_done: called more times than items were put");
    }
  } while (!q.done.compare_exchange_weak(
      done, (done + 1) & internal::kCountMask, std::memory_order_acq_rel));
  if (unfinished_tasks() == 0) q.all_done.notify_all();
}

bool JoinableQueue::join_until(const internal::Deadline& deadline) {
  QueueShared& q = shared();
  auto ready = [&] { return unfinished_tasks() == 0; };
  for (;;) {
    const WaitResult result =
        internal::wait_for(q.all_done, policy(), deadline, ready);
    if (result == WaitResult::kReady) return true;
    if (result == WaitResult::kTimedOut) return false;
    if (!q.peers.anyone_alive(PeerTable::kConsumer)) {
      throw PeerError(
          "JoinableQueue::join: " + std::to_string(unfinished_tasks()) +
          " tasks pending and no process that could finish them is alive (" +
          q.peers.describe(PeerTable::kConsumer) + ")");
    }
  }
}

void JoinableQueue::join() { join_until(Deadline()); }

bool JoinableQueue::join(std::chrono::nanoseconds timeout) {
  return join_until(Deadline::after(timeout));
}

// --- Testing access
// ------------------------------------------------------------

namespace internal {

void QueueTestAccess::overwrite(Queue& queue, std::uint64_t head_word,
                                std::uint64_t tail_word,
                                std::span<const std::byte> bytes) {
  const Ring ring = queue.ring();
  std::memcpy(ring.data, bytes.data(),
              std::min<std::size_t>(bytes.size(), ring.size));
  queue.shared().head.store(head_word);
  queue.shared().tail.store(tail_word);
}

std::size_t QueueTestAccess::ring_size(const Queue& queue) {
  return queue.ring().size;
}

}  // namespace internal
}  // namespace mp
