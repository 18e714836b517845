// Fuzzes the pipe frame reader: the input's payload is written raw into one
// end of an mp::Pipe, as a buggy or hostile peer could, and the other end is
// drained with Connection's own reading calls until end of file.
//
// Input: [flags][op script: 2 bytes][limit: 2 bytes][stream...]
//   flags bit 0: a socketpair (Pipe(true)) instead of a pipe.
//   flags bit 1: call 0 is recv_bytes() without a limit. Without the bit it
//     is recv_bytes(limit): an unlimited call may allocate its documented
//     64 MiB head start (lib/pipe.h) for a random header, which costs
//     milliseconds, so only the inputs that ask for it pay for it.
//   op script: 2 bits per call, cycling: recv_bytes() (see above),
//     recv_bytes(limit), recv_bytes_into(limit-byte buffer), skip_message().
// Acceptable outcomes: messages, nullopt (end of file), mp::PeerError
// (truncated frame, malformed header) and mp::MessageTooLong (then
// skip_message()); each is checked against the frames the stream actually
// holds. Anything else (another exception, a crash, a hang, an allocation
// over -malloc_limit_mb) is a bug.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "lib/error.h"
#include "lib/pipe.h"

namespace {

using mp::fuzz::FuzzInput;

// What the stream holds from `pos`: the frames a correct reader must deliver,
// read as CPython's framing says (lib/pipe.h), independently of the reader.
struct Oracle {
  std::span<const std::byte> stream;
  std::size_t pos = 0;

  // The header at `pos`: complete or not, malformed (a negative length
  // other than -1), its size and its payload's length.
  struct Head {
    bool complete = false;
    bool malformed = false;
    std::size_t size = 0;
    std::uint64_t length = 0;
  };
  std::uint64_t big_endian(std::size_t at, int bytes) const {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i)
      value = (value << 8) | std::to_integer<std::uint64_t>(stream[at + i]);
    return value;
  }
  Head head() const {
    if (left() < 4) return {};
    const auto first = static_cast<std::int32_t>(
        static_cast<std::uint32_t>(big_endian(pos, 4)));
    if (first >= 0) return {true, false, 4, static_cast<std::uint64_t>(first)};
    if (first != -1) return {false, true, 0, 0};
    if (left() < 12) return {};
    return {true, false, 12, big_endian(pos + 4, 8)};
  }

  std::size_t left() const { return stream.size() - pos; }
  bool has_header() const { return head().complete; }
  std::uint64_t header() const { return head().length; }
  bool frame_complete() const {
    const Head h = head();
    return h.complete && h.length <= left() - h.size;
  }
  std::span<const std::byte> payload() const {
    const Head h = head();
    return stream.subspan(pos + h.size, static_cast<std::size_t>(h.length));
  }
  void advance() {
    const Head h = head();
    pos += h.size + static_cast<std::size_t>(h.length);
  }
};

// Writes `bytes` to `fd`; a write refused because the reader closed its end
// (only after a malformed header, `reader_closed`) ends it early.
void write_all(int fd, std::span<const std::byte> bytes,
               const std::atomic<bool>& reader_closed) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n == -1 && errno == EINTR) continue;
    if (n == -1 && (errno == EPIPE || errno == ECONNRESET)) {
      FUZZ_CHECK(reader_closed.load());
      return;
    }
    FUZZ_CHECK(n > 0);
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
}

void check_message(Oracle& oracle, std::span<const std::byte> got) {
  FUZZ_CHECK(oracle.frame_complete());
  const auto want = oracle.payload();
  FUZZ_CHECK(got.size() == want.size());
  FUZZ_CHECK(std::equal(got.begin(), got.end(), want.begin()));
  oracle.advance();
}

// The reader threw PeerError: only a frame cut short by end of file or a
// malformed header may do that, and the connection then reads as end of
// file. Returns whether the header was malformed: the writer may still be
// sending then, and the reader is closed, as lib/pipe.h asks, so that it
// does not block.
bool check_truncated(Oracle& oracle) {
  FUZZ_CHECK(oracle.left() > 0 && !oracle.frame_complete());
  const bool malformed = oracle.head().malformed;
  oracle.pos = oracle.stream.size();
  return malformed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  FuzzInput in(data, size);
  const std::uint8_t flags = in.byte();
  const std::uint16_t script =
      static_cast<std::uint16_t>(in.byte() | (in.byte() << 8));
  const std::size_t limit =
      static_cast<std::size_t>(in.byte() | (in.byte() << 8));
  Oracle oracle{in.rest()};

  // (Not a structured binding: clang 14 cannot capture one in a lambda.)
  auto ends = mp::Pipe((flags & 1) != 0);
  mp::Connection& reader = ends.first;
  mp::Connection& writer = ends.second;
  // A stream the pipe cannot hold at once is written from a thread.
  std::atomic<bool> reader_closed{false};
  std::thread feeder;
  if (oracle.stream.size() <= 32 * 1024) {
    write_all(writer.fileno(), oracle.stream, reader_closed);
    writer.close();
  } else {
    feeder = std::thread([&writer, &oracle, &reader_closed] {
      write_all(writer.fileno(), oracle.stream, reader_closed);
      writer.close();
    });
  }
  // After a malformed header: the reader reads as end of file from then on;
  // it is closed, so that a writer still sending fails instead of blocking.
  const auto close_reader = [&] {
    FUZZ_CHECK(!reader.recv_bytes().has_value());
    reader_closed = true;
    reader.close();
  };

  std::vector<std::byte> buffer(limit);
  // Every call either consumes a frame or ends the stream, and a refused one
  // is skipped at once: more calls than this means the reader is stuck.
  const std::size_t max_calls = oracle.stream.size() / 4 + 4;
  bool at_eof = false;
  for (std::size_t call = 0; !at_eof; ++call) {
    FUZZ_CHECK(call <= max_calls);
    const int op = (script >> (2 * (call % 8))) & 3;
    try {
      switch (op) {
        case 0:
        case 1: {
          const bool unlimited = op == 0 && (flags & 2) != 0;
          const auto message =
              unlimited ? reader.recv_bytes() : reader.recv_bytes(limit);
          if (!message) {
            at_eof = true;
          } else {
            check_message(oracle, *message);
          }
          break;
        }
        case 2: {
          const auto length = reader.recv_bytes_into(buffer);
          if (!length) {
            at_eof = true;
          } else {
            FUZZ_CHECK(*length <= buffer.size());
            check_message(oracle, std::span(buffer).first(*length));
          }
          break;
        }
        case 3:
          if (!reader.skip_message()) {
            at_eof = true;
          } else {
            FUZZ_CHECK(oracle.frame_complete());
            oracle.advance();
          }
          break;
      }
    } catch (const mp::MessageTooLong& e) {
      FUZZ_CHECK(op != 3 && !(op == 0 && (flags & 2) != 0));
      FUZZ_CHECK(oracle.has_header());
      FUZZ_CHECK(oracle.header() > limit);
      FUZZ_CHECK(e.length() == oracle.header());
      FUZZ_CHECK(e.limit() == limit);
      // The message stayed unread: drop it and go on.
      try {
        FUZZ_CHECK(reader.skip_message());
        FUZZ_CHECK(oracle.frame_complete());
        oracle.advance();
      } catch (const mp::PeerError&) {
        if (check_truncated(oracle)) close_reader();
      }
    } catch (const mp::PeerError&) {
      if (check_truncated(oracle)) close_reader();
    }
    if (reader_closed) break;
  }
  // End of file comes only after every byte was delivered.
  FUZZ_CHECK(oracle.left() == 0);
  // And stays.
  if (!reader_closed) FUZZ_CHECK(!reader.recv_bytes().has_value());
  if (feeder.joinable()) feeder.join();
  return 0;
}
