#include "lib/channel.h"

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <cstddef>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "lib/corrupt_for_testing.h"
#include "lib/slowdown.h"

namespace mp::internal {

namespace bip = boost::interprocess;

// Shared state, laid out for the hand-off's cache traffic: the sender alone
// writes `written`, the receiver alone `taken`, each on its own line; the
// metadata and `closed` are read-mostly. The first slot starts right after
// the "full" semaphore, in the same cache line, so a small message, its
// length and the post that announces it travel to the receiver as one line.
// `written - taken` counts filled slots, so a "full" token with no message
// behind it (the one close() posts) is recognised as the end of the stream;
// the receiver compares them only once `closed` is set.
struct ChannelShared {
  std::uint64_t slots;
  std::uint64_t slot_bytes;
  std::uint64_t slot_stride;
  std::atomic<std::uint32_t> closed{0};
  alignas(64) std::atomic<std::uint64_t> written{0};
  alignas(64) std::atomic<std::uint64_t> taken{0};
  alignas(64) PeerTable peers;
  alignas(64) bip::interprocess_semaphore empty;  // free slots
  alignas(
      64) bip::interprocess_semaphore full;  // filled slots (+1 after close)
  // Slots follow `full` directly: see slots_offset().

  ChannelShared(std::size_t n, std::size_t bytes)
      : slots(n),
        slot_bytes(bytes),
        slot_stride(stride_for(bytes)),
        empty(static_cast<unsigned>(n)),
        full(0) {}

  // Each slot is a u64 length and the data, padded to whole cache lines.
  static constexpr std::size_t stride_for(std::size_t bytes) {
    return (sizeof(std::uint64_t) + bytes + 63) / 64 * 64;
  }
  static constexpr std::size_t slots_offset() {
    return offsetof(ChannelShared, full) + sizeof(bip::interprocess_semaphore);
  }
  static constexpr std::size_t size_for(std::size_t n, std::size_t bytes) {
    return slots_offset() + n * stride_for(bytes);
  }
  std::byte* slot(std::uint64_t index) {
    return reinterpret_cast<std::byte*>(this) + slots_offset() +
           (index % slots) * slot_stride;
  }
};

static_assert(ChannelShared::slots_offset() % 8 == 0,
              "slot lengths and data stay 8-byte aligned");

namespace {

// Takes one token from `semaphore`: try_wait, then spin on try_wait for the
// policy's budget, then sem_timedwait in slices of policy.liveness_check,
// checking between slices that someone in `role` could still post.
bool acquire(bip::interprocess_semaphore& semaphore, const WaitPolicy& policy,
             const Deadline& deadline, PeerTable& peers, PeerTable::Role role,
             const char* what) {
  if (semaphore.try_wait()) return true;
  if (deadline.passed()) return false;
  if (spin_until_ready(policy, deadline, [&] { return semaphore.try_wait(); }))
    return true;
  for (;;) {
    const auto slice = deadline.remaining(policy.liveness_check);
    const auto until =
        boost::posix_time::microsec_clock::universal_time() +
        boost::posix_time::microseconds(
            std::chrono::duration_cast<std::chrono::microseconds>(slice)
                .count());
    if (semaphore.timed_wait(until)) return true;
    if (deadline.passed()) return false;
    if (!peers.anyone_alive(role)) {
      throw PeerError(std::string("RingChannel::") + what +
                      ": no process on the other side is alive (" +
                      peers.describe(role) + ")");
    }
  }
}

}  // namespace

ChannelCore::ChannelCore(std::size_t slots, std::size_t slot_bytes,
                         WaitPolicy policy)
    : policy_(policy) {
  if (slots == 0 || slot_bytes == 0) {
    throw std::invalid_argument("RingChannel: capacity and slots must be > 0");
  }
  slots_ = slots;
  slot_bytes_ = slot_bytes;
  memory_ = Mapping::shared(ChannelShared::size_for(slots, slot_bytes));
  auto* shared = new (memory_.data()) ChannelShared(slots, slot_bytes);
  shared->peers.set_creator(current_pid());
}

ChannelShared& ChannelCore::shared() const {
  return *static_cast<ChannelShared*>(memory_.data());
}

std::size_t ChannelCore::slots() const { return slots_; }
std::size_t ChannelCore::slot_bytes() const { return slot_bytes_; }

// Slot addresses come from this process's own copy of the geometry, never
// from shared memory, so a corrupted peer cannot steer copies out of bounds.
std::byte* ChannelCore::slot(std::uint64_t index) const {
  return static_cast<std::byte*>(memory_.data()) +
         ChannelShared::slots_offset() +
         (index % slots_) * ChannelShared::stride_for(slot_bytes_);
}
bool ChannelCore::closed() const {
  return shared().closed.load(std::memory_order_acquire) != 0;
}

ChannelCore::Outcome ChannelCore::send(const void* data, std::size_t bytes,
                                       const Deadline& deadline,
                                       const char* what) {
  [[maybe_unused]] const InjectedSlowdown<Primitive::kChannel> slowdown;
  ChannelShared& c = shared();
  if (bytes > slot_bytes_) {
    throw MessageTooLong(std::string("RingChannel::") + what + ": message of " +
                             std::to_string(bytes) +
                             " bytes exceeds the channel's capacity of " +
                             std::to_string(slot_bytes_) +
                             " bytes; nothing was sent",
                         bytes, slot_bytes_);
  }
  if (closed())
    throw ClosedError(std::string("RingChannel::") + what +
                      ": channel is closed");
  registration_.ensure(c.peers, PeerTable::kProducer);
  if (!acquire(c.empty, policy_, deadline, c.peers, PeerTable::kConsumer,
               what)) {
    return Outcome::kTimedOut;
  }
  const std::uint64_t index = c.written.load(std::memory_order_relaxed);
  std::byte* target = slot(index);
  const std::uint64_t length = bytes;
  std::memcpy(target, &length, sizeof length);
  // An empty message may come with a null pointer, which memcpy must not get.
  if (bytes != 0) std::memcpy(target + sizeof length, data, bytes);
  c.written.store(index + 1, std::memory_order_release);
  c.full.post();
  return Outcome::kDone;
}

ChannelCore::Outcome ChannelCore::acquire_message(const Deadline& deadline,
                                                  const char* what) {
  ChannelShared& c = shared();
  registration_.ensure(c.peers, PeerTable::kConsumer);
  if (!acquire(c.full, policy_, deadline, c.peers, PeerTable::kProducer,
               what)) {
    return Outcome::kTimedOut;
  }
  if (c.closed.load(std::memory_order_acquire) &&
      c.written.load(std::memory_order_acquire) ==
          c.taken.load(std::memory_order_relaxed)) {
    // close()'s token: pass it on to the next receiver.
    c.full.post();
    return Outcome::kEndOfStream;
  }
  return Outcome::kDone;
}

ChannelCore::Outcome ChannelCore::recv(Destination destination, void* context,
                                       std::size_t* bytes,
                                       const Deadline& deadline,
                                       const char* what) {
  [[maybe_unused]] const InjectedSlowdown<Primitive::kChannel> slowdown;
  const Outcome outcome = acquire_message(deadline, what);
  if (outcome != Outcome::kDone) return outcome;
  ChannelShared& c = shared();
  const std::uint64_t index = c.taken.load(std::memory_order_relaxed);
  const std::byte* source = slot(index);
  std::uint64_t length;
  std::memcpy(&length, source, sizeof length);
  if (length > slot_bytes_) {
    c.full.post();  // leave the channel as it was
    throw PeerError(std::string("RingChannel::") + what +
                    ": corrupt channel: a message of " +
                    std::to_string(length) + " bytes in a " +
                    std::to_string(slot_bytes_) +
                    "-byte slot (shared memory overwritten by a peer?)");
  }
  void* out;
  try {
    out = destination(static_cast<std::size_t>(length), context);
  } catch (...) {
    c.full.post();  // the message stays for the next recv
    throw;
  }
  if (length != 0)  // an empty destination may be a null pointer
    std::memcpy(out, source + sizeof length, static_cast<std::size_t>(length));
  c.taken.store(index + 1, std::memory_order_release);
  c.empty.post();
  *bytes = static_cast<std::size_t>(length);
  return Outcome::kDone;
}

void ChannelCore::close() {
  ChannelShared& c = shared();
  if (c.closed.exchange(1, std::memory_order_acq_rel) == 0) c.full.post();
}

void ChannelTestAccess::overwrite_and_post(ChannelCore& channel,
                                           std::uint64_t index,
                                           std::span<const std::byte> bytes) {
  std::byte* target = channel.slot(index);
  const std::size_t room = sizeof(std::uint64_t) + channel.slot_bytes();
  std::memcpy(target, bytes.data(), std::min(bytes.size(), room));
  ChannelShared& c = channel.shared();
  c.written.fetch_add(1);
  c.full.post();
}

}  // namespace mp::internal
