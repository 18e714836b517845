#include "lib/channel.h"

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <cstddef>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "lib/channel_layout.h"
#include "lib/slowdown.h"

namespace mp::internal {

namespace bip = boost::interprocess;

namespace {

// Takes one token from `semaphore`: try_wait, then spin on try_wait for the
// policy's budget, then sem_timedwait in slices of policy.liveness_check,
// checking between slices that someone in `role` could still post.
bool acquire(bip::interprocess_semaphore& semaphore, const WaitPolicy& policy,
             const Deadline& deadline, PeerTable& peers, PeerTable::Role role,
             const char* what) {
  auto take = [&] { return semaphore.try_wait(); };
  auto block = [&](std::chrono::nanoseconds slice) {
    return semaphore.timed_wait(
        boost::posix_time::microsec_clock::universal_time() +
        boost::posix_time::microseconds(
            std::chrono::duration_cast<std::chrono::microseconds>(slice)
                .count()));
  };
  return wait_while_peers_live(
      [&] { return wait_slice(policy, deadline, take, block); }, peers, role,
      [&] {
        return std::string("RingChannel::") + what +
               ": no process on the other side is alive";
      });
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
  auto* shared = new (memory_.data()) ChannelShared(slots);
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

Outcome ChannelCore::acquire_slot(std::size_t bytes, const Deadline& deadline,
                                  const char* what) {
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
  return Outcome::kDone;
}

void ChannelCore::publish_slot(std::size_t bytes) noexcept {
  ChannelShared& c = shared();
  const std::uint64_t index = c.written.load(std::memory_order_relaxed);
  const std::uint64_t length = bytes;
  std::memcpy(slot(index), &length, sizeof length);
  c.written.store(index + 1, std::memory_order_release);
  c.full.post();
}

Outcome ChannelCore::send(const void* data, std::size_t bytes,
                          const Deadline& deadline, const char* what) {
  [[maybe_unused]] const InjectedSlowdown<Primitive::kChannel> slowdown;
  const Outcome outcome = acquire_slot(bytes, deadline, what);
  if (outcome != Outcome::kDone) return outcome;
  if (loaned_.held.load(std::memory_order_acquire)) {
    shared().empty.post();  // the loan's slot: give the token back
    throw std::logic_error(std::string("RingChannel::") + what +
                           ": this process holds a loan; send it first");
  }
  // An empty message may come with a null pointer, which memcpy must not get.
  if (bytes != 0)
    std::memcpy(slot(shared().written.load(std::memory_order_relaxed)) +
                    sizeof(std::uint64_t),
                data, bytes);
  publish_slot(bytes);
  return Outcome::kDone;
}

Outcome ChannelCore::loan_slot(std::size_t bytes, const Deadline& deadline,
                               const char* what, std::byte** data) {
  const Outcome outcome = acquire_slot(bytes, deadline, what);
  if (outcome != Outcome::kDone) return outcome;
  if (loaned_.held.exchange(true, std::memory_order_acquire)) {
    shared().empty.post();  // not ours to use: give it back
    throw std::logic_error(std::string("RingChannel::") + what +
                           ": this process already holds a loan");
  }
  *data = slot(shared().written.load(std::memory_order_relaxed)) +
          sizeof(std::uint64_t);
  return Outcome::kDone;
}

void ChannelCore::commit_slot(std::size_t bytes) noexcept {
  publish_slot(bytes);
  loaned_.held.store(false, std::memory_order_release);
}

void ChannelCore::abandon_slot() noexcept {
  loaned_.held.store(false, std::memory_order_release);
  shared().empty.post();
}

Outcome ChannelCore::acquire_message(const Deadline& deadline,
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

Outcome ChannelCore::take_message(const Deadline& deadline, const char* what,
                                  std::size_t unit, const std::byte** data,
                                  std::size_t* bytes) {
  const Outcome outcome = acquire_message(deadline, what);
  if (outcome != Outcome::kDone) return outcome;
  ChannelShared& c = shared();
  const std::byte* source = slot(c.taken.load(std::memory_order_relaxed));
  std::uint64_t length;
  std::memcpy(&length, source, sizeof length);
  if (length > slot_bytes_ || length % unit != 0) {
    c.full.post();  // leave the channel as it was
    throw PeerError(std::string("RingChannel::") + what +
                    ": corrupt channel: a message of " +
                    std::to_string(length) + " bytes in a " +
                    std::to_string(slot_bytes_) + "-byte slot of " +
                    std::to_string(unit) +
                    "-byte values (shared memory overwritten by a peer?)");
  }
  *data = source + sizeof length;
  *bytes = static_cast<std::size_t>(length);
  return Outcome::kDone;
}

void ChannelCore::finish_message() noexcept {
  ChannelShared& c = shared();
  c.taken.store(c.taken.load(std::memory_order_relaxed) + 1,
                std::memory_order_release);
  c.empty.post();
}

Outcome ChannelCore::recv(Destination destination, void* context,
                          std::size_t* bytes, const Deadline& deadline,
                          const char* what) {
  [[maybe_unused]] const InjectedSlowdown<Primitive::kChannel> slowdown;
  const std::byte* source = nullptr;
  std::size_t length = 0;
  const Outcome outcome = take_message(deadline, what, 1, &source, &length);
  if (outcome != Outcome::kDone) return outcome;
  if (viewing_.held.load(std::memory_order_acquire)) {
    shared().full.post();  // the view's message: it stays
    throw std::logic_error(std::string("RingChannel::") + what +
                           ": this process holds a view; release it first");
  }
  void* out;
  try {
    out = destination(length, context);
  } catch (...) {
    shared().full.post();  // the message stays for the next recv
    throw;
  }
  if (length != 0)  // an empty destination may be a null pointer
    std::memcpy(out, source, length);
  finish_message();
  *bytes = length;
  return Outcome::kDone;
}

Outcome ChannelCore::view_slot(const Deadline& deadline, const char* what,
                               std::size_t unit, const std::byte** data,
                               std::size_t* bytes) {
  const Outcome outcome = take_message(deadline, what, unit, data, bytes);
  if (outcome != Outcome::kDone) return outcome;
  if (viewing_.held.exchange(true, std::memory_order_acquire)) {
    shared().full.post();  // not ours to read: the message stays
    throw std::logic_error(std::string("RingChannel::") + what +
                           ": this process already holds a view");
  }
  return Outcome::kDone;
}

void ChannelCore::release_view() noexcept {
  finish_message();
  viewing_.held.store(false, std::memory_order_release);
}

void ChannelCore::close() {
  ChannelShared& c = shared();
  if (c.closed.exchange(1, std::memory_order_acq_rel) == 0) c.full.post();
}

}  // namespace mp::internal
