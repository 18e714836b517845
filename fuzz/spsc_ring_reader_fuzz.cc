// Fuzzes mp::SpscRing's reader against shared memory written by a buggy or
// hostile producer: the input becomes the ring's bytes and the two cursors
// (mp::internal::SpscRingTestAccess::overwrite), the ring is closed (so that
// a message cut short ends the read instead of waiting for its producer), and
// the real readers, recv_bytes, recv_bytes_into, recv_view and
// try_recv_bytes, are called until the ring is drained or refuses.
// Acceptable outcomes: messages, nullopt (end of stream), mp::MessageTooLong
// (buffer too small, or a streamed message asked for as a view; nothing
// taken) and mp::PeerError (a corrupt ring, or a streamed message cut short).
// Each is checked against a model of the ring built from the same bytes, from
// the format documented in lib/spsc_ring_internal.h; ASan catches reads out
// of bounds.
//
// Input: [head: 8][tail: 8][capacity: 1][op script: 1][buffer: 2][ring...]
//   head: the consumer's cursor, rounded down to a multiple of 8 (the
//     consumer's own cursor always is one; only the tail comes from the
//     producer).
//   capacity: 256 << (value % 4) bytes.
//   op script: 2 bits per call, cycling: recv_bytes, recv_bytes_into,
//     recv_view, try_recv_bytes.
//   buffer: recv_bytes_into's buffer, value % 4096 bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "lib/error.h"
#include "lib/spsc_ring.h"
#include "lib/spsc_ring_testing.h"

namespace {

using mp::fuzz::FuzzInput;

struct Model {
  std::vector<std::byte> ring;
  std::uint64_t capacity;
  std::uint64_t head;
  std::uint64_t tail;

  enum class Kind { kNothing, kCorrupt, kTruncated, kTooLong, kMessage };
  struct Result {
    Result(Kind k, std::uint64_t n = 0, std::vector<std::byte> m = {})
        : kind(k), length(n), message(std::move(m)) {}
    Kind kind;
    std::uint64_t length;
    std::vector<std::byte> message;
  };

  std::uint32_t u32_at(std::uint64_t offset) const {
    std::uint32_t v;
    std::memcpy(&v, &ring[offset], 4);
    return v;
  }
  static std::uint64_t frame_bytes(std::uint32_t length) {
    return 8 + ((std::uint64_t{length} + 7) & ~std::uint64_t{7});
  }
  // Skips padding; the next frame's header, or why there is none.
  Kind frame(std::uint32_t* length, std::uint32_t* kind) {
    for (;;) {
      if (head == tail) return Kind::kNothing;
      const std::uint64_t available = tail - head;
      if (available > capacity || available % 8 != 0) return Kind::kCorrupt;
      const std::uint64_t offset = head & (capacity - 1);
      *length = u32_at(offset);
      *kind = u32_at(offset + 4);
      const std::uint64_t bytes = frame_bytes(*length);
      if (bytes > available || offset + bytes > capacity) return Kind::kCorrupt;
      if (*kind == 5) {
        if (offset + bytes != capacity) return Kind::kCorrupt;
        head += bytes;
        continue;
      }
      if (*kind < 1 || *kind > 4) return Kind::kCorrupt;
      if (*kind == 2 && *length < 8) return Kind::kCorrupt;
      return Kind::kMessage;
    }
  }
  std::vector<std::byte> payload(std::uint64_t skip, std::uint64_t n) const {
    const std::uint64_t at = (head & (capacity - 1)) + 8 + skip;
    return {ring.begin() + static_cast<std::ptrdiff_t>(at),
            ring.begin() + static_cast<std::ptrdiff_t>(at + n)};
  }
  // What the next receive with a buffer of `limit` bytes (or a view) gets,
  // consuming what the ring consumes.
  Result take(std::uint64_t limit, bool view) {
    std::uint32_t length, kind;
    Kind k = frame(&length, &kind);
    if (k != Kind::kMessage) return {k};
    if (kind == 1) {
      if (!view && length > limit) return {Kind::kTooLong, length};
      Result r{Kind::kMessage, length, payload(0, length)};
      head += frame_bytes(length);
      return r;
    }
    if (kind != 2) return {Kind::kCorrupt};
    std::uint64_t total;
    std::memcpy(&total, payload(0, 8).data(), 8);
    if (view) return {Kind::kTooLong, total};
    const std::uint64_t part = length - 8;
    if (part >= total) return {Kind::kCorrupt};
    if (total > limit) return {Kind::kTooLong, total};
    Result r{Kind::kMessage, total, payload(8, part)};
    head += frame_bytes(length);
    std::uint64_t received = part;
    while (received < total) {
      k = frame(&length, &kind);
      if (k == Kind::kNothing) return {Kind::kTruncated};
      if (k != Kind::kMessage) return {k};
      if (kind != 3 && kind != 4) return {Kind::kCorrupt};
      if (length > total - received) return {Kind::kCorrupt};
      if ((received + length == total) != (kind == 4)) return {Kind::kCorrupt};
      const auto piece = payload(0, length);
      r.message.insert(r.message.end(), piece.begin(), piece.end());
      received += length;
      head += frame_bytes(length);
    }
    return r;
  }
};

bool contains(const char* text, const char* part) {
  return std::string(text).find(part) != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  FuzzInput in(data, size);
  const std::uint64_t head = in.u64() & ~std::uint64_t{7};
  const std::uint64_t tail = in.u64();
  const std::size_t capacity = std::size_t{256} << (in.byte() % 4);
  const std::uint8_t script = in.byte();
  const std::size_t buffer_size =
      static_cast<std::size_t>(in.byte() | (in.byte() << 8)) % 4096;
  const std::span<const std::byte> bytes = in.rest();

  mp::SpscRingOptions options;
  options.capacity_bytes = capacity;
  options.wait = mp::WaitPolicy::block_only();
  mp::SpscRing ring(options);
  FUZZ_CHECK(ring.capacity_bytes() == capacity);
  mp::internal::SpscRingTestAccess::overwrite(ring, head, tail, bytes);
  ring.close();

  Model model{std::vector<std::byte>(capacity), capacity, head, tail};
  std::copy_n(bytes.begin(), std::min(bytes.size(), capacity),
              model.ring.begin());

  std::vector<std::byte> buffer(buffer_size);
  // Every frame takes at least 8 bytes of at most `capacity` published.
  const std::size_t max_calls = capacity / 8 + 2;
  for (std::size_t call = 0;; ++call) {
    FUZZ_CHECK(call <= max_calls);
    const int op = (script >> (2 * (call % 4))) & 3;
    const bool view = op == 2;
    const std::uint64_t limit = op == 1 ? buffer.size() : UINT64_MAX;
    const Model::Result expected = model.take(limit, view);
    try {
      std::optional<std::vector<std::byte>> got;
      if (op == 0) {
        got = ring.recv_bytes();
      } else if (op == 1) {
        if (const auto n = ring.recv_bytes_into(buffer)) {
          FUZZ_CHECK(*n <= buffer.size());
          got.emplace(buffer.begin(),
                      buffer.begin() + static_cast<std::ptrdiff_t>(*n));
        }
      } else if (op == 2) {
        if (auto v = ring.recv_view())
          got.emplace(v->bytes().begin(), v->bytes().end());
      } else {
        got = ring.try_recv_bytes();
      }
      if (!got) {
        FUZZ_CHECK(expected.kind == Model::Kind::kNothing);
        FUZZ_CHECK(ring.end_of_stream());
        break;
      }
      FUZZ_CHECK(expected.kind == Model::Kind::kMessage);
      FUZZ_CHECK(*got == expected.message);
    } catch (const mp::MessageTooLong& e) {
      FUZZ_CHECK(expected.kind == Model::Kind::kTooLong);
      FUZZ_CHECK(e.length() == expected.length);
      // Nothing was taken: a receive without a limit gets it (or refuses
      // it as the model does).
      const Model::Result again = model.take(UINT64_MAX, false);
      try {
        const auto got = ring.recv_bytes();
        FUZZ_CHECK(again.kind == Model::Kind::kMessage);
        FUZZ_CHECK(got && *got == again.message);
      } catch (const mp::PeerError&) {
        FUZZ_CHECK(again.kind == Model::Kind::kCorrupt ||
                   again.kind == Model::Kind::kTruncated);
        break;
      }
    } catch (const mp::PeerError& e) {
      if (expected.kind == Model::Kind::kCorrupt) {
        FUZZ_CHECK(contains(e.what(), "corrupt ring"));
      } else {
        FUZZ_CHECK(expected.kind == Model::Kind::kTruncated);
        FUZZ_CHECK(contains(e.what(), "in the middle of"));
      }
      break;
    }
  }
  return 0;
}
