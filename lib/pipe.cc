#include "lib/pipe.h"

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
constexpr std::size_t kSmallMessage = 4096 - Connection::kHeaderSize;
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
  const std::uint64_t header = message.size();
  if (message.size() <= kSmallMessage) {
    // One contiguous write costs less than a two-part writev.
    std::byte frame[kHeaderSize + kSmallMessage];
    std::memcpy(frame, &header, kHeaderSize);
    if (!message.empty())  // an empty span's data() may be null
      std::memcpy(frame + kHeaderSize, message.data(), message.size());
    write_contiguous(frame, kHeaderSize + message.size());
    return;
  }
  iovec parts[2] = {{const_cast<std::uint64_t*>(&header), kHeaderSize},
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
    auto done = static_cast<std::size_t>(sent);
    while (count > 0 && done >= next->iov_len) {
      done -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<std::byte*>(next->iov_base) + done;
      next->iov_len -= done;
    }
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
  return fill(kHeaderSize, std::max(kHeaderSize, read_hint_));
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

std::optional<std::uint64_t> Connection::peek_length() {
  require_open(false, "recv_bytes");
  if (!fill_frame_start()) {
    const std::size_t partial = end_ - begin_;
    begin_ = end_ = 0;
    if (partial == 0) return std::nullopt;
    throw PeerError(
        "Connection::recv_bytes: the peer closed the connection in the middle "
        "of a "
        "frame header (" +
        std::to_string(partial) + " of 8 bytes received)");
  }
  std::uint64_t length;
  std::memcpy(&length, buffer_.data() + begin_, kHeaderSize);
  return length;
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
                   ? kHeaderSize
                   : kHeaderSize + static_cast<std::size_t>(length);
}

void Connection::take_payload(std::uint64_t length, std::byte* out) {
  begin_ += kHeaderSize;
  expect_frames_like(length);
  read_payload(out, length, length, 0);
}

std::optional<std::vector<std::byte>> Connection::recv_bytes(
    std::size_t max_length) {
  [[maybe_unused]] const internal::InjectedSlowdown<internal::Primitive::kPipe>
      slowdown;
  const auto length = peek_length();
  if (!length) return std::nullopt;
  if (*length > max_length) {
    throw MessageTooLong(
        "Connection::recv_bytes: message of " + std::to_string(*length) +
            " bytes exceeds max_length " + std::to_string(max_length) +
            "; it stays unread",
        static_cast<std::size_t>(std::min<std::uint64_t>(*length, kNoLimit)),
        max_length);
  }
  std::vector<std::byte> message;
  if (*length <= kEagerAllocation) {
    message.resize(static_cast<std::size_t>(*length));
    take_payload(*length, message.data());
    return message;
  }
  // Grow with what arrives, not with what the header claims.
  begin_ += kHeaderSize;
  read_hint_ = kHeaderSize;
  std::uint64_t done = 0;
  while (done < *length) {
    const std::uint64_t want = std::min<std::uint64_t>(
        *length - done, std::max<std::uint64_t>(done, kEagerAllocation));
    message.resize(static_cast<std::size_t>(done + want));
    read_payload(message.data() + done, want, *length, done);
    done += want;
  }
  return message;
}

std::optional<std::size_t> Connection::recv_large_into(
    std::span<std::byte> out) {
  std::uint64_t header;
  iovec parts[2] = {{&header, kHeaderSize},
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
  if (bytes >= kHeaderSize && header <= out.size() &&
      bytes - kHeaderSize <= header) {
    // All of it is this frame's: read the rest of the payload after it.
    const std::uint64_t payload = bytes - kHeaderSize;
    if (payload < header)
      read_payload(out.data() + payload, header - payload, header, payload);
    expect_frames_like(header);
    return static_cast<std::size_t>(header);
  }
  // A short header, a frame that does not fit, or one shorter than the
  // last (the next frame's first bytes came too): buffer what was read, in
  // stream order, and let the general path take it from there.
  if (buffer_.size() < std::max(bytes, kReadBuffer))
    buffer_.resize(std::max(bytes, kReadBuffer));
  const std::size_t in_header = std::min(bytes, kHeaderSize);
  std::memcpy(buffer_.data(), &header, in_header);
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
      (end_ - begin_ >= kHeaderSize || fill_frame_start())) {
    std::uint64_t length;
    std::memcpy(&length, buffer_.data() + begin_, kHeaderSize);
    if (length <= buffer.size() && end_ - begin_ - kHeaderSize >= length) {
      if (length > 0)
        std::memcpy(buffer.data(), buffer_.data() + begin_ + kHeaderSize,
                    length);
      begin_ += kHeaderSize + length;
      if (begin_ == end_) begin_ = end_ = 0;
      expect_frames_like(length);
      return static_cast<std::size_t>(length);
    }
  }
  const auto length = peek_length();
  if (!length) return std::nullopt;
  if (*length > buffer.size()) {
    throw MessageTooLong(
        "Connection::recv_bytes_into: message of " + std::to_string(*length) +
            " bytes does not fit the " + std::to_string(buffer.size()) +
            "-byte buffer; it stays unread",
        static_cast<std::size_t>(std::min<std::uint64_t>(*length, kNoLimit)),
        buffer.size());
  }
  take_payload(*length, buffer.data());
  return static_cast<std::size_t>(*length);
}

bool Connection::skip_message() {
  const auto length = peek_length();
  if (!length) return false;
  take_payload(*length, nullptr);
  return true;
}

bool Connection::poll(std::chrono::nanoseconds timeout) {
  require_open(false, "poll");
  if (at_eof_) return true;
  // A whole frame may be buffered already; part of one needs the rest.
  if (end_ - begin_ >= kHeaderSize) {
    std::uint64_t length;
    std::memcpy(&length, buffer_.data() + begin_, kHeaderSize);
    if (length <= end_ - begin_ - kHeaderSize) return true;
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
