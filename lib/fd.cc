#include "lib/fd.h"

#include <unistd.h>

#include <string>

#include "lib/error.h"

namespace mp {

void Fd::reset(int fd) noexcept {
  // Retrying close on EINTR could close a descriptor another thread has just
  // been given, so it is never retried.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

void Fd::close() {
  if (fd_ < 0) return;
  const int fd = release();
  if (::close(fd) == -1) {
    internal::throw_os_error("close", errno, "fd " + std::to_string(fd));
  }
}

namespace internal {

void skip_transferred(iovec*& next, int& count, std::size_t done) noexcept {
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

}  // namespace internal

}  // namespace mp
