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

}  // namespace mp
