// Errors raised by mpbench.
//
// Every failed system call surfaces as one exception type, mp::OsError, whose
// what() reads "<call>: <errno text>" (for example
// "fork: Resource temporarily unavailable"), so a log line always names the
// call that failed. Logical misuse (starting a process twice, a message over
// a limit) uses the standard exception types and says so in each header.
#ifndef MPBENCH_LIB_ERROR_H_
#define MPBENCH_LIB_ERROR_H_

#include <cerrno>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

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
// hands for put/send, the connection or queue for recv/get).
class MessageTooLong : public std::length_error {
 public:
  MessageTooLong(const std::string& what, std::size_t length, std::size_t limit)
      : std::length_error(what), length_(length), limit_(limit) {}
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
