// Pipe and Connection: multiprocessing.Pipe for processes made by fork.
//
//   auto [receiver, sender] = mp::Pipe(/*duplex=*/false);
//   mp::Process consumer([&] {
//     sender.close();                                   // keep only our end
//     while (auto item = receiver.recv<std::string>()) handle(*item);
//   });                                                 // nullopt: EOF
//   consumer.start();
//   receiver.close();
//   sender.send(std::string("work"));
//   sender.close();                                     // consumer sees EOF
//   consumer.join();
//
// Pipe(true) returns two ends of a socketpair, each able to send and
// receive; Pipe(false) returns (receive-only, send-only) ends of a pipe, as
// CPython does. A message of any size travels whole: one larger than the
// pipe buffer is streamed through it, never refused.
//
// Frames are CPython's (multiprocessing.connection, Connection.send_bytes):
// the payload follows its length as a 4-byte big-endian signed integer, or,
// past 2 GiB - 1 bytes, -1 and the length as an 8-byte big-endian unsigned
// one. A Python Connection on the other end of the descriptor (a socket, or
// a pipe handed to a Python child) reads what send_bytes writes and writes
// what recv_bytes reads. A header holding another negative length is a
// malformed stream: recv throws mp::PeerError and the connection then reads
// as end of file without reading its descriptor again; close() it, or a
// peer that goes on sending blocks once the pipe or socket buffer is full.
//
// End of file: once the peer has closed its end (or exited) and every
// message it sent has been read, recv*() returns nullopt. A peer that dies in
// the middle of a message makes recv throw mp::PeerError (truncated frame).
// Sending to a closed peer throws mp::PeerError; it never kills the process
// with SIGPIPE (like CPython, creating a Pipe sets SIGPIPE to SIG_IGN if it is
// still SIG_DFL; sockets also send with MSG_NOSIGNAL).
//
// Costs: a small message is one write() and one read(), as in a raw
// write/read loop (the header travels in the same call); a large payload is
// written with writev and read straight into the destination.
//
// Ownership: a Connection owns its descriptor (move-only); after fork both
// processes hold a copy, and each should close() the ends it does not use.
// Not thread-safe: one thread at a time per Connection.
#ifndef MPBENCH_LIB_PIPE_H_
#define MPBENCH_LIB_PIPE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "lib/codec.h"
#include "lib/error.h"
#include "lib/fd.h"

namespace mp {

class Connection {
 public:
  static constexpr std::size_t kNoLimit =
      std::numeric_limits<std::size_t>::max();
  // The frame header's sizes (see the top of this file).
  static constexpr std::size_t kShortHeader = 4;
  static constexpr std::size_t kLongHeader = 12;
  static constexpr std::uint64_t kLongestShortFrame = 0x7fffffff;
  // The bytes of the header send_bytes writes before a `length`-byte payload.
  static constexpr std::size_t header_size(std::uint64_t length) {
    return length > kLongestShortFrame ? kLongHeader : kShortHeader;
  }

  Connection() = default;
  Connection(Fd fd, bool readable, bool writable, bool is_socket);
  Connection(Connection&&) noexcept = default;
  Connection& operator=(Connection&&) noexcept = default;

  // Sends one message. Blocks while the pipe is full. Throws mp::PeerError if
  // the peer has closed its end, mp::ClosedError if this end is closed,
  // std::logic_error on a receive-only end, mp::OsError otherwise.
  void send_bytes(std::span<const std::byte> message);

  // Receives one message; nullopt at end of file. A message longer than
  // `max_length` throws mp::MessageTooLong and stays unread: the connection
  // remains usable and aligned on it (call again with a larger limit, or
  // skip_message()). A frame cut short by the peer's exit throws
  // mp::PeerError, after which the connection reads as end of file. Memory
  // grows with the bytes that actually arrive, so a corrupt length cannot
  // make it allocate more than the peer sent (beyond a 64 MiB head start).
  std::optional<std::vector<std::byte>> recv_bytes(
      std::size_t max_length = kNoLimit);
  // Receives into `buffer` and returns the message length; a message that
  // does not fit throws mp::MessageTooLong and stays unread.
  std::optional<std::size_t> recv_bytes_into(std::span<std::byte> buffer);
  // Reads and drops the next message; false at end of file.
  bool skip_message();

  // Sends `value` with T's type tag (lib/codec.h), for recv<T>.
  template <typename T>
  void send(const T& value) {
    scratch_.clear();
    encode_message(value, scratch_);
    send_bytes(scratch_);
  }
  // Receives a message and decodes it as a T. Throws mp::DecodeError if it
  // is not a T (another type's tag, or malformed bytes); the message has been
  // read by then and is not lost: the error's message() holds its bytes
  // (without the tag).
  template <typename T>
  std::optional<T> recv() {
    auto bytes = recv_bytes();
    if (!bytes) return std::nullopt;
    return decode_taken_message<T>(std::move(*bytes), "Connection::recv");
  }

  // Whether recv would not block: a message (or end of file) is ready within
  // `timeout`. Zero polls without waiting.
  bool poll(std::chrono::nanoseconds timeout = std::chrono::nanoseconds(0));

  // Closes this end (idempotent).
  void close();
  bool closed() const { return !fd_; }
  bool readable() const { return readable_; }
  bool writable() const { return writable_; }
  int fileno() const { return fd_.get(); }

 private:
  // Ensures at least `n` bytes are buffered, asking the descriptor for up to
  // `want` (>= n) bytes in all; false if end of file comes first (after
  // `at_eof_` is set).
  bool fill(std::size_t n, std::size_t want);
  // fill() for the next frame's header, asking for a whole frame of the last
  // frame's size (read_hint_).
  bool fill_frame_start();
  // A frame's payload length and the size of the header that said so.
  struct FrameHead {
    std::uint64_t length;
    std::size_t header;
  };
  // Reads the next frame's header without consuming it; nullopt at EOF.
  // Throws mp::PeerError for a header cut short or malformed (then reads as
  // end of file).
  std::optional<FrameHead> peek_frame();
  // Consumes the frame whose header was peeked, writing its payload to
  // `out` (or dropping it when out is null).
  void take_payload(FrameHead head, std::byte* out);
  // Copies the next `n` payload bytes (buffered first, then straight from the
  // descriptor) to `out`, or drops them when out is null. The frame's length
  // and the bytes of it already read only feed the truncation error.
  void read_payload(std::byte* out, std::uint64_t n, std::uint64_t frame_length,
                    std::uint64_t frame_done);
  // Sets read_hint_ for frames like one with a `length`-byte payload.
  void expect_frames_like(std::uint64_t length);
  // recv_bytes_into's path for a large frame expected at the size of the
  // last: one readv of the header (into this buffer) and of the payload
  // (straight into `out`). Returns the length, or nullopt having left what
  // it read buffered, as if fill() had read it, for the general path.
  std::optional<std::size_t> recv_large_into(std::span<std::byte> out);
  void require_open(bool for_writing, const char* call) const;
  void write_contiguous(const std::byte* data, std::size_t size);
  [[noreturn]] void throw_send_error(int error) const;

  Fd fd_;
  bool readable_ = false;
  bool writable_ = false;
  bool is_socket_ = false;
  bool at_eof_ = false;
  std::vector<std::byte> buffer_;  // read buffer: [begin_, end_) is unread
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::size_t read_hint_ =
      kShortHeader;                // bytes the next frame is likely to take
  std::uint64_t last_length_ = 0;  // the last frame's payload
  std::vector<std::byte> scratch_;
};

// Returns (conn1, conn2). duplex: a socketpair, both ends send and receive.
// Not duplex: conn1 only receives, conn2 only sends (a pipe), whose buffer is
// grown with grow_pipe_buffer. Descriptors are close-on-exec. Throws
// mp::OsError("socketpair" / "pipe2").
std::pair<Connection, Connection> Pipe(bool duplex = true);

// Grows the buffer of the pipe `fd` belongs to up to the system's limit,
// /proc/sys/fs/pipe-max-size (1 MiB by default; the default buffer is
// 64 KiB), with F_SETPIPE_SZ, so that a frame of up to that size never
// straddles a full buffer (a 64 KiB message and its header would otherwise
// take two round trips through the kernel). A refusal (the user's
// pipe-user-pages limits without CAP_SYS_RESOURCE, a limit that cannot be
// read) is quiet: the pipe keeps the size it had. Returns the buffer's size
// afterwards (0 if it cannot be read). Never throws.
std::size_t grow_pipe_buffer(int fd) noexcept;

}  // namespace mp

#endif  // MPBENCH_LIB_PIPE_H_
