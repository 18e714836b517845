// Fd: sole owner of a file descriptor.
//
// Move-only. The destructor closes the descriptor and never throws; close()
// reports a failed close as mp::OsError. A default-constructed or moved-from
// Fd holds nothing (get() == -1).
#ifndef MPBENCH_LIB_FD_H_
#define MPBENCH_LIB_FD_H_

#include <sys/uio.h>

#include <cstddef>
#include <utility>

namespace mp {

class Fd {
 public:
  Fd() noexcept = default;
  // Takes ownership of `fd` (may be -1).
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the held descriptor (errors ignored) and takes `fd`.
  void reset(int fd = -1) noexcept;
  // Closes the held descriptor; throws mp::OsError("close") on failure. The
  // descriptor is released either way (Linux frees it even on EINTR).
  void close();

 private:
  int fd_ = -1;
};

namespace internal {

// After a readv or writev over the `count` parts at `next` moved `done`
// bytes: steps past the parts it completed and trims the one it stopped in,
// so that the next call moves the rest (count 0: all done). Never throws.
void skip_transferred(iovec*& next, int& count, std::size_t done) noexcept;

}  // namespace internal
}  // namespace mp

#endif  // MPBENCH_LIB_FD_H_
