#include "lib/spsc_ring.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "lib/spsc_ring_internal.h"

// Wake-up protocol (no lost wake-up, no system call while both sides run).
//
// A side that finds nothing to do spins (mp::WaitPolicy), then sleeps on the
// SharedEvent the other side signals (internal::wait_for):
//   sleeper: seen = event.sequence; event.sleepers += 1 (seq_cst RMW);
//            internal::heavy_fence(); check the cursor (seq_cst load); if
//            still nothing, FUTEX_WAIT on sequence == seen.
//   waker:   publish the cursor; then, if event.sleepers != 0,
//            sequence += 1 and FUTEX_WAKE.
// The waker must not read sleepers before its cursor is visible to the
// sleeper's check (store-load order), and there are two ways to ensure it:
//   light (every process involved registered for membarrier(2),
//     internal::enable_light_fences): the cursor is a plain release store and
//     a compiler-only fence separates it from the load of sleepers; the
//     sleeper's heavy_fence (membarrier GLOBAL_EXPEDITED) makes every CPU
//     running a registered process execute a full barrier, so either that
//     barrier came before the waker's load, which then sees the sleeper, or
//     after the waker's store, which the sleeper's check then sees. The
//     publisher pays no locked instruction.
//   seq_cst (membarrier unavailable): the cursor is published with a seq_cst
//     exchange and sleepers is read seq_cst. All four operations are in the
//     single seq_cst order: if the sleeper's check missed the cursor, the
//     check came before the exchange, and so did the sleeper's increment,
//     which the waker's load then sees.
// In both, the waker's sequence increment makes a FUTEX_WAIT that has not
// started yet return at once, and a waker that sees sleepers == 0 knows the
// sleeper will see its cursor. Sleeps are bounded by
// WaitPolicy::liveness_check, after which the sleeper checks that the other
// side's process is alive.

namespace mp {
namespace {

using internal::Deadline;
using internal::PeerTable;
using internal::SpscShared;

constexpr std::uint64_t kMinCapacity = 256;
constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 32;
// recv_bytes allocates this much of a streamed message up front; beyond it,
// only as pieces arrive (a corrupt length cannot make it allocate more).
constexpr std::uint64_t kEagerAllocation = 64 << 20;

std::uint64_t checked_capacity(std::size_t requested) {
  if (requested > kMaxCapacity) {
    throw std::invalid_argument("SpscRing: capacity_bytes over 2^32: " +
                                std::to_string(requested));
  }
  return std::bit_ceil(std::max<std::uint64_t>(requested, kMinCapacity));
}

std::uint32_t load_u32(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void store_header(std::byte* p, std::uint32_t length, std::uint32_t kind) {
  std::memcpy(p, &length, 4);
  std::memcpy(p + 4, &kind, 4);
}

}  // namespace

struct SpscRing::Frame {
  std::uint32_t kind;
  std::uint32_t length;  // payload bytes
  const std::byte* payload;
  std::uint64_t bytes;  // the whole frame
};

// --- Construction
// -------------------------------------------------------------

SpscRing::SpscRing(SpscRingOptions options)
    : capacity_(checked_capacity(options.capacity_bytes)),
      mask_(capacity_ - 1),
      policy_(options.wait) {
  memory_ = Mapping::shared(internal::kSpscDataOffset + capacity_);
  auto* shared = new (memory_.data()) SpscShared();
  shared->peers.set_creator(internal::current_pid());
}

SpscRing::SpscRing(SpscRingOptions options, Mapping memory, In in)
    : capacity_(checked_capacity(options.capacity_bytes)),
      mask_(capacity_ - 1),
      policy_(options.wait) {
  if (memory.size() < internal::kSpscDataOffset + capacity_) {
    throw std::invalid_argument(
        "SpscRing: " + std::to_string(memory.size()) + " bytes of memory for " +
        std::to_string(internal::kSpscDataOffset + capacity_));
  }
  memory_ = std::move(memory);
  if (in == In::kCreate) {
    auto* shared = new (memory_.data()) SpscShared();
    shared->peers.set_creator(internal::current_pid());
  }
}

std::size_t SpscRing::memory_bytes(std::size_t capacity_bytes) {
  return internal::kSpscDataOffset + checked_capacity(capacity_bytes);
}

SpscRing::~SpscRing() = default;

internal::SpscShared& SpscRing::shared() const {
  return *static_cast<SpscShared*>(memory_.data());
}

std::byte* SpscRing::data() const {
  return memory_.bytes() + internal::kSpscDataOffset;
}

bool SpscRing::closed() const {
  return shared().closed.load(std::memory_order_acquire) != 0;
}

bool SpscRing::readable() const {
  return shared().tail.load(std::memory_order_seq_cst) != read_ || closed();
}

bool SpscRing::end_of_stream() const {
  return closed() && shared().tail.load(std::memory_order_acquire) == read_;
}

void SpscRing::throw_corrupt(const std::string& what) const {
  throw PeerError("SpscRing: corrupt ring at position " +
                  std::to_string(read_) + ": " + what);
}

// --- Producer
// -----------------------------------------------------------------

void SpscRing::require_producer(const char* call) {
  if (loaned_) {
    throw std::logic_error(std::string("SpscRing::") + call +
                           ": a loan is outstanding");
  }
  if (closed()) {
    throw ClosedError(std::string("SpscRing::") + call + ": ring is closed");
  }
  producer_registration_.ensure(shared().peers, PeerTable::kProducer);
}

bool SpscRing::light_fences(Fences& fences) noexcept {
  const pid_t self = internal::current_pid();
  if (fences.pid != self) {
    fences.light = internal::enable_light_fences();
    fences.pid = self;
  }
  return fences.light;
}

namespace {

// Publishes `value` in `cursor` and wakes whoever sleeps on `event` (see the
// protocol above).
void publish_and_wake(std::atomic<std::uint64_t>& cursor, std::uint64_t value,
                      internal::SharedEvent& event, bool light) {
  if (light) {
    cursor.store(value, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (event.sleepers.load(std::memory_order_relaxed) != 0) event.notify_all();
  } else {
    cursor.exchange(value, std::memory_order_seq_cst);
    if (event.sleepers.load(std::memory_order_seq_cst) != 0) event.notify_all();
  }
}

// The sleeper's half of the protocol, between announcing and checking.
void after_announcing() { internal::heavy_fence(); }

}  // namespace

void SpscRing::publish() {
  if (write_ == published_) return;
  published_ = write_;
  SpscShared& s = shared();
  publish_and_wake(s.tail, write_,
                   consumer_event_ != nullptr ? *consumer_event_ : s.data,
                   light_fences(producer_fences_));
}

void SpscRing::flush() { publish(); }

bool SpscRing::has_room(std::uint64_t frame_bytes) {
  if (write_ + frame_bytes - head_cache_ <= capacity_) return true;
  head_cache_ = shared().head.load(std::memory_order_acquire);
  return write_ + frame_bytes - head_cache_ <= capacity_;
}

SpscRing::Outcome SpscRing::wait_for_room(std::uint64_t frame_bytes,
                                          const Deadline& deadline) {
  // The consumer can only make room for what it can see.
  publish();
  SpscShared& s = shared();
  const auto ready = [&] {
    return write_ + frame_bytes - s.head.load(std::memory_order_seq_cst) <=
           capacity_;
  };
  for (;;) {
    switch (internal::wait_for(s.space, policy_, deadline, ready,
                               after_announcing)) {
      case internal::WaitResult::kReady:
        head_cache_ = s.head.load(std::memory_order_acquire);
        return Outcome::kReady;
      case internal::WaitResult::kTimedOut:
        return Outcome::kTimedOut;
      case internal::WaitResult::kCheckPeers:
        if (!s.peers.anyone_alive(PeerTable::kConsumer) && !ready()) {
          throw PeerError(
              "SpscRing::send: the ring is full and its consumer is gone (" +
              s.peers.describe(PeerTable::kConsumer) + ")");
        }
        break;
    }
  }
}

std::byte* SpscRing::reserve(std::uint64_t payload, const Deadline& deadline,
                             bool* timed_out) {
  const std::uint64_t frame = internal::spsc_frame_bytes(payload);
  *timed_out = false;
  for (;;) {
    const std::uint64_t offset = write_ & mask_;
    // Frames never wrap: a pad frame takes the rest of the ring first.
    const std::uint64_t needed =
        offset + frame > capacity_ ? capacity_ - offset : frame;
    if (!has_room(needed)) {
      if (deadline.passed() && !deadline.never()) {
        // The consumer must see a pad written before: only it makes room.
        publish();
        *timed_out = true;
        return nullptr;
      }
      if (wait_for_room(needed, deadline) == Outcome::kTimedOut) {
        *timed_out = true;
        return nullptr;
      }
      continue;
    }
    if (needed != frame) {
      store_header(data() + offset, static_cast<std::uint32_t>(needed - 8),
                   internal::kSpscPad);
      write_ += needed;
      continue;
    }
    return data() + offset + kFrameHeader;
  }
}

void SpscRing::finish_frame(std::uint32_t length, std::uint32_t kind,
                            Publish publish_now) {
  store_header(data() + (write_ & mask_), length, kind);
  write_ += internal::spsc_frame_bytes(length);
  if (publish_now == Publish::kNow) publish();
}

void SpscRing::send_bytes(std::span<const std::byte> message,
                          Publish publish_now) {
  require_producer("send_bytes");
  const std::size_t n = message.size();
  if (n > capacity_ / 4 - kFrameHeader) {
    send_streamed(message);
    return;
  }
  bool timed_out;
  std::byte* at = reserve(n, Deadline(), &timed_out);
  if (n != 0) std::memcpy(at, message.data(), n);
  finish_frame(static_cast<std::uint32_t>(n), internal::kSpscWhole,
               publish_now);
}

void SpscRing::send_streamed(std::span<const std::byte> message) {
  // Pieces of a quarter of the ring: the consumer copies one out while the
  // producer copies the next in.
  const std::uint64_t piece = capacity_ / 4 - kFrameHeader;
  const std::uint64_t total = message.size();
  std::uint64_t sent = 0;
  bool timed_out;
  {
    const std::uint64_t part = piece - sizeof total;
    std::byte* at = reserve(piece, Deadline(), &timed_out);
    std::memcpy(at, &total, sizeof total);
    std::memcpy(at + sizeof total, message.data(), part);
    finish_frame(static_cast<std::uint32_t>(piece), internal::kSpscFirst,
                 Publish::kNow);
    sent = part;
  }
  while (sent < total) {
    const std::uint64_t part = std::min(piece, total - sent);
    std::byte* at = reserve(part, Deadline(), &timed_out);
    std::memcpy(at, message.data() + sent, part);
    sent += part;
    finish_frame(static_cast<std::uint32_t>(part),
                 sent == total ? internal::kSpscLast : internal::kSpscMiddle,
                 Publish::kNow);
  }
}

void SpscRing::send_bytes(std::span<const std::byte> message,
                          std::chrono::nanoseconds timeout) {
  Loan slot = loan(message.size(), timeout);
  if (!message.empty())
    std::memcpy(slot.data(), message.data(), message.size());
  slot.commit();
}

bool SpscRing::try_send_bytes(std::span<const std::byte> message) {
  std::optional<Loan> slot = try_loan(message.size());
  if (!slot) return false;
  if (!message.empty())
    std::memcpy(slot->data(), message.data(), message.size());
  slot->commit();
  return true;
}

namespace {

[[noreturn]] void throw_too_long(std::size_t size, std::size_t limit) {
  throw MessageTooLong("SpscRing::loan: " + std::to_string(size) +
                           " bytes do not fit in one piece (at most " +
                           std::to_string(limit) + ")",
                       size, limit);
}

}  // namespace

SpscRing::Loan SpscRing::loan(std::size_t size) {
  require_producer("loan");
  if (size > max_message()) throw_too_long(size, max_message());
  bool timed_out;
  std::byte* at = reserve(size, Deadline(), &timed_out);
  loaned_ = true;
  return Loan(this, at, size);
}

SpscRing::Loan SpscRing::loan(std::size_t size,
                              std::chrono::nanoseconds timeout) {
  require_producer("loan");
  if (size > max_message()) throw_too_long(size, max_message());
  bool timed_out;
  std::byte* at = reserve(size, Deadline::after(timeout), &timed_out);
  if (timed_out) throw Full("SpscRing: no room within the timeout");
  loaned_ = true;
  return Loan(this, at, size);
}

std::optional<SpscRing::Loan> SpscRing::try_loan(std::size_t size) {
  require_producer("try_loan");
  if (size > max_message()) throw_too_long(size, max_message());
  bool timed_out;
  std::byte* at = reserve(size, Deadline::now(), &timed_out);
  if (timed_out) return std::nullopt;
  loaned_ = true;
  return Loan(this, at, size);
}

SpscRing::Loan::Loan(Loan&& other) noexcept
    : ring_(std::exchange(other.ring_, nullptr)),
      data_(other.data_),
      size_(other.size_) {}

SpscRing::Loan::~Loan() {
  if (ring_ != nullptr) ring_->loaned_ = false;
}

void SpscRing::Loan::commit(std::size_t length, Publish publish) {
  if (ring_ == nullptr)
    throw std::logic_error("SpscRing::Loan::commit: already committed");
  if (length > size_) {
    throw std::logic_error("SpscRing::Loan::commit: " + std::to_string(length) +
                           " bytes of a " + std::to_string(size_) +
                           "-byte loan");
  }
  SpscRing* ring = std::exchange(ring_, nullptr);
  ring->loaned_ = false;
  if (ring->closed())
    throw ClosedError("SpscRing::Loan::commit: ring is closed");
  ring->finish_frame(static_cast<std::uint32_t>(length), internal::kSpscWhole,
                     publish);
}

void SpscRing::close() {
  loaned_ = false;
  SpscShared& s = shared();
  if (s.closed.load(std::memory_order_acquire) != 0) return;
  publish();
  s.closed.exchange(1, std::memory_order_seq_cst);
  if (s.data.sleepers.load(std::memory_order_seq_cst) != 0) s.data.notify_all();
  if (consumer_event_ != nullptr &&
      consumer_event_->sleepers.load(std::memory_order_seq_cst) != 0)
    consumer_event_->notify_all();
}

// --- Consumer
// -----------------------------------------------------------------

void SpscRing::require_consumer(const char* call) {
  if (viewing_) {
    throw std::logic_error(std::string("SpscRing::") + call +
                           ": a view is outstanding");
  }
  consumer_registration_.ensure(shared().peers, PeerTable::kConsumer);
}

void SpscRing::release_frame(std::uint64_t frame_bytes) noexcept {
  read_ += frame_bytes;
  SpscShared& s = shared();
  publish_and_wake(s.head, read_, s.space, light_fences(consumer_fences_));
}

SpscRing::Outcome SpscRing::wait_for_frame(const Deadline& deadline,
                                           std::uint64_t stream_length,
                                           std::uint64_t received) {
  SpscShared& s = shared();
  const auto ready = [&] {
    return s.tail.load(std::memory_order_seq_cst) != read_ ||
           s.closed.load(std::memory_order_seq_cst) != 0;
  };
  for (;;) {
    internal::WaitResult result;
    if (deadline.passed() && !deadline.never()) {
      result = ready() ? internal::WaitResult::kReady
                       : internal::WaitResult::kTimedOut;
    } else {
      result = internal::wait_for(s.data, policy_, deadline, ready,
                                  after_announcing);
    }
    switch (result) {
      case internal::WaitResult::kReady:
        tail_cache_ = s.tail.load(std::memory_order_acquire);
        if (tail_cache_ != read_) return Outcome::kReady;
        // Closed, and the tail was published before the flag was set.
        if (stream_length != 0) {
          throw PeerError(
              "SpscRing::recv: the ring was closed in the middle "
              "of a " +
              std::to_string(stream_length) + "-byte message (" +
              std::to_string(received) + " bytes received)");
        }
        return Outcome::kEndOfStream;
      case internal::WaitResult::kTimedOut:
        return Outcome::kTimedOut;
      case internal::WaitResult::kCheckPeers:
        if (!s.peers.anyone_alive(PeerTable::kProducer) && !ready()) {
          std::string what = "SpscRing::recv: the producer is gone (" +
                             s.peers.describe(PeerTable::kProducer) + ")";
          if (stream_length != 0) {
            what += " in the middle of a " + std::to_string(stream_length) +
                    "-byte message (" + std::to_string(received) +
                    " bytes received)";
          }
          throw PeerError(what);
        }
        break;
    }
  }
}

SpscRing::Outcome SpscRing::next_frame(const Deadline& deadline, Frame* frame,
                                       std::uint64_t stream_length,
                                       std::uint64_t received) {
  for (;;) {
    if (read_ == tail_cache_) {
      tail_cache_ = shared().tail.load(std::memory_order_acquire);
      if (read_ == tail_cache_) {
        const Outcome outcome =
            wait_for_frame(deadline, stream_length, received);
        if (outcome != Outcome::kReady) return outcome;
      }
    }
    // Everything below is untrusted: another process wrote it.
    const std::uint64_t available = tail_cache_ - read_;
    if (available > capacity_ || available % 8 != 0) {
      throw_corrupt("the producer's cursor is " + std::to_string(available) +
                    " bytes ahead of a " + std::to_string(capacity_) +
                    "-byte ring");
    }
    const std::uint64_t offset = read_ & mask_;
    const std::byte* at = data() + offset;
    const std::uint32_t length = load_u32(at);
    const std::uint32_t kind = load_u32(at + 4);
    const std::uint64_t bytes = internal::spsc_frame_bytes(length);
    if (bytes > available || offset + bytes > capacity_) {
      throw_corrupt("a " + std::to_string(length) + "-byte frame where " +
                    std::to_string(std::min(available, capacity_ - offset)) +
                    " bytes are published");
    }
    if (kind == internal::kSpscPad) {
      if (offset + bytes != capacity_)
        throw_corrupt("padding that does not end at the end of the ring");
      release_frame(bytes);
      continue;
    }
    if (kind < internal::kSpscWhole || kind > internal::kSpscLast)
      throw_corrupt("unknown frame kind " + std::to_string(kind));
    if (kind == internal::kSpscFirst && length < 8)
      throw_corrupt("a first piece without the message's length");
    *frame = Frame{kind, length, at + kFrameHeader, bytes};
    return Outcome::kReady;
  }
}

// Receives the next message: `start(length)` once, then `append(data, n)`
// for each piece. A message over `limit` throws mp::MessageTooLong before
// anything is consumed.
template <typename Sink>
std::optional<std::size_t> SpscRing::receive(const Deadline& deadline,
                                             std::size_t limit, Sink&& sink) {
  Frame frame;
  const Outcome outcome = next_frame(deadline, &frame);
  if (outcome == Outcome::kEndOfStream) return std::nullopt;
  if (outcome == Outcome::kTimedOut) return std::nullopt;
  if (frame.kind == internal::kSpscWhole) {
    if (frame.length > limit) {
      throw MessageTooLong("SpscRing::recv_bytes_into: a " +
                               std::to_string(frame.length) +
                               "-byte message does not fit in " +
                               std::to_string(limit) + " bytes",
                           frame.length, limit);
    }
    sink.start(frame.length);
    sink.append(frame.payload, frame.length);
    release_frame(frame.bytes);
    return frame.length;
  }
  if (frame.kind != internal::kSpscFirst)
    throw_corrupt("a piece of a streamed message without its first piece");
  std::uint64_t total;
  std::memcpy(&total, frame.payload, sizeof total);
  std::uint64_t part = frame.length - sizeof total;
  if (part >= total) {
    throw_corrupt("a first piece of " + std::to_string(part) + " bytes of a " +
                  std::to_string(total) + "-byte message");
  }
  if (total > limit) {
    throw MessageTooLong(
        "SpscRing::recv_bytes_into: a " + std::to_string(total) +
            "-byte message does not fit in " + std::to_string(limit) + " bytes",
        total, limit);
  }
  sink.start(total);
  sink.append(frame.payload + sizeof total, part);
  release_frame(frame.bytes);
  std::uint64_t received = part;
  while (received < total) {
    // The producer is in the middle of this message: wait for its end.
    next_frame(Deadline(), &frame, total, received);
    if (frame.kind != internal::kSpscMiddle &&
        frame.kind != internal::kSpscLast) {
      throw_corrupt("a new message in the middle of a " +
                    std::to_string(total) + "-byte one");
    }
    if (frame.length > total - received)
      throw_corrupt("a piece beyond the end of its message");
    const bool last = received + frame.length == total;
    if (last != (frame.kind == internal::kSpscLast))
      throw_corrupt("a streamed message whose pieces do not add up");
    sink.append(frame.payload, frame.length);
    received += frame.length;
    release_frame(frame.bytes);
  }
  return total;
}

namespace {

struct VectorSink {
  std::vector<std::byte>& out;
  void start(std::uint64_t length) {
    out.reserve(std::min(length, kEagerAllocation));
  }
  void append(const std::byte* p, std::uint64_t n) {
    out.insert(out.end(), p, p + n);
  }
};

struct BufferSink {
  std::byte* at;
  void start(std::uint64_t) {}
  void append(const std::byte* p, std::uint64_t n) {
    if (n == 0) return;
    std::memcpy(at, p, n);
    at += n;
  }
};

}  // namespace

std::optional<std::vector<std::byte>> SpscRing::recv_bytes_until(
    const Deadline& deadline) {
  require_consumer("recv_bytes");
  std::vector<std::byte> out;
  const auto got =
      receive(deadline, static_cast<std::size_t>(-1), VectorSink{out});
  if (!got) return std::nullopt;
  return out;
}

std::optional<std::size_t> SpscRing::recv_into_until(
    std::span<std::byte> buffer, const Deadline& deadline) {
  require_consumer("recv_bytes_into");
  return receive(deadline, buffer.size(), BufferSink{buffer.data()});
}

std::optional<std::vector<std::byte>> SpscRing::recv_bytes() {
  return recv_bytes_until(Deadline());
}

std::optional<std::vector<std::byte>> SpscRing::recv_bytes(
    std::chrono::nanoseconds timeout) {
  const Deadline deadline = Deadline::after(timeout);
  auto got = recv_bytes_until(deadline);
  if (!got && !end_of_stream())
    throw Empty("SpscRing::recv_bytes: nothing within the timeout");
  return got;
}

std::optional<std::vector<std::byte>> SpscRing::try_recv_bytes() {
  return recv_bytes_until(Deadline::now());
}

std::optional<std::size_t> SpscRing::recv_bytes_into(
    std::span<std::byte> buffer) {
  return recv_into_until(buffer, Deadline());
}

std::optional<std::size_t> SpscRing::recv_bytes_into(
    std::span<std::byte> buffer, std::chrono::nanoseconds timeout) {
  auto got = recv_into_until(buffer, Deadline::after(timeout));
  if (!got && !end_of_stream())
    throw Empty("SpscRing::recv_bytes_into: nothing within the timeout");
  return got;
}

std::optional<std::size_t> SpscRing::try_recv_bytes_into(
    std::span<std::byte> buffer) {
  return recv_into_until(buffer, Deadline::now());
}

std::optional<SpscRing::View> SpscRing::recv_view_until(
    const Deadline& deadline) {
  require_consumer("recv_view");
  Frame frame;
  if (next_frame(deadline, &frame) != Outcome::kReady) return std::nullopt;
  if (frame.kind == internal::kSpscFirst) {
    std::uint64_t total;
    std::memcpy(&total, frame.payload, sizeof total);
    throw MessageTooLong("SpscRing::recv_view: a " + std::to_string(total) +
                             "-byte message was streamed in pieces; use "
                             "recv_bytes",
                         total, max_message());
  }
  if (frame.kind != internal::kSpscWhole)
    throw_corrupt("a piece of a streamed message without its first piece");
  viewing_ = true;
  return View(this, frame.payload, frame.length, frame.bytes);
}

std::optional<SpscRing::View> SpscRing::recv_view() {
  return recv_view_until(Deadline());
}

std::optional<SpscRing::View> SpscRing::recv_view(
    std::chrono::nanoseconds timeout) {
  auto got = recv_view_until(Deadline::after(timeout));
  if (!got && !end_of_stream())
    throw Empty("SpscRing::recv_view: nothing within the timeout");
  return got;
}

std::optional<SpscRing::View> SpscRing::try_recv_view() {
  return recv_view_until(Deadline::now());
}

SpscRing::View::View(View&& other) noexcept
    : ring_(std::exchange(other.ring_, nullptr)),
      data_(other.data_),
      size_(other.size_),
      frame_(other.frame_) {}

void SpscRing::View::release() noexcept {
  if (ring_ == nullptr) return;
  SpscRing* ring = std::exchange(ring_, nullptr);
  ring->viewing_ = false;
  ring->release_frame(frame_);
}

}  // namespace mp
