#include "lib/peers.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <mutex>

namespace mp::internal {
namespace {

std::atomic<pid_t> g_cached_pid{0};

}  // namespace

pid_t current_pid() {
  pid_t pid = g_cached_pid.load(std::memory_order_relaxed);
  if (pid != 0) [[likely]]
    return pid;
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork(nullptr, nullptr,
                     [] { g_cached_pid.store(0, std::memory_order_relaxed); });
  });
  pid = ::getpid();
  g_cached_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) == -1 && errno == ESRCH) return false;
  // kill() succeeds on a zombie: an exited child its parent has not reaped.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  const char state = line[close + 2];
  return state != 'Z' && state != 'X' && state != 'x';
}

void PeerTable::join(Role role) {
  const pid_t self = current_pid();
  for (Slot& slot : slots_) {
    if (slot.pid.load(std::memory_order_acquire) == self) {
      slot.roles.fetch_or(role, std::memory_order_release);
      return;
    }
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (Slot& slot : slots_) {
      pid_t seen = slot.pid.load(std::memory_order_acquire);
      // First pass: empty slots; second: slots of processes that are gone.
      const bool free =
          pass == 0 ? seen == 0 : (seen != 0 && !process_alive(seen));
      if (!free) continue;
      if (slot.pid.compare_exchange_strong(seen, self,
                                           std::memory_order_acq_rel)) {
        slot.roles.store(role, std::memory_order_release);
        return;
      }
    }
  }
  overflowed_.store(1, std::memory_order_relaxed);
}

bool PeerTable::anyone_alive(Role role) const {
  if (overflowed_.load(std::memory_order_relaxed)) return true;
  const pid_t self = current_pid();
  const pid_t creator = creator_.load(std::memory_order_relaxed);
  if (creator != self && process_alive(creator)) return true;
  bool any_registered = false;
  for (const Slot& slot : slots_) {
    const pid_t pid = slot.pid.load(std::memory_order_acquire);
    if (pid == 0 || !(slot.roles.load(std::memory_order_acquire) & role))
      continue;
    any_registered = true;
    // Another thread of this process may still act.
    if (pid == self || process_alive(pid)) return true;
  }
  // Nobody has taken the role yet: one may still be starting (a forked child
  // that has not reached its first call). Only the death of every process
  // that did take it is evidence that nobody ever will.
  return !any_registered;
}

std::string PeerTable::describe(Role role) const {
  std::string text = role == kProducer ? "producers:" : "consumers:";
  bool any = false;
  for (const Slot& slot : slots_) {
    const pid_t pid = slot.pid.load(std::memory_order_acquire);
    if (pid == 0 || !(slot.roles.load(std::memory_order_acquire) & role))
      continue;
    text += any ? ", pid " : " pid ";
    text += std::to_string(pid);
    text += process_alive(pid) ? " (alive)" : " (gone)";
    any = true;
  }
  if (!any) text += " none registered";
  const pid_t creator = creator_.load(std::memory_order_relaxed);
  text += "; creator pid " + std::to_string(creator) +
          (process_alive(creator) ? " (alive)" : " (gone)");
  return text;
}

}  // namespace mp::internal
