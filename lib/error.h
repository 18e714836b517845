// Errors raised by mpbench.
//
// Every failed system call surfaces as one exception type, mp::OsError, whose
// what() reads "<call>: <errno text>" (for example
// "fork: Resource temporarily unavailable"), so a log line always names the
// call that failed. Logical misuse (starting a process twice, task_done too
// often) uses the standard exception types and says so in each header. Every
// exception type mpbench defines is declared here.
#ifndef MPBENCH_LIB_ERROR_H_
#define MPBENCH_LIB_ERROR_H_

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace mp {

// A system call failed. code() holds errno in std::generic_category().
class OsError : public std::system_error {
 public:
  // `call` names the system call or library function ("waitpid");
  // `context`, when given, is appended to the message to say which object
  // was involved ("pid 1234").
  OsError(std::string_view call, int error_number,
          std::string_view context = {});

  // The name of the failing call, without the errno text.
  const std::string& call() const noexcept { return call_; }
  int error_number() const noexcept { return code().value(); }

 private:
  std::string call_;
};

// A blocking call with a timeout did not complete in time. Thrown only by the
// timeout forms that cannot return a "not ready" value.
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The process on the other side of a connection, queue or channel has died or
// closed its end while this side still needed it.
class PeerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A message longer than the receiver's limit or the container's capacity.
// Nothing is consumed or lost: the message stays where it was (the sender's
// hands for put/send, the connection or queue for recv/get). A runtime error,
// not a logic error: the length can come from another process (a worker's
// results, a peer's frame).
class MessageTooLong : public std::runtime_error {
 public:
  MessageTooLong(const std::string& what, std::size_t length, std::size_t limit)
      : std::runtime_error(what), length_(length), limit_(limit) {}
  std::size_t length() const noexcept { return length_; }
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::size_t length_;
  std::size_t limit_;
};

// Operation on a queue, channel or connection that has been closed.
class ClosedError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// A timed get found nothing in time (Python's queue.Empty).
class Empty : public TimeoutError {
 public:
  using TimeoutError::TimeoutError;
};

// A timed put found no room in time (Python's queue.Full).
class Full : public TimeoutError {
 public:
  using TimeoutError::TimeoutError;
};

// Bytes that do not decode as the type asked for: malformed or truncated
// input, or a message sent as another type (typed get/recv check a type tag).
// When a typed get or recv took a whole message that then failed to decode,
// the message is not lost: message() holds its bytes (without the type tag);
// it is empty when the error came from decoding a bare buffer.
class DecodeError : public std::runtime_error {
 public:
  explicit DecodeError(const std::string& what) : std::runtime_error(what) {}
  DecodeError(const std::string& what, std::vector<std::byte> message)
      : std::runtime_error(what), message_(std::move(message)) {}
  const std::vector<std::byte>& message() const noexcept { return message_; }

 private:
  std::vector<std::byte> message_;
};

// --- Work distribution (mp::Pool, mp::fork_map) ---------------------------

// `fn` threw for an item (any exception, std::exception or not). Names the
// one item whose call threw; the pool stays usable.
class TaskError : public std::runtime_error {
 public:
  TaskError(const std::string& what, std::uint64_t item_index)
      : std::runtime_error(what), item_index_(item_index) {}
  std::uint64_t item_index() const noexcept { return item_index_; }

 private:
  std::uint64_t item_index_;
};

// A worker died while it held a chunk of this call; the chunk's results are
// lost. The worker has been replaced.
class WorkerLost : public std::runtime_error {
 public:
  WorkerLost(const std::string& what, std::uint64_t first_item,
             std::uint64_t count)
      : std::runtime_error(what), first_item_(first_item), count_(count) {}
  // The lost items: [first_item, first_item + count) of the call's input.
  std::uint64_t first_item() const noexcept { return first_item_; }
  std::uint64_t count() const noexcept { return count_; }

 private:
  std::uint64_t first_item_;
  std::uint64_t count_;
};

// The pool cannot run work: closed, terminated, or its initializer failed.
class PoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace internal {

// Throws OsError(call, error_number, context).
[[noreturn]] void throw_os_error(std::string_view call,
                                 int error_number = errno,
                                 std::string_view context = {});

// Returns `result`, or throws OsError naming `call` when it is -1.
template <typename T>
inline T check(T result, const char* call) {
  if (result == static_cast<T>(-1)) [[unlikely]]
    throw_os_error(call, errno);
  return result;
}

// Calls `f` until it does not fail with EINTR; returns its last result.
template <typename F>
inline auto retry_on_eintr(F&& f) {
  for (;;) {
    auto result = f();
    if (result != -1 || errno != EINTR) return result;
  }
}

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_ERROR_H_
