#include "lib/children.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <new>
#include <thread>

namespace mp::internal {

ChildTable* ChildTable::storage() {
  // Page-aligned so that registering a child writes exactly one page.
  static_assert(sizeof(ChildTable) <= 4096);
  alignas(4096) static unsigned char bytes[sizeof(ChildTable)];
  static ChildTable* const table = [] {
    // A page a forked child receives zero-filled (MADV_WIPEONFORK) instead of
    // sharing it copy-on-write: registering the child just after fork then
    // costs the parent no page copy. The child finds owner 0 and rebuilds.
    // Where that cannot be had, the static page above serves, copied.
    void* place = bytes;
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED) {
      if (::madvise(page, 4096, MADV_WIPEONFORK) == 0) {
        place = page;
      } else {
        ::munmap(page, 4096);
      }
    }
    auto* t = new (place) ChildTable();  // never destroyed
    std::atexit([] { finish_children(); });
    return t;
  }();
  return table;
}

ChildTable& ChildTable::instance() {
  ChildTable* const table = storage();
  const pid_t self = ::getpid();
  pid_t owner = table->owner_.load(std::memory_order_acquire);
  while (owner != self) {
    // First use in this process (the copy inherited through fork belongs to
    // the parent, its mutex possibly locked by a thread that does not exist
    // here). Claim with -self while rebuilding; other threads wait.
    if (owner != -self && table->owner_.compare_exchange_strong(
                              owner, -self, std::memory_order_acquire)) {
      table->reset_for(self);
      break;
    }
    std::this_thread::yield();
    owner = table->owner_.load(std::memory_order_acquire);
  }
  return *table;
}

void ChildTable::reset_for(pid_t owner) {
  new (&mutex_) std::mutex();
  inline_count_ = 0;
  // The parent's overflow entries are not ours; forget them without freeing,
  // which would only write to more copied pages.
  new (&overflow_) std::vector<ChildRecord>();
  owner_copy_.store(owner, std::memory_order_release);
  owner_.store(owner, std::memory_order_release);
}

void ChildTable::add(pid_t pid, bool daemon) {
  const ChildRecord record{pid, daemon, false, 0};
  if (inline_count_ < kInline) {
    inline_[inline_count_++] = record;
  } else {
    overflow_.push_back(record);
  }
}

void ChildTable::remove(pid_t pid) {
  for (std::size_t i = 0; i < inline_count_; ++i) {
    if (inline_[i].pid == pid) {
      inline_[i] = inline_[--inline_count_];
      if (!overflow_.empty()) {
        inline_[inline_count_++] = overflow_.back();
        overflow_.pop_back();
      }
      return;
    }
  }
  std::erase_if(overflow_,
                [pid](const ChildRecord& r) { return r.pid == pid; });
}

ChildRecord* ChildTable::find(pid_t pid) {
  for (std::size_t i = 0; i < inline_count_; ++i) {
    if (inline_[i].pid == pid) return &inline_[i];
  }
  for (ChildRecord& record : overflow_) {
    if (record.pid == pid) return &record;
  }
  return nullptr;
}

int exit_code_from_status(int status) noexcept {
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

void reap_owned(pid_t pid) noexcept {
  ChildTable& table = ChildTable::instance();
  std::lock_guard lock(table.mutex());
  int status = 0;
  pid_t got;
  do {
    got = ::waitpid(pid, &status, WNOHANG);
  } while (got == -1 && errno == EINTR);
  if (got != pid) return;
  if (ChildRecord* record = table.find(pid)) {
    record->reaped = true;
    record->status = status;
  }
}

void finish_children() noexcept {
  // A child that never started children of its own has nothing to do here,
  // and must not touch (and so copy) the inherited table.
  if (!ChildTable::in_use_by_this_process()) return;
  ChildTable& table = ChildTable::instance();
  std::vector<pid_t> pending;
  {
    std::lock_guard lock(table.mutex());
    table.for_each([&](const ChildRecord& record) {
      if (record.reaped) return;
      if (record.daemon) ::kill(record.pid, SIGTERM);
      pending.push_back(record.pid);
    });
  }
  for (pid_t pid : pending) {
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid, &status, 0);
    } while (got == -1 && errno == EINTR);
    std::lock_guard lock(table.mutex());
    if (ChildRecord* record = table.find(pid); record && got == pid) {
      record->reaped = true;
      record->status = status;
    }
  }
}

}  // namespace mp::internal
