#include "lib/spawn.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
// Constructs the standard streams before the worker-mode initialiser below
// runs a task that may print.
#include <iostream>
#include <string>
#include <vector>

#include "lib/error.h"
#include "lib/task.h"

extern char** environ;

namespace mp::internal {
namespace {

// Worker mode: see spawn.h.
[[maybe_unused]] const bool g_worker_mode = [] {
  const char* value = std::getenv(kSpawnTaskFdVariable);
  if (value == nullptr) return false;
  char* end = nullptr;
  const long fd = std::strtol(value, &end, 10);
  ::unsetenv(kSpawnTaskFdVariable);
  if (end == value || *end != '\0' || fd < 3 || fd > 1 << 20) {
    // Not ours to run: a variable set by hand. Go on as the program.
    return false;
  }
  worker_main_from_fd(static_cast<int>(fd), {});
}();

class FileActions {
 public:
  FileActions() {
    if (const int e = ::posix_spawn_file_actions_init(&actions_))
      throw_os_error("posix_spawn_file_actions_init", e);
  }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&actions_); }
  // Keeps `fd` open under its own number across exec (glibc clears
  // FD_CLOEXEC when both numbers are equal).
  void inherit(int fd) {
    if (const int e = ::posix_spawn_file_actions_adddup2(&actions_, fd, fd))
      throw_os_error("posix_spawn_file_actions_adddup2", e);
  }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

class Attributes {
 public:
  Attributes() {
    if (const int e = ::posix_spawnattr_init(&attributes_))
      throw_os_error("posix_spawnattr_init", e);
    sigset_t all;
    sigset_t none;
    sigfillset(&all);
    sigemptyset(&none);
    ::posix_spawnattr_setsigdefault(&attributes_, &all);
    ::posix_spawnattr_setsigmask(&attributes_, &none);
    if (const int e = ::posix_spawnattr_setflags(
            &attributes_, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
      throw_os_error("posix_spawnattr_setflags", e);
  }
  ~Attributes() { ::posix_spawnattr_destroy(&attributes_); }
  posix_spawnattr_t* get() { return &attributes_; }

 private:
  posix_spawnattr_t attributes_;
};

}  // namespace

pid_t spawn_worker(int task_fd, std::span<const int> fds) {
  FileActions actions;
  actions.inherit(task_fd);
  for (int fd : fds) actions.inherit(fd);
  Attributes attributes;

  const std::string marker =
      std::string(kSpawnTaskFdVariable) + "=" + std::to_string(task_fd);
  std::vector<char*> environment;
  const std::size_t prefix = std::strlen(kSpawnTaskFdVariable) + 1;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, marker.c_str(), prefix) != 0)
      environment.push_back(*e);
  }
  environment.push_back(const_cast<char*>(marker.c_str()));
  environment.push_back(nullptr);
  char* const argv[] = {program_invocation_name, nullptr};

  pid_t pid = 0;
  if (const int e = ::posix_spawn(&pid, "/proc/self/exe", actions.get(),
                                  attributes.get(), argv, environment.data()))
    throw_os_error("posix_spawn", e, "/proc/self/exe");
  return pid;
}

}  // namespace mp::internal
