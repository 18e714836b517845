#include "lib/pipe.h"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "lib/slowdown.h"

namespace mp {
namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;
// Payloads up to this size are sent with their header in one write().
constexpr std::size_t kSmallMessage = 4096 - Connection::kShortHeader;
// A payload at least this long is read straight into its destination.
constexpr std::size_t kDirectRead = kReadBuffer / 2;
// recv_bytes allocates this much up front; beyond it, only as data arrives.
constexpr std::size_t kEagerAllocation = 64 << 20;

void ignore_sigpipe_if_default() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 &&
        current.sa_handler == SIG_DFL && !(current.sa_flags & SA_SIGINFO)) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

// Writes the header of a `length`-byte payload at `out` (room for
// Connection::kLongHeader bytes); returns its size.
std::size_t encode_header(std::uint64_t length, std::byte* out) {
  if (length <= Connection::kLongestShortFrame) {
    const std::uint32_t big_endian =
        htobe32(static_cast<std::uint32_t>(length));
    std::memcpy(out, &big_endian, sizeof big_endian);
    return Connection::kShortHeader;
  }
  const std::uint32_t minus_one = 0xffffffff;
  const std::uint64_t big_endian = htobe64(length);
  std::memcpy(out, &minus_one, sizeof minus_one);
  std::memcpy(out + sizeof minus_one, &big_endian, sizeof big_endian);
  return Connection::kLongHeader;
}

// What the `n` (>= kShortHeader) bytes at `in` say of a frame's header:
// its size (kLongHeader for the long form even before all of it is there;
// 0 when malformed: a negative length other than -1) and, once `n` covers
// it, the payload's length. `first` is the first four bytes' value.
struct ParsedHeader {
  std::size_t size;
  std::uint64_t length;
  std::int32_t first;
  // Whether `buffered` bytes hold this header and its whole payload.
  bool whole(std::size_t buffered) const {
    return size != 0 && buffered >= size && length <= buffered - size;
  }
};
ParsedHeader parse_header(const std::byte* in, std::size_t n) {
  std::uint32_t word;
  std::memcpy(&word, in, sizeof word);
  const auto first = static_cast<std::int32_t>(be32toh(word));
  if (first >= 0)
    return {Connection::kShortHeader, static_cast<std::uint64_t>(first), first};
  if (first != -1) return {0, 0, first};
  if (n < Connection::kLongHeader) return {Connection::kLongHeader, 0, first};
  std::uint64_t length;
  std::memcpy(&length, in + sizeof word, sizeof length);
  return {Connection::kLongHeader, be64toh(length), first};
}

[[noreturn]] void throw_truncated(std::uint64_t length,
                                  std::uint64_t received) {
  throw PeerError(
      "Connection::recv_bytes: the peer closed the connection in the middle of "
      "a " +
      std::to_string(length) + "-byte message (" + std::to_string(received) +
      " bytes received)");
}

// /proc/sys/fs/pipe-max-size, read once; 0 when it cannot be read.
std::size_t pipe_max_size() {
  static const std::size_t size = [] {
    std::size_t value = 0;
    if (FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "re")) {
      if (std::fscanf(f, "%zu", &value) != 1) value = 0;
      std::fclose(f);
    }
    return value;
  }();
  return size;
}

}  // namespace

std::size_t grow_pipe_buffer(int fd) noexcept {
  const std::size_t want = pipe_max_size();
  // Refusals (EPERM over the user's pipe-user-pages limits, EBUSY, a
  // descriptor that is not a pipe) leave the pipe as it was.
  if (want > 0 && want <= static_cast<std::size_t>(INT_MAX))
    ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(want));
  const int size = ::fcntl(fd, F_GETPIPE_SZ);
  return size > 0 ? static_cast<std::size_t>(size) : 0;
}

Connection::Connection(Fd fd, bool readable, bool writable, bool is_socket)
    : fd_(std::move(fd)),
      readable_(readable),
      writable_(writable),
      is_socket_(is_socket) {}

std::pair<Connection, Connection> Pipe(bool duplex) {
  ignore_sigpipe_if_default();
  if (duplex) {
    int sv[2];
    internal::check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                    "socketpair");
    return {Connection(Fd(sv[0]), true, true, true),
            Connection(Fd(sv[1]), true, true, true)};
  }
  int fds[2];
  internal::check(::pipe2(fds, O_CLOEXEC), "pipe2");
  grow_pipe_buffer(fds[1]);
  return {Connection(Fd(fds[0]), true, false, false),
          Connection(Fd(fds[1]), false, true, false)};
}

void Connection::require_open(bool for_writing, const char* call) const {
  if (!fd_)
    throw ClosedError(std::string("Connection::") + call +
                      ": connection is closed");
  if (for_writing ? !writable_ : !readable_) {
    throw std::logic_error(std::string("Connection::") + call +
                           ": this end is " +
                           (for_writing ? "receive-only" : "send-only"));
  }
}

void Connection::write_contiguous(const std::byte* data, std::size_t size) {
  while (size > 0) {
    const ssize_t sent = is_socket_
                             ? ::send(fd_.get(), data, size, MSG_NOSIGNAL)
                             : ::write(fd_.get(), data, size);
    if (sent == -1) {
      if (errno == EINTR) continue;
      throw_send_error(errno);
    }
    data += sent;
    size -= static_cast<std::size_t>(sent);
  }
}

void Connection::throw_send_error(int error) const {
  if (error == EPIPE || error == ECONNRESET) {
    throw PeerError(
        std::string("Connection::send_bytes: the peer has closed its end (") +
        std::strerror(error) + ")");
  }
  internal::throw_os_error(is_socket_ ? "sendmsg" : "write", error);
}

void Connection::send_bytes(std::span<const std::byte> message) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kPipe>
      slowdown;
  require_open(true, "send_bytes");
  if (message.size() <= kSmallMessage) {
    // One contiguous write costs less than a two-part writev.
    std::byte frame[kShortHeader + kSmallMessage];
    const std::size_t header = encode_header(message.size(), frame);
    if (!message.empty())  // an empty span's data() may be null
      std::memcpy(frame + header, message.data(), message.size());
    write_contiguous(frame, header + message.size());
    return;
  }
  std::byte header[kLongHeader];
  iovec parts[2] = {{header, encode_header(message.size(), header)},
                    {const_cast<std::byte*>(message.data()), message.size()}};
  iovec* next = parts;
  int count = message.empty() ? 1 : 2;
  while (count > 0) {
    ssize_t sent;
    if (is_socket_) {
      msghdr msg{};
      msg.msg_iov = next;
      msg.msg_iovlen = static_cast<std::size_t>(count);
      sent = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    } else {
      sent = ::writev(fd_.get(), next, count);
    }
    if (sent == -1) {
      if (errno == EINTR) continue;
      throw_send_error(errno);
    }
    // Partial write: skip what went out and send the rest.
    internal::skip_transferred(next, count, static_cast<std::size_t>(sent));
  }
}

bool Connection::fill_frame_start() {
  // At a frame's start, ask for one frame of the size the last one had
  // (read_hint_), not for all the buffer can hold. A reader that drains the
  // pipe makes the writer start a fresh pipe page and wake it for every
  // message; one that stays a little behind leaves the writer appending to
  // a page nobody else touches. Measured (64-byte messages, 2-vCPU Xeon):
  // reads that take all that waits, always or only once a backlog of 4 or
  // 16 frames is found, cost 1.4x the time per message of one frame per
  // read. One frame per read also matches the raw write/read loop call for
  // call.
  return fill(kShortHeader, std::max(kShortHeader, read_hint_));
}

bool Connection::fill(std::size_t n, std::size_t want) {
  while (end_ - begin_ < n) {
    if (at_eof_) return false;
    if (buffer_.size() - begin_ < want) {
      // Move the unread bytes to the front and make room for a whole frame.
      // (buffer_ is empty, data() null, before the first read.)
      if (end_ > begin_)
        std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      if (buffer_.size() < want) buffer_.resize(std::max(want, kReadBuffer));
    }
    const std::size_t ask =
        std::min(want - (end_ - begin_), buffer_.size() - end_);
    const ssize_t got = ::read(fd_.get(), buffer_.data() + end_, ask);
    if (got == 0) {
      at_eof_ = true;
      return false;
    }
    if (got == -1) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) {
        at_eof_ = true;
        return false;
      }
      internal::throw_os_error("read", errno);
    }
    end_ += static_cast<std::size_t>(got);
  }
  return true;
}

std::optional<Connection::FrameHead> Connection::peek_frame() {
  require_open(false, "recv_bytes");
  // The error for a header cut short by end of file, `of` bytes long.
  const auto cut_short = [this](std::size_t of) {
    const std::size_t partial = end_ - begin_;
    begin_ = end_ = 0;
    return PeerError(
        "Connection::recv_bytes: the peer closed the connection in the middle "
        "of a frame header (" +
        std::to_string(partial) + " of " + std::to_string(of) +
        " bytes received)");
  };
  if (!fill_frame_start()) {
    if (end_ == begin_) return std::nullopt;
    throw cut_short(kShortHeader);
  }
  ParsedHeader parsed = parse_header(buffer_.data() + begin_, end_ - begin_);
  if (parsed.size == 0) {
    // Nothing after it can be trusted to be a frame: end of stream.
    at_eof_ = true;
    begin_ = end_ = 0;
    throw PeerError("Connection::recv_bytes: malformed frame header (length " +
                    std::to_string(parsed.first) +
                    "); the connection reads as closed");
  }
  if (end_ - begin_ < parsed.size) {
    if (!fill(parsed.size, parsed.size)) throw cut_short(parsed.size);
    parsed = parse_header(buffer_.data() + begin_, end_ - begin_);
  }
  return FrameHead{parsed.length, parsed.size};
}

void Connection::read_payload(std::byte* out, std::uint64_t n,
                              std::uint64_t frame_length,
                              std::uint64_t frame_done) {
  const std::size_t buffered =
      static_cast<std::size_t>(std::min<std::uint64_t>(n, end_ - begin_));
  if (out != nullptr) std::memcpy(out, buffer_.data() + begin_, buffered);
  begin_ += buffered;
  std::uint64_t done = buffered;
  while (done < n) {
    const std::uint64_t left = n - done;
    if (out != nullptr && left >= kDirectRead) {
      const ssize_t got = ::read(fd_.get(), out + done, left);
      if (got == -1 && errno == EINTR) continue;
      if (got == -1 && errno != ECONNRESET)
        internal::throw_os_error("read", errno);
      if (got <= 0) {
        at_eof_ = true;
        throw_truncated(frame_length, frame_done + done);
      }
      done += static_cast<std::uint64_t>(got);
      continue;
    }
    const auto want =
        static_cast<std::size_t>(std::min<std::uint64_t>(left, kReadBuffer));
    // The rest of this frame only: a read that took the next frame's first
    // bytes as well would leave every later frame split across two reads
    // (measured: each small message then took the general path, and Pipe
    // ran at 0.75x-0.85x of the raw pipe up to 4 KiB, 2-vCPU Xeon).
    if (!fill(want, want)) {
      const std::size_t partial = end_ - begin_;
      begin_ = end_ = 0;
      throw_truncated(frame_length, frame_done + done + partial);
    }
    if (out != nullptr) std::memcpy(out + done, buffer_.data() + begin_, want);
    begin_ += want;
    done += want;
  }
  if (begin_ == end_) begin_ = end_ = 0;
}

void Connection::expect_frames_like(std::uint64_t length) {
  last_length_ = length;
  // A payload read straight into its destination needs only the header
  // buffered; a smaller one comes whole with its header in one read.
  read_hint_ = length >= kDirectRead
                   ? header_size(length)
                   : header_size(length) + static_cast<std::size_t>(length);
}

void Connection::take_payload(FrameHead head, std::byte* out) {
  begin_ += head.header;
  expect_frames_like(head.length);
  read_payload(out, head.length, head.length, 0);
}

std::optional<std::vector<std::byte>> Connection::recv_bytes(
    std::size_t max_length) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kPipe>
      slowdown;
  const auto head = peek_frame();
  if (!head) return std::nullopt;
  const std::uint64_t length = head->length;
  if (length > max_length) {
    throw MessageTooLong(
        "Connection::recv_bytes: message of " + std::to_string(length) +
            " bytes exceeds max_length " + std::to_string(max_length) +
            "; it stays unread",
        static_cast<std::size_t>(std::min<std::uint64_t>(length, kNoLimit)),
        max_length);
  }
  std::vector<std::byte> message;
  if (length <= kEagerAllocation) {
    message.resize(static_cast<std::size_t>(length));
    take_payload(*head, message.data());
    return message;
  }
  // Grow with what arrives, not with what the header claims.
  begin_ += head->header;
  read_hint_ = kShortHeader;
  std::uint64_t done = 0;
  while (done < length) {
    const std::uint64_t want = std::min<std::uint64_t>(
        length - done, std::max<std::uint64_t>(done, kEagerAllocation));
    message.resize(static_cast<std::size_t>(done + want));
    read_payload(message.data() + done, want, length, done);
    done += want;
  }
  return message;
}

std::optional<std::size_t> Connection::recv_large_into(
    std::span<std::byte> out) {
  std::byte header[kLongHeader];
  const std::size_t header_bytes = header_size(last_length_);
  iovec parts[2] = {{header, header_bytes},
                    {out.data(), static_cast<std::size_t>(last_length_)}};
  ssize_t got;
  do {
    got = ::readv(fd_.get(), parts, 2);
  } while (got == -1 && errno == EINTR);
  if (got == -1 && errno != ECONNRESET)
    internal::throw_os_error("readv", errno);
  if (got <= 0) {
    at_eof_ = true;
    return std::nullopt;
  }
  const auto bytes = static_cast<std::size_t>(got);
  if (bytes >= header_bytes) {
    const ParsedHeader parsed = parse_header(header, header_bytes);
    if (parsed.size == header_bytes && parsed.length <= out.size() &&
        bytes - header_bytes <= parsed.length) {
      // All of it is this frame's: read the rest of the payload after it.
      const std::uint64_t payload = bytes - header_bytes;
      if (payload < parsed.length)
        read_payload(out.data() + payload, parsed.length - payload,
                     parsed.length, payload);
      expect_frames_like(parsed.length);
      return static_cast<std::size_t>(parsed.length);
    }
  }
  // A short header, one of another form or malformed, a frame that does
  // not fit, or one shorter than the last (the next frame's first bytes
  // came too): buffer what was read, in stream order, and let the general
  // path take it from there.
  if (buffer_.size() < std::max(bytes, kReadBuffer))
    buffer_.resize(std::max(bytes, kReadBuffer));
  const std::size_t in_header = std::min(bytes, header_bytes);
  std::memcpy(buffer_.data(), header, in_header);
  std::memcpy(buffer_.data() + in_header, out.data(), bytes - in_header);
  begin_ = 0;
  end_ = bytes;
  return std::nullopt;
}

std::optional<std::size_t> Connection::recv_bytes_into(
    std::span<std::byte> buffer) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kPipe>
      slowdown;
  // Large frames like the last: header and payload in one call, as a raw
  // read of the payload alone would take.
  if (fd_ && readable_ && !at_eof_ && begin_ == end_ &&
      last_length_ >= kDirectRead && last_length_ <= buffer.size()) {
    if (const auto length = recv_large_into(buffer)) return length;
    if (at_eof_) return std::nullopt;
  }
  // Fast path, the common case for small messages: one read brought the
  // whole frame (read_hint_ asks for exactly one), so copy it out and go.
  if (fd_ && readable_ &&
      (end_ - begin_ >= kShortHeader || fill_frame_start())) {
    const std::size_t buffered = end_ - begin_;
    const ParsedHeader parsed = parse_header(buffer_.data() + begin_, buffered);
    if (parsed.whole(buffered) && parsed.length <= buffer.size()) {
      const auto length = static_cast<std::size_t>(parsed.length);
      if (length > 0)
        std::memcpy(buffer.data(), buffer_.data() + begin_ + parsed.size,
                    length);
      begin_ += parsed.size + length;
      if (begin_ == end_) begin_ = end_ = 0;
      expect_frames_like(length);
      return length;
    }
  }
  const auto head = peek_frame();
  if (!head) return std::nullopt;
  if (head->length > buffer.size()) {
    throw MessageTooLong(
        "Connection::recv_bytes_into: message of " +
            std::to_string(head->length) + " bytes does not fit the " +
            std::to_string(buffer.size()) + "-byte buffer; it stays unread",
        static_cast<std::size_t>(
            std::min<std::uint64_t>(head->length, kNoLimit)),
        buffer.size());
  }
  take_payload(*head, buffer.data());
  return static_cast<std::size_t>(head->length);
}

bool Connection::skip_message() {
  const auto head = peek_frame();
  if (!head) return false;
  take_payload(*head, nullptr);
  return true;
}

bool Connection::poll(std::chrono::nanoseconds timeout) {
  require_open(false, "poll");
  if (at_eof_) return true;
  // A whole frame may be buffered already (or a malformed header, which
  // recv reports at once); part of one needs the rest.
  if (const std::size_t buffered = end_ - begin_; buffered >= kShortHeader) {
    const ParsedHeader parsed = parse_header(buffer_.data() + begin_, buffered);
    if (parsed.size == 0 || parsed.whole(buffered)) return true;
  }
  const auto ns = std::max(timeout, std::chrono::nanoseconds(0));
  const timespec ts{static_cast<time_t>(ns.count() / 1'000'000'000),
                    static_cast<long>(ns.count() % 1'000'000'000)};
  pollfd pfd{fd_.get(), POLLIN, 0};
  for (;;) {
    const int ready = ::ppoll(&pfd, 1, &ts, nullptr);
    if (ready == -1 && errno == EINTR)
      continue;  // restart with the full timeout
    internal::check(ready, "ppoll");
    return ready > 0;
  }
}

void Connection::close() {
  fd_.reset();
  buffer_.clear();
  buffer_.shrink_to_fit();
  begin_ = end_ = 0;
}

}  // namespace mp
