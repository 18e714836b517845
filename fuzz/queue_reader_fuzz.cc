// Fuzzes mp::Queue's reader against shared memory written by a buggy or
// hostile peer: the input becomes the ring's bytes and the two cursor words
// (mp::internal::QueueTestAccess::overwrite), then the real readers,
// try_get_bytes and get_bytes_into, are called until the queue is drained or
// refuses. Acceptable outcomes: messages, nullopt (nothing there, or end of
// stream), mp::MessageTooLong (buffer too small; nothing taken) and
// mp::PeerError (corrupt queue). Each is checked against a model of the ring
// built from the same bytes; ASan catches copies out of bounds.
//
// Input: [head word: 8][tail word: 8][capacity: 2][flags][op script]
//        [buffer: 2][ring bytes...]
//   capacity: 8 + value % 2041 bytes (the ring is the next power of two).
//   flags bit 0: close() the queue first (then get_bytes_into, which blocks
//     on an open empty queue, may be used).
//   op script: 1 bit per call, cycling: try_get_bytes or get_bytes_into.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "lib/error.h"
#include "lib/queue.h"
#include "lib/testing/corrupt.h"

namespace {

using mp::fuzz::FuzzInput;

constexpr std::uint64_t kPositionMask = (std::uint64_t{1} << 40) - 1;
constexpr std::uint64_t kCountMask = (std::uint64_t{1} << 24) - 1;

// The queue's documented layout (lib/queue.cc): a cursor word is a 40-bit
// byte position and a 24-bit message count; a record is a u32 length and the
// payload, wrapping around the ring.
struct Model {
  std::vector<std::byte> ring;
  std::uint64_t capacity;
  std::uint64_t head;
  std::uint64_t tail;

  std::byte at(std::uint64_t position) const {
    return ring[position & (ring.size() - 1)];
  }
  enum class Next { kNothing, kCorrupt, kMessage };
  Next next(std::uint32_t* length) const {
    if (head == tail) return Next::kNothing;
    const std::uint64_t published = (tail - head) & kPositionMask;
    std::byte raw[4];
    for (int i = 0; i < 4; ++i) raw[i] = at(head + i);
    std::memcpy(length, raw, 4);
    if (published > capacity || 4 + std::uint64_t{*length} > published)
      return Next::kCorrupt;
    return Next::kMessage;
  }
  void check_and_take(std::span<const std::byte> got) {
    std::uint32_t length = 0;
    FUZZ_CHECK(next(&length) == Next::kMessage);
    FUZZ_CHECK(got.size() == length);
    for (std::uint32_t i = 0; i < length; ++i)
      FUZZ_CHECK(got[i] == at(head + 4 + i));
    const std::uint64_t position = (head + 4 + length) & kPositionMask;
    const std::uint64_t count = ((head >> 40) + 1) & kCountMask;
    head = (count << 40) | position;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  FuzzInput in(data, size);
  const std::uint64_t head_word = in.u64();
  const std::uint64_t tail_word = in.u64();
  const std::uint16_t capacity_choice =
      static_cast<std::uint16_t>(in.byte() | (in.byte() << 8));
  const std::uint8_t flags = in.byte();
  const std::uint8_t script = in.byte();
  const std::size_t buffer_size =
      static_cast<std::size_t>(in.byte() | (in.byte() << 8)) % 4096;
  const std::span<const std::byte> bytes = in.rest();

  mp::QueueOptions options;
  options.capacity_bytes = 8 + capacity_choice % 2041;
  options.wait = mp::WaitPolicy::block_only();
  mp::Queue queue(options);
  mp::internal::QueueTestAccess::overwrite(queue, head_word, tail_word, bytes);
  const bool closed = (flags & 1) != 0;
  if (closed) queue.close();

  const std::size_t ring_size = mp::internal::QueueTestAccess::ring_size(queue);
  FUZZ_CHECK(ring_size == std::bit_ceil(options.capacity_bytes));
  Model model{std::vector<std::byte>(ring_size), options.capacity_bytes,
              head_word, tail_word};
  std::copy_n(bytes.begin(), std::min(bytes.size(), ring_size),
              model.ring.begin());
  (void)queue.qsize();  // must not trip over the cursors either

  std::vector<std::byte> buffer(buffer_size);
  // Each message takes at least 4 bytes of a ring that holds at most
  // `capacity`: more calls than this means a reader that does not progress.
  const std::size_t max_calls = options.capacity_bytes + 4;
  for (std::size_t call = 0;; ++call) {
    FUZZ_CHECK(call <= max_calls);
    const bool into = closed && ((script >> (call % 8)) & 1) != 0;
    std::uint32_t length = 0;
    const Model::Next expected = model.next(&length);
    try {
      if (into) {
        const auto got = queue.get_bytes_into(buffer);
        if (!got) {
          FUZZ_CHECK(expected == Model::Next::kNothing);
          break;
        }
        FUZZ_CHECK(*got <= buffer.size());
        model.check_and_take(std::span(buffer).first(*got));
      } else {
        const auto got = queue.try_get_bytes();
        if (!got) {
          FUZZ_CHECK(expected == Model::Next::kNothing);
          break;
        }
        model.check_and_take(*got);
      }
    } catch (const mp::MessageTooLong& e) {
      FUZZ_CHECK(into && expected == Model::Next::kMessage);
      FUZZ_CHECK(e.length() == length && length > buffer.size());
      // Nothing was taken: the next call gets it whole.
      const auto got = queue.try_get_bytes();
      FUZZ_CHECK(got.has_value());
      model.check_and_take(*got);
    } catch (const mp::PeerError&) {
      FUZZ_CHECK(expected == Model::Next::kCorrupt);
      // Nothing was taken either: the queue refuses again.
      bool refused = false;
      try {
        queue.try_get_bytes();
      } catch (const mp::PeerError&) {
        refused = true;
      }
      FUZZ_CHECK(refused);
      break;
    }
  }
  return 0;
}
