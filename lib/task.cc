#include "lib/task.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "lib/error.h"

namespace mp::internal {
namespace {

constexpr std::uint32_t kMagic = 0x6d707431;  // "mpt1"

// Where code lives: one loaded ELF object (the executable has the empty
// name, as dl_iterate_phdr reports it).
struct Object {
  std::string name;
  ElfW(Addr) base = 0;
  const ElfW(Phdr) * phdr = nullptr;
  ElfW(Half) phnum = 0;
};

std::vector<Object> loaded_objects() {
  std::vector<Object> objects;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        static_cast<std::vector<Object>*>(data)->push_back(
            {info->dlpi_name ? info->dlpi_name : "", info->dlpi_addr,
             info->dlpi_phdr, info->dlpi_phnum});
        return 0;
      },
      &objects);
  return objects;
}

// The objects loaded before main (the ones a fresh run of the program loads
// again) with their identities, recorded by the initialiser below, or at
// first use when that comes earlier. A fork server and its children inherit
// this table, so a child resolves its function without a system call or an
// allocation.
struct StartupObject {
  std::string name;
  std::string identity;
  Object object;
};

std::string identity(const Object& object);

const std::vector<StartupObject>& startup_objects() {
  static const std::vector<StartupObject> objects = [] {
    std::vector<StartupObject> result;
    for (const Object& object : loaded_objects())
      result.push_back({object.name, identity(object), object});
    return result;
  }();
  return objects;
}
[[maybe_unused]] const bool g_startup_recorded = (startup_objects(), true);

// True if `address` is in one of the object's executable segments.
bool contains(const Object& object, ElfW(Addr) address) {
  for (ElfW(Half) i = 0; i < object.phnum; ++i) {
    const ElfW(Phdr)& ph = object.phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
    const ElfW(Addr) start = object.base + ph.p_vaddr;
    if (address >= start && address < start + ph.p_memsz) return true;
  }
  return false;
}

// The GNU build id as hex, or the file's identity where the object has none.
std::string identity(const Object& object) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (ElfW(Half) i = 0; i < object.phnum; ++i) {
    const ElfW(Phdr)& ph = object.phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const std::size_t align = ph.p_align == 8 ? 8 : 4;
    const auto* p = reinterpret_cast<const char*>(object.base + ph.p_vaddr);
    const char* const end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) note;
      std::memcpy(&note, p, sizeof note);
      const char* name = p + sizeof note;
      const char* desc = name + ((note.n_namesz + align - 1) & ~(align - 1));
      if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
          std::memcmp(name, "GNU", 4) == 0 && desc + note.n_descsz <= end) {
        std::string hex = "build-id:";
        for (std::size_t k = 0; k < note.n_descsz; ++k) {
          const auto byte = static_cast<unsigned char>(desc[k]);
          hex += kHex[byte >> 4];
          hex += kHex[byte & 15];
        }
        return hex;
      }
      p = desc + ((note.n_descsz + align - 1) & ~(align - 1));
    }
  }
  const std::string path = object.name.empty() ? "/proc/self/exe" : object.name;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "unknown:" + path;
  return "file:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) +
         ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

// A function as another run of this program can find it.
struct CodeRef {
  std::string object;
  std::string identity;
  std::uint64_t offset = 0;
  std::size_t index = 0;  // in startup_objects()
};

CodeRef reference(const void* function) {
  const auto address = reinterpret_cast<ElfW(Addr)>(function);
  for (const Object& object : loaded_objects()) {
    if (!contains(object, address)) continue;
    const std::vector<StartupObject>& startup = startup_objects();
    for (std::size_t i = 0; i < startup.size(); ++i) {
      if (startup[i].name == object.name &&
          startup[i].object.base == object.base)
        return {object.name, startup[i].identity, address - object.base, i};
    }
    throw std::invalid_argument(
        "mp::Task: the function lives in " + object.name +
        ", loaded after program start (dlopen); a forkserver or spawn "
        "child cannot reference it. Use StartMethod::fork, or a function "
        "of the executable or of a library it links");
  }
  throw std::invalid_argument(
      "mp::Task: the function is in the code of no loaded object (generated "
      "code? data?); a forkserver or spawn child cannot reference it");
}

// Byte comparison in line: in a fresh forkserver child, memcmp's page of
// libc code would be one more page fault.
bool same(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Returns nullptr and sets `error` when the reference does not match.
TaskFunction resolve(std::string_view object, std::string_view identity,
                     std::uint64_t offset, const char** error) {
  for (const StartupObject& startup : startup_objects()) {
    if (!same(startup.name, object)) continue;
    if (!same(startup.identity, identity)) {
      *error = "the task's code comes from a different build of its file";
      return nullptr;
    }
    const ElfW(Addr) address = startup.object.base + offset;
    if (!contains(startup.object, address)) {
      *error = "the task's function offset is out of range";
      return nullptr;
    }
    return reinterpret_cast<TaskFunction>(address);
  }
  *error = "this process has not loaded the task's code";
  return nullptr;
}

void put_u64(std::string& out, std::uint64_t value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}
void put_bytes(std::string& out, std::string_view bytes) {
  put_u64(out, bytes.size());
  out.append(bytes);
}

// Reads without allocating; a read past the end sets failed() and yields
// zeros.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  std::uint64_t u64() noexcept {
    std::uint64_t value = 0;
    const std::string_view bytes = take(sizeof value);
    if (!bytes.empty()) std::memcpy(&value, bytes.data(), sizeof value);
    return value;
  }
  std::string_view bytes() noexcept { return take(u64()); }
  bool failed() const noexcept { return failed_; }

 private:
  std::string_view take(std::uint64_t n) noexcept {
    if (n > data_.size()) {
      failed_ = true;
      return {};
    }
    const std::string_view out = data_.substr(0, n);
    data_.remove_prefix(n);
    return out;
  }
  std::string_view data_;
  bool failed_ = false;
};

void validate_fds(const std::vector<int>& fds) {
  if (fds.size() > kMaxTaskFds) {
    throw std::invalid_argument("mp::Task: more than " +
                                std::to_string(kMaxTaskFds) + " fds");
  }
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (fds[i] < 3 || ::fcntl(fds[i], F_GETFD) == -1) {
      throw std::invalid_argument("mp::Task: fd " + std::to_string(fds[i]) +
                                  " is not an open descriptor above 2");
    }
    if (std::find(fds.begin(), fds.begin() + i, fds[i]) != fds.begin() + i) {
      throw std::invalid_argument("mp::Task: fd " + std::to_string(fds[i]) +
                                  " listed twice");
    }
  }
}

[[noreturn]] void fail(const char* what) noexcept {
  std::fprintf(stderr, "mp worker (pid %d): %s\n", static_cast<int>(::getpid()),
               what);
  std::fflush(stderr);
  ::_exit(1);
}

}  // namespace

constexpr int kHandleOffsetBits = 48;

std::uint64_t code_handle(const void* address) {
  const CodeRef ref = reference(address);
  if (ref.offset >> kHandleOffsetBits != 0)
    throw std::invalid_argument("mp: code offset beyond 2^48");
  return (std::uint64_t{ref.index} << kHandleOffsetBits) | ref.offset;
}

void* code_address(std::uint64_t handle) noexcept {
  const std::vector<StartupObject>& startup = startup_objects();
  const std::uint64_t index = handle >> kHandleOffsetBits;
  if (index >= startup.size()) return nullptr;
  const Object& object = startup[index].object;
  const ElfW(Addr) address =
      object.base + (handle & ((std::uint64_t{1} << kHandleOffsetBits) - 1));
  if (!contains(object, address)) return nullptr;
  return reinterpret_cast<void*>(address);
}

std::string startup_fingerprint() {
  std::string out;
  for (const StartupObject& object : startup_objects()) {
    put_bytes(out, object.name);
    put_bytes(out, object.identity);
  }
  return out;
}

void close_fds_except(std::span<int> keep) noexcept {
  std::sort(keep.begin(), keep.end());
  unsigned int from = 3;
  for (int fd : keep) {
    if (fd < static_cast<int>(from)) continue;
    if (static_cast<unsigned int>(fd) > from) ::close_range(from, fd - 1, 0);
    from = fd + 1;
  }
  ::close_range(from, ~0U, 0);
}

std::string encode_task(const Task& task, std::string_view name, bool daemon,
                        pid_t parent) {
  if (task.function == nullptr)
    throw std::invalid_argument("mp::Task: no function");
  validate_fds(task.fds);
  const CodeRef ref = reference(reinterpret_cast<const void*>(task.function));
  std::string out;
  put_u64(out, kMagic);
  put_u64(out, static_cast<std::uint64_t>(parent));
  put_u64(out, daemon ? 1 : 0);
  put_bytes(out, name);
  put_bytes(out, ref.object);
  put_bytes(out, ref.identity);
  put_u64(out, ref.offset);
  put_bytes(out, task.argument);
  put_u64(out, task.fds.size());
  for (int fd : task.fds) put_u64(out, static_cast<std::uint64_t>(fd));
  return out;
}

Fd task_memfd(std::string_view task) {
  Fd fd(::memfd_create("mp-task", MFD_CLOEXEC));
  if (!fd) throw_os_error("memfd_create");
  std::size_t done = 0;
  while (done < task.size()) {
    const ssize_t n = retry_on_eintr([&] {
      return ::pwrite(fd.get(), task.data() + done, task.size() - done, done);
    });
    if (n == -1) throw_os_error("pwrite", errno, "task memfd");
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

void worker_main(std::string_view task,
                 std::span<const int> received) noexcept {
  Reader reader(task);
  if (reader.u64() != kMagic) fail("not a task");
  const auto parent = static_cast<pid_t>(reader.u64());
  const bool daemon = reader.u64() != 0;
  const std::string_view name = reader.bytes();
  const std::string_view object = reader.bytes();
  const std::string_view identity = reader.bytes();
  const std::uint64_t offset = reader.u64();
  const std::string_view argument = reader.bytes();
  const std::uint64_t fd_count = reader.u64();
  if (reader.failed() || fd_count > kMaxTaskFds) fail("truncated task");
  int fds[kMaxTaskFds];
  for (std::uint64_t i = 0; i < fd_count; ++i)
    fds[i] = static_cast<int>(reader.u64());
  if (reader.failed()) fail("truncated task");

  if (!received.empty()) {
    if (received.size() != fd_count) fail("fd count mismatch");
    // Move every received descriptor above all target numbers first, so
    // that placing one never closes another not yet placed.
    int base = 2;
    for (std::uint64_t i = 0; i < fd_count; ++i) base = std::max(base, fds[i]);
    for (int fd : received) base = std::max(base, fd);
    int moved[kMaxTaskFds];
    for (std::uint64_t i = 0; i < fd_count; ++i) {
      moved[i] = ::fcntl(received[i], F_DUPFD_CLOEXEC, base + 1);
      if (moved[i] == -1) fail("fcntl(F_DUPFD) failed");
    }
    for (std::uint64_t i = 0; i < fd_count; ++i) {
      if (::dup2(moved[i], fds[i]) == -1) fail("dup2 failed");
    }
  }
  close_fds_except(std::span<int>(fds, fd_count));
  const char* error = nullptr;
  const TaskFunction function = resolve(object, identity, offset, &error);
  if (function == nullptr) fail(error);
  run_worker(function, argument, name, daemon, parent);
}

void worker_main_from_fd(int task_fd, std::span<const int> received) noexcept {
  try {
    struct stat st;
    if (::fstat(task_fd, &st) != 0) fail("fstat of the task failed");
    // Lives until _exit in worker_main.
    std::string data(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = retry_on_eintr([&] {
        return ::pread(task_fd, data.data() + done, data.size() - done, done);
      });
      if (n <= 0) fail("cannot read the task");
      done += static_cast<std::size_t>(n);
    }
    worker_main(data, received);
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

}  // namespace mp::internal
