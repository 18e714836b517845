#include "lib/test_util.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace mp::testing {
namespace {

std::vector<std::string> list_dir(const char* path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path);
  if (dir == nullptr) return names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(dir);
  return names;
}

// Parses "pid (comm) S ppid ..." where comm may contain spaces and parens.
bool read_stat(pid_t pid, char* state, pid_t* ppid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  rest >> *state >> *ppid;
  return static_cast<bool>(rest);
}

}  // namespace

int count_open_fds() {
  // The directory stream itself holds one descriptor while listing.
  return static_cast<int>(list_dir("/proc/self/fd").size()) - 1;
}

std::vector<pid_t> child_pids() {
  std::vector<pid_t> children;
  const pid_t self = ::getpid();
  for (const std::string& name : list_dir("/proc")) {
    char* end = nullptr;
    const long pid = std::strtol(name.c_str(), &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    char state = 0;
    pid_t ppid = 0;
    if (read_stat(static_cast<pid_t>(pid), &state, &ppid) && ppid == self) {
      children.push_back(static_cast<pid_t>(pid));
    }
  }
  return children;
}

char process_state(pid_t pid) {
  char state = 0;
  pid_t ppid = 0;
  return read_stat(pid, &state, &ppid) ? state : 0;
}

bool process_running(pid_t pid) {
  const char state = process_state(pid);
  return state != 0 && state != 'Z' && state != 'X';
}

bool wait_until_gone(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (process_running(pid)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

LeakCheck::LeakCheck() : fds_(count_open_fds()) {}

std::string LeakCheck::Check() const {
  std::string problems;
  if (const int fds = count_open_fds(); fds != fds_) {
    problems += "open fds went from " + std::to_string(fds_) + " to " +
                std::to_string(fds) + "; ";
  }
  for (pid_t pid : child_pids()) {
    problems += "child " + std::to_string(pid) + " (state " +
                std::string(1, process_state(pid)) + ") left behind; ";
  }
  return problems;
}

}  // namespace mp::testing
