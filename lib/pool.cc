#include "lib/pool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>

#include "lib/fd.h"
#include "lib/mapping.h"
#include "lib/process.h"
#include "lib/queue.h"
#include "lib/slowdown.h"
#include "lib/spsc_ring.h"
#include "lib/task.h"

namespace mp {

std::size_t default_chunksize(std::size_t items, std::size_t workers) {
  const std::size_t per = 4 * std::max<std::size_t>(workers, 1);
  return std::max<std::size_t>(1, (items + per - 1) / per);
}

std::size_t default_chunksize(std::size_t items, std::size_t workers,
                              std::size_t mean_item_bytes) {
  const std::size_t python = default_chunksize(items, workers);
  if (mean_item_bytes == 0) return python;
  return std::clamp<std::size_t>(kDefaultChunkBytes / mean_item_bytes, 1,
                                 python);
}

namespace internal {
namespace {

using Clock = std::chrono::steady_clock;

// How often a waiting call checks that the workers still live.
constexpr auto kHealthInterval = std::chrono::milliseconds(20);
// Items queued for each worker, whatever the chunksize, beyond `prefetch`
// chunks: small chunks keep the rings busy enough that neither side waits
// (at chunksize 1, four chunks ahead would make every round a hand-off).
// With 256, a worker that lost its CPU for a moment to another process ran
// dry, and maps of small chunks took 3-5x longer on a loaded 2-core
// machine; 16,384 (with kPackItems 512) against 2,048 (with 64), Intel Xeon
// VM, 2 workers, map_into of 1,000,000 doubles: 9.4 -> 4.6 ms at chunksize
// 1, 5.1 -> 2.0 ms at 8, 4.7 -> 2.0 ms at 64 (10,000 doubles: 112 -> 87,
// 63 -> 39 and 55 -> 38 us), and no change to SHA-512 or sleep maps.
constexpr std::uint64_t kItemsAhead = 16384;
// A worker with its next task in view publishes its results at least every
// kPublishEvery chunks and kPublishAfter.
constexpr std::uint64_t kPublishEvery = 64;
constexpr auto kPublishAfter = std::chrono::microseconds(20);
// Items a frame of several small chunks carries at most (see
// chunks_per_frame); measured with kItemsAhead above.
constexpr std::uint64_t kPackItems = 512;
// A chunk at least this large is published as soon as it is in its ring.
constexpr std::size_t kPublishAtOnceBytes = 64 << 10;
// How long an idle worker waits for a task before it looks at its stop flags.
constexpr auto kWorkerPoll = std::chrono::milliseconds(100);
// A worker's exit code when its initializer threw.
constexpr int kInitializerFailed = 3;
// A worker's exit code when the pool's parent is gone.
constexpr int kParentGone = 4;

struct TaskHeader {
  std::uint64_t seq;
  std::uint64_t count;
  std::uint64_t invoker;
  std::uint64_t fn;
  // The chunk's results in bytes when they travel as their object bytes
  // (the worker reserves them in its result ring and fn writes them there),
  // kUnknownSize when they are encoded as they come.
  std::uint64_t result_bytes;
  // Items per chunk: a frame may carry several consecutive chunks of one
  // call (see fill()); the worker runs them one by one, telling its slot
  // which one runs. At least `count` when the frame is one chunk.
  std::uint64_t chunk_items;
  // Bytes of one item when the frame carries several chunks (items travel
  // as their object bytes then), else 0.
  std::uint64_t item_bytes;
};
constexpr std::uint64_t kUnknownSize = ~std::uint64_t{0};

enum class ResultKind : std::uint32_t {
  kResults,
  kError,
  kTooLong,  // the chunk's results did not fit one result queue message
  kRetiring,
  kInitializerFailed
};

struct ResultHeader {
  ResultKind kind;
  std::uint32_t worker;
  std::uint64_t seq;
  // kError: offset of the failing item in the chunk; kTooLong: bytes of
  // the results.
  std::uint64_t detail;
  std::uint64_t limit;  // kTooLong: the most one result message may carry
};

// One per worker slot, in shared memory: how many tasks the worker has taken
// from its task ring, written before it runs each one, so that after its
// death the parent knows which chunks it took (lost) and which are still in
// the ring (moved to its replacement). On its own cache line.
struct alignas(64) WorkerSlot {
  std::atomic<std::uint64_t> taken{0};
  // Which chunk of its current task's frame the worker runs (0 for a frame
  // of one chunk): read once the worker has died, to name the chunk lost.
  std::atomic<std::uint64_t> running_chunk{0};
};

// Shared between the parent and the workers; `workers` WorkerSlots follow.
struct PoolShared {
  std::atomic<std::uint32_t> stop{0};
  // The parent sleeps here when every result ring is empty; a worker that
  // publishes results wakes it only if it has announced that it sleeps.
  SharedEvent results;
};

constexpr std::size_t kSlotsOffset = (sizeof(PoolShared) + 63) / 64 * 64;

// Bytes of the shared state of a pool of `workers`.
std::size_t control_bytes(std::size_t workers) {
  return kSlotsOffset + workers * sizeof(WorkerSlot);
}

// A forkserver or spawn worker's exit code when it cannot join its pool.
constexpr int kBadStart = 5;
constexpr std::uint64_t kWorkerMagic = 0x6d70706f6f6c7731;  // "mppoolw1"

// What a worker runs with, wherever it started.
struct WorkerEnv {
  std::size_t index = 0;
  SpscRing* tasks = nullptr;
  SpscRing* results = nullptr;
  PoolShared* shared = nullptr;
  WorkerSlot* slot = nullptr;
  std::size_t max_tasks_per_child = 0;
  const std::function<void()>* initializer = nullptr;  // fork
  void (*initializer_function)() = nullptr;            // forkserver, spawn
  // Tasks name their code by code handles (lib/task.h), not addresses.
  bool code_handles = false;
};

// Set by a worker's SIGTERM handler: finish the running chunk, then exit.
volatile sig_atomic_t g_worker_sigterm = 0;
void on_worker_sigterm(int) { g_worker_sigterm = 1; }

}  // namespace

int worker_loop(const WorkerEnv& env);
int pool_worker_task(std::string_view bytes);

std::optional<std::span<const std::byte>> take(
    Queue& queue, std::vector<std::byte>& buffer,
    std::optional<std::chrono::nanoseconds> wait) {
  if (buffer.size() < 4096) buffer.resize(4096);
  for (;;) {
    try {
      const std::optional<std::size_t> n =
          wait ? queue.get_bytes_into(buffer, *wait)
               : queue.try_get_bytes_into(buffer);
      if (!n) return std::nullopt;
      return std::span<const std::byte>(buffer.data(), *n);
    } catch (const Empty&) {
      return std::nullopt;
    } catch (const MessageTooLong& e) {
      buffer.resize(e.length());
    }
  }
}

std::string describe_exit(std::optional<int> exitcode) {
  if (!exitcode) return "exited, exit status unavailable (reaped elsewhere)";
  const int code = *exitcode;
  if (code < 0)
    return "was killed by signal " + std::to_string(-code) + " (" +
           ::strsignal(-code) + ")";
  return "exited with code " + std::to_string(code);
}

struct Task {
  std::uint64_t job;
  std::uint64_t chunk;  // the first of its frame's chunks
  std::uint64_t first_item;
  std::uint64_t count;
  std::uint64_t chunk_items;  // items per chunk (the last may hold fewer)
  std::uint64_t seq;
  std::size_t worker;
  std::uint64_t position;  // index among the tasks put into the worker's ring
  // The task's message where it sits in the worker's task ring: while the
  // worker has not taken it, the ring keeps it intact, and a replacement
  // gets a copy.
  const std::byte* message;
  std::size_t bytes;

  // Chunks in its frame.
  std::uint64_t chunks() const {
    return (count + chunk_items - 1) / chunk_items;
  }
};

// "chunk 3 (items 12..15)", or "chunks 0..63 (items 0..63)" for a frame of
// several.
std::string describe_chunks(const Task& task) {
  std::string chunks = task.chunks() > 1
                           ? "chunks " + std::to_string(task.chunk) + ".." +
                                 std::to_string(task.chunk + task.chunks() - 1)
                           : "chunk " + std::to_string(task.chunk);
  return chunks + " (items " + std::to_string(task.first_item) + ".." +
         std::to_string(task.first_item + task.count - 1) + ")";
}

// The tasks put into one worker's ring and not yet completed, oldest first:
// a ring buffer that keeps its storage, so that steady traffic allocates
// nothing (a std::deque allocates and frees a block every few tasks).
class TaskFifo {
 public:
  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  Task& operator[](std::size_t i) {
    return tasks_[(head_ + i) & (tasks_.size() - 1)];
  }
  Task& front() { return (*this)[0]; }
  void push_back(const Task& task) {
    if (size_ == tasks_.size()) grow();
    (*this)[size_++] = task;
  }
  void pop_front() {
    head_ = (head_ + 1) & (tasks_.size() - 1);
    --size_;
  }
  // Removes the i-th task (rare: a worker's death).
  void erase(std::size_t i) {
    for (; i + 1 < size_; ++i) (*this)[i] = (*this)[i + 1];
    --size_;
  }

 private:
  void grow() {
    std::vector<Task> bigger(std::max<std::size_t>(64, 2 * tasks_.size()));
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = (*this)[i];
    tasks_ = std::move(bigger);
    head_ = 0;
  }
  std::vector<Task> tasks_;  // a power of two long
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

struct Job {
  std::string name;  // "map #3" for messages
  void* fn = nullptr;
  Invoker invoker = nullptr;
  std::size_t result_bytes = 0;  // of one result; 0: not known in advance
  std::unique_ptr<ChunkSource> source;
  bool ordered = true;
  bool unbounded = true;
  bool source_done = false;
  bool abandoned = false;
  std::uint64_t chunks_made = 0;
  std::uint64_t next_to_deliver = 0;
  std::uint64_t in_flight = 0;
  std::map<std::uint64_t, ChunkResult> ready;
  std::exception_ptr failure;
  // map_into: results go straight into the caller's buffer.
  ResultSink sink = nullptr;
  void* out = nullptr;
  // A chunk built but not yet accepted by a worker's ring. The buffer keeps
  // its capacity from chunk to chunk.
  bool staged = false;
  std::vector<std::byte> staged_message;
  Task staged_task{};

  bool finished() const {
    return source_done && !staged && in_flight == 0 && ready.empty();
  }
};

struct Worker {
  Process process;
  std::unique_ptr<SpscRing> tasks;    // the parent produces, the worker takes
  std::unique_ptr<SpscRing> results;  // the worker produces, the parent takes
  std::uint64_t puts = 0;             // tasks put into `tasks`
  std::uint64_t items_ahead = 0;      // items of the tasks in flight
  TaskFifo in_flight;                 // put and not completed, in put order
  bool unflushed = false;             // tasks committed but not published
  bool retiring = false;              // said it would exit after its last task
  bool exiting = false;               // handle_exit is under way for it
  // forkserver, spawn: the rings' memfds, until the worker has started.
  Fd tasks_fd;
  Fd results_fd;
};

class PoolCore {
 public:
  explicit PoolCore(PoolOptions options);
  ~PoolCore() { terminate(); }
  std::uint64_t start_job(void* fn, ChunkCode code,
                          std::unique_ptr<ChunkSource> source, bool ordered,
                          bool unbounded, ResultSink sink, void* out);
  std::optional<ChunkResult> next_chunk(std::uint64_t job,
                                        const Deadline& deadline);
  void forget_job(std::uint64_t job) noexcept;
  void join();
  void terminate() noexcept;

  StartMethod method;
  PoolOptions options;
  Mapping shared_memory;
  Fd shared_fd;  // forkserver, spawn: shared_memory's memfd
  // forkserver, spawn: what workers are handed to run the initializer and
  // to check that they run the same code.
  std::optional<std::uint64_t> initializer_handle;
  std::string fingerprint;
  // forkserver, spawn: code handles of the functions calls have used.
  std::unordered_map<const void*, std::uint64_t> code_handles;
  PoolShared* shared = nullptr;
  std::vector<Worker> workers;
  std::map<std::uint64_t, Job> jobs;
  std::uint64_t next_seq = 0;
  std::uint64_t next_job = 0;
  std::uint64_t started = 0;
  std::size_t round_robin = 0;
  bool closed = false;
  bool terminated = false;
  bool source_ended = false;  // a dispatch found a job's source empty
  std::string broken;         // why the pool cannot run work, if it cannot
  Clock::time_point last_health_check = Clock::now();
  // Rings of replaced workers, kept until no view into them can be held.
  std::vector<std::unique_ptr<SpscRing>> retired_rings;
  mutable std::mutex pids_mutex;  // guards `pids` for GracefulShutdown's thread
  std::vector<pid_t> pids;

  WorkerSlot& slot(std::size_t index) const {
    return reinterpret_cast<WorkerSlot*>(shared_memory.bytes() +
                                         kSlotsOffset)[index];
  }
  void make_rings(std::size_t index);
  void start_worker(std::size_t index);
  int worker_main(std::size_t index);
  void dispatch();
  bool fill(std::size_t index, std::size_t level, std::uint64_t items,
            std::uint64_t share);
  std::uint64_t chunks_per_frame(const Job& job, const Worker& w,
                                 std::uint64_t share) const;
  std::uint64_t items_ahead_limit() const;
  bool pump(const Deadline& deadline);
  bool poll_results();
  bool results_waiting() const;
  void drain(std::size_t index);
  void handle_message(std::size_t index, SpscRing::View& view);
  void handle_result(std::size_t index, std::span<const std::byte> message);
  void check_health();
  void handle_exit(std::size_t index);
  // `running`: which chunk of the task's frame was running, when known.
  void lose(const Task& task, const std::string& worker, const char* when,
            const char* replaced,
            std::optional<std::uint64_t> running = std::nullopt);
  void complete_task(const Task& task);
  void fail_job(Job& job, std::exception_ptr error);
  void fail_all(const std::string& why);
  void publish_pids();
  // Erases a job, keeping its staging buffer's capacity for the next one.
  void erase_job(std::map<std::uint64_t, Job>::iterator it) {
    if (it->second.staged_message.capacity() > spare_message.capacity())
      spare_message = std::move(it->second.staged_message);
    jobs.erase(it);
  }
  // A staging buffer left by a finished job: a call whose chunks are
  // encoded before they travel (items of varying size) reuses its pages
  // instead of faulting in fresh ones.
  std::vector<std::byte> spare_message;
};

void PoolCore::publish_pids() {
  std::lock_guard lock(pids_mutex);
  pids.clear();
  for (Worker& w : workers) pids.push_back(w.process.pid());
}

namespace {

// Shared memory a worker that is not a fork of this process can map: a
// memfd (close-on-exec, no name anyone can open), its descriptor in `fd`.
Mapping memfd_mapping(std::size_t bytes, Fd& fd) {
  fd = Fd(::memfd_create("mp-pool", MFD_CLOEXEC));
  if (!fd) throw_os_error("memfd_create");
  check(::ftruncate(fd.get(), static_cast<off_t>(bytes)), "ftruncate");
  void* address =
      ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (address == MAP_FAILED) throw_os_error("mmap", errno, "pool memfd");
  return Mapping(address, bytes);
}

}  // namespace

// Fresh rings for worker slot `index` (a replaced worker may have left a
// half-written frame in its old ones).
void PoolCore::make_rings(std::size_t index) {
  Worker& w = workers[index];
  if (w.tasks) retired_rings.push_back(std::move(w.tasks));
  if (w.results) retired_rings.push_back(std::move(w.results));
  const SpscRingOptions task_options{options.task_queue_bytes, options.wait};
  const SpscRingOptions result_options{options.result_queue_bytes,
                                       options.wait};
  if (method == StartMethod::fork) {
    w.tasks = std::make_unique<SpscRing>(task_options);
    w.results = std::make_unique<SpscRing>(result_options);
  } else {
    w.tasks = std::make_unique<SpscRing>(
        task_options,
        memfd_mapping(SpscRing::memory_bytes(task_options.capacity_bytes),
                      w.tasks_fd),
        SpscRing::In::kCreate);
    w.results = std::make_unique<SpscRing>(
        result_options,
        memfd_mapping(SpscRing::memory_bytes(result_options.capacity_bytes),
                      w.results_fd),
        SpscRing::In::kCreate);
  }
  w.puts = 0;
  w.unflushed = false;
  slot(index).taken.store(0, std::memory_order_relaxed);
  slot(index).running_chunk.store(0, std::memory_order_relaxed);
}

// What a worker that is not a fork of this process needs to find its pool:
// the argument of pool_worker_task.
struct WorkerArgument {
  std::uint64_t magic = kWorkerMagic;
  std::uint64_t index = 0;
  std::uint64_t workers = 0;
  std::uint64_t task_queue_bytes = 0;
  std::uint64_t result_queue_bytes = 0;
  std::int64_t spin_ns = 0;
  std::int64_t liveness_ns = 0;
  std::uint64_t max_tasks_per_child = 0;
  std::uint64_t has_initializer = 0;
  std::uint64_t initializer = 0;  // a code handle
  std::int64_t shared_fd = -1;
  std::int64_t tasks_fd = -1;
  std::int64_t results_fd = -1;
  // startup_fingerprint() follows.
};

void PoolCore::start_worker(std::size_t index) {
  Worker& w = workers[index];
  const std::string name = "PoolWorker-" + std::to_string(started + 1);
  Process process;
  if (method == StartMethod::fork) {
    process = Process([this, index] { return worker_main(index); }, name);
  } else {
    WorkerArgument argument;
    argument.index = index;
    argument.workers = workers.size();
    argument.task_queue_bytes = options.task_queue_bytes;
    argument.result_queue_bytes = options.result_queue_bytes;
    argument.spin_ns = options.wait.spin.count();
    argument.liveness_ns = options.wait.liveness_check.count();
    argument.max_tasks_per_child = options.max_tasks_per_child;
    argument.has_initializer = initializer_handle.has_value();
    argument.initializer = initializer_handle.value_or(0);
    argument.shared_fd = shared_fd.get();
    argument.tasks_fd = w.tasks_fd.get();
    argument.results_fd = w.results_fd.get();
    std::string bytes(reinterpret_cast<const char*>(&argument),
                      sizeof argument);
    bytes += fingerprint;
    process = Process(
        mp::Task{pool_worker_task,
                 std::move(bytes),
                 {shared_fd.get(), w.tasks_fd.get(), w.results_fd.get()}},
        name);
    process.set_start_method(method);
  }
  process.set_daemon(true);
  try {
    process.start();
  } catch (const std::exception& e) {
    if (started < workers.size()) throw;  // the constructor reports it
    // A replacement that cannot start (the fork server died): the pool
    // cannot run what was queued for this slot.
    broken = std::string("a worker could not be started: ") + e.what();
    fail_all(broken);
    return;
  }
  // The worker has mapped what it needs: its rings' descriptors are done.
  w.tasks_fd.reset();
  w.results_fd.reset();
  w.process = std::move(process);
  w.retiring = false;
  w.exiting = false;
  ++started;
  publish_pids();
}

// The worker's life, in the forked child.
int PoolCore::worker_main(std::size_t index) {
  WorkerEnv env;
  env.index = index;
  env.tasks = workers[index].tasks.get();
  env.results = workers[index].results.get();
  env.shared = shared;
  env.slot = &slot(index);
  env.max_tasks_per_child = options.max_tasks_per_child;
  env.initializer = &options.initializer;
  return worker_loop(env);
}

// A worker's loop, wherever it started: runs the chunks of its task ring
// and reports in its result ring until told to stop.
int worker_loop(const WorkerEnv& env) {
  g_worker_sigterm = 0;
  struct sigaction action {};
  action.sa_handler = on_worker_sigterm;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGTERM, &action, nullptr);

  const std::size_t index = env.index;
  PoolShared* const shared = env.shared;
  SpscRing& tasks = *env.tasks;
  SpscRing& results = *env.results;
  // The parent sleeps on shared->results for all its result rings: every
  // publication of ours wakes it there, those the ring makes while it waits
  // for room included (a frame that wraps the ring's end waits for the
  // parent to read the padding before it, and the parent learns of that
  // padding only from such a wake-up).
  results.set_consumer_event(&shared->results);
  std::atomic<std::uint64_t>& taken = env.slot->taken;
  std::atomic<std::uint64_t>& running_chunk = env.slot->running_chunk;
  // Each chunk's results are published as the chunk ends, so that a worker
  // that dies loses only the chunk it runs; the parent is woken only if it
  // has announced that it sleeps (lib/spsc_ring.cc's protocol: its
  // announcement is followed by a heavy fence, our publication by the
  // ring's light or seq_cst fence).
  const auto publish = [&] {
    results.flush();
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (shared->results.sleepers.load(std::memory_order_seq_cst) != 0)
      shared->results.notify_all();
  };
  const auto report = [&](ResultKind kind, std::uint64_t seq,
                          std::uint64_t detail,
                          std::span<const std::byte> payload) {
    ResultHeader header{kind, static_cast<std::uint32_t>(index), seq, detail,
                        0};
    if (sizeof header + payload.size() > results.max_message()) {
      // Results that cannot travel fail their call, not this worker.
      header = {ResultKind::kTooLong, header.worker, seq, payload.size(),
                results.max_message() - sizeof header};
      payload = {};
    }
    const std::size_t bytes = sizeof header + payload.size();
    std::optional<SpscRing::Loan> loan = results.try_loan(bytes);
    if (!loan) {
      publish();  // the parent makes room only for what it sees
      loan.emplace(results.loan(bytes));
    }
    std::memcpy(loan->data(), &header, sizeof header);
    if (!payload.empty())
      std::memcpy(loan->data() + sizeof header, payload.data(), payload.size());
    loan->commit(Publish::kDeferred);
  };
  try {
    if ((env.initializer != nullptr && *env.initializer) ||
        env.initializer_function != nullptr) {
      ChunkFailure failure;
      if (!run_chunk(1, failure, [&](std::uint64_t) {
            if (env.initializer_function != nullptr) {
              env.initializer_function();
            } else {
              (*env.initializer)();
            }
          })) {
        report(ResultKind::kInitializerFailed, 0, 0,
               std::as_bytes(std::span(failure.what)));
        publish();
        return kInitializerFailed;
      }
    }
    std::vector<std::byte> out;
    ChunkFailure failure;
    std::uint64_t done = 0;
    const auto run = [&](SpscRing::View& task) {
      running_chunk.store(0, std::memory_order_relaxed);
      taken.store(done + 1, std::memory_order_release);
      // The gate's test build stretches a chunk's work and its report.
      [[maybe_unused]] const InjectedSlowdown<Primitive::kPool> slowdown;
      TaskHeader header;
      std::memcpy(&header, task.data(), sizeof header);
      const auto items = task.bytes().subspan(sizeof header);
      out.clear();
      void* fn = reinterpret_cast<void*>(header.fn);
      void* invoker_address = reinterpret_cast<void*>(header.invoker);
      if (env.code_handles) {
        fn = code_address(header.fn);
        invoker_address = code_address(header.invoker);
      }
      const auto invoker = reinterpret_cast<Invoker>(invoker_address);
      // A frame of several chunks runs chunk by chunk, so that the parent
      // can name the one that was running if this worker dies.
      const auto invoke = [&](std::byte* flat_out) {
        if (header.item_bytes == 0 || header.chunk_items >= header.count ||
            flat_out == nullptr) {
          return invoker(fn, items, header.count, flat_out, out, failure);
        }
        if (header.chunk_items == 0 ||
            items.size() != header.count * header.item_bytes ||
            header.result_bytes % header.count != 0) {
          failure = {0, "the worker received a malformed task"};
          return false;
        }
        const std::uint64_t result_item_bytes =
            header.result_bytes / header.count;
        std::uint64_t chunk = 0;
        for (std::uint64_t first = 0; first < header.count;
             first += header.chunk_items, ++chunk) {
          running_chunk.store(chunk, std::memory_order_relaxed);
          const std::uint64_t n =
              std::min(header.chunk_items, header.count - first);
          if (!invoker(fn,
                       items.subspan(first * header.item_bytes,
                                     n * header.item_bytes),
                       n, flat_out + first * result_item_bytes, out, failure)) {
            failure.item += first;
            return false;
          }
        }
        return true;
      };
      bool ok = false;
      if (fn == nullptr || invoker_address == nullptr) {
        task.release();
        failure = {0, "the worker cannot find the call's code"};
      } else if (header.result_bytes != kUnknownSize &&
                 header.result_bytes <=
                     results.max_message() - sizeof(ResultHeader)) {
        // Results of a known size are written where they travel: straight
        // into the result ring, behind their header.
        const std::size_t bytes = sizeof(ResultHeader) + header.result_bytes;
        std::optional<SpscRing::Loan> loan = results.try_loan(bytes);
        if (!loan) {
          publish();  // the parent makes room only for what it sees
          loan.emplace(results.loan(bytes));
        }
        ok = invoke(loan->data() + sizeof(ResultHeader));
        task.release();
        if (ok) {
          const ResultHeader done_header{ResultKind::kResults,
                                         static_cast<std::uint32_t>(index),
                                         header.seq, 0, 0};
          std::memcpy(loan->data(), &done_header, sizeof done_header);
          loan->commit(Publish::kDeferred);
        }
      } else {
        ok = invoke(nullptr);
        task.release();
        if (ok) report(ResultKind::kResults, header.seq, 0, out);
      }
      if (!ok) {
        report(ResultKind::kError, header.seq, failure.item,
               std::as_bytes(std::span(failure.what)));
      }
      ++done;
    };
    // Results wait unpublished only while the next task is already in view,
    // for at most kPublishEvery chunks and kPublishAfter since the last
    // publication: a busy worker publishes in batches (one cache-line
    // hand-off for many chunks), and slow chunks still report as they end.
    // One clock read per chunk.
    std::uint64_t unpublished = 0;
    Clock::time_point last_publication = Clock::now();
    const auto publish_or_defer = [&](bool next_in_view) {
      const Clock::time_point now = Clock::now();
      if (next_in_view && ++unpublished < kPublishEvery &&
          now - last_publication < kPublishAfter)
        return;
      publish();
      unpublished = 0;
      last_publication = now;
    };
    for (;;) {
      if (shared->stop.load(std::memory_order_acquire) || g_worker_sigterm) {
        publish();
        return 0;
      }
      if (env.max_tasks_per_child != 0 && done == env.max_tasks_per_child) {
        // seq carries our pid: the pool may have replaced us already.
        report(ResultKind::kRetiring, static_cast<std::uint64_t>(::getpid()), 0,
               {});
        publish();
        return 0;
      }
      if (std::optional<SpscRing::View> task = tasks.try_recv_view()) {
        run(*task);
        publish_or_defer(tasks.readable());
        continue;
      }
      publish();
      unpublished = 0;
      if (tasks.end_of_stream()) return 0;  // the pool closed our ring
      try {
        std::optional<SpscRing::View> task = tasks.recv_view(kWorkerPoll);
        if (!task) return 0;
        run(*task);
        publish_or_defer(tasks.readable());
      } catch (const Empty&) {
        // Look at the stop flags again.
      }
    }
  } catch (const PeerError&) {
    return kParentGone;
  }
}

namespace {

// Maps `bytes` of the memfd `fd` (handed over by the pool) and closes it,
// or reports why not on stderr and returns an empty Mapping.
Mapping map_handed(int fd, std::size_t bytes) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::fprintf(stderr, "mp::Pool worker: fstat(%d): %s\n", fd,
                 std::strerror(errno));
    return {};
  }
  if (static_cast<std::size_t>(st.st_size) < bytes) {
    std::fprintf(stderr, "mp::Pool worker: fd %d holds %lld bytes, not %zu\n",
                 fd, static_cast<long long>(st.st_size), bytes);
    return {};
  }
  void* address =
      ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int error = errno;
  ::close(fd);
  if (address == MAP_FAILED) {
    std::fprintf(stderr, "mp::Pool worker: mmap of fd %d: %s\n", fd,
                 std::strerror(error));
    return {};
  }
  return Mapping(address, bytes);
}

}  // namespace

// A forkserver or spawn worker's entry (an mp::Task): maps the memory the
// pool handed over and runs worker_loop.
int pool_worker_task(std::string_view bytes) {
  WorkerArgument argument;
  if (bytes.size() < sizeof argument) {
    std::fprintf(stderr, "mp::Pool worker: truncated argument\n");
    return kBadStart;
  }
  std::memcpy(&argument, bytes.data(), sizeof argument);
  if (argument.magic != kWorkerMagic || argument.workers == 0 ||
      argument.index >= argument.workers) {
    std::fprintf(stderr, "mp::Pool worker: not a pool worker's argument\n");
    return kBadStart;
  }
  if (bytes.substr(sizeof argument) != startup_fingerprint()) {
    std::fprintf(stderr,
                 "mp::Pool worker: this program's code differs from its "
                 "pool's (another build, or other libraries loaded)\n");
    return kBadStart;
  }
  const WaitPolicy wait{std::chrono::nanoseconds(argument.spin_ns),
                        std::chrono::nanoseconds(argument.liveness_ns)};
  Mapping control = map_handed(static_cast<int>(argument.shared_fd),
                               control_bytes(argument.workers));
  Mapping task_memory =
      map_handed(static_cast<int>(argument.tasks_fd),
                 SpscRing::memory_bytes(argument.task_queue_bytes));
  Mapping result_memory =
      map_handed(static_cast<int>(argument.results_fd),
                 SpscRing::memory_bytes(argument.result_queue_bytes));
  if (!control || !task_memory || !result_memory) {
    return kBadStart;
  }
  SpscRing tasks({argument.task_queue_bytes, wait}, std::move(task_memory),
                 SpscRing::In::kAttach);
  SpscRing results({argument.result_queue_bytes, wait},
                   std::move(result_memory), SpscRing::In::kAttach);
  WorkerEnv env;
  env.index = argument.index;
  env.tasks = &tasks;
  env.results = &results;
  env.shared = static_cast<PoolShared*>(control.data());
  env.slot = &reinterpret_cast<WorkerSlot*>(control.bytes() +
                                            kSlotsOffset)[argument.index];
  env.max_tasks_per_child = argument.max_tasks_per_child;
  env.code_handles = true;
  if (argument.has_initializer) {
    env.initializer_function =
        reinterpret_cast<void (*)()>(code_address(argument.initializer));
    if (env.initializer_function == nullptr) {
      std::fprintf(stderr, "mp::Pool worker: cannot find the initializer\n");
      return kBadStart;
    }
  }
  return worker_loop(env);
}

namespace {

StartMethod method_of(const PoolOptions& options) {
  return options.start.value_or(get_start_method());
}

}  // namespace

PoolCore::PoolCore(PoolOptions opts) : method(method_of(opts)) {
  if (opts.workers <= 0)
    opts.workers =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (opts.prefetch == 0) opts.prefetch = 1;
  if (opts.result_queue_bytes < kMinResultQueueBytes) {
    throw std::invalid_argument("Pool: result_queue_bytes must be at least " +
                                std::to_string(kMinResultQueueBytes) +
                                ", got " +
                                std::to_string(opts.result_queue_bytes));
  }
  options = std::move(opts);
  if (method != StartMethod::fork) {
    if (options.initializer) {
      void (*const* function)() = options.initializer.target<void (*)()>();
      if (function == nullptr || *function == nullptr) {
        throw std::logic_error(
            "Pool: start method " + std::string(to_string(method)) +
            " cannot run an initializer closure, whose state lives only in "
            "this process; give PoolOptions::initializer a plain function "
            "pointer (+[] { ... } or &function), or use StartMethod::fork");
      }
      initializer_handle =
          code_handle(reinterpret_cast<const void*>(*function));
    }
    fingerprint = startup_fingerprint();
  }
  const auto n = static_cast<std::size_t>(options.workers);
  shared_memory = method == StartMethod::fork
                      ? Mapping::shared(control_bytes(n))
                      : memfd_mapping(control_bytes(n), shared_fd);
  shared = new (shared_memory.data()) PoolShared();
  for (std::size_t i = 0; i < n; ++i)
    new (shared_memory.bytes() + kSlotsOffset + i * sizeof(WorkerSlot))
        WorkerSlot();
  workers.resize(n);
  try {
    for (std::size_t i = 0; i < n; ++i) make_rings(i);
    for (std::size_t i = 0; i < n; ++i) start_worker(i);
  } catch (...) {
    terminate();
    throw;
  }
}

std::uint64_t PoolCore::start_job(void* fn, ChunkCode code,
                                  std::unique_ptr<ChunkSource> source,
                                  bool ordered, bool unbounded, ResultSink sink,
                                  void* out) {
  if (terminated) throw PoolError("Pool: the pool was terminated");
  if (closed) throw PoolError("Pool: the pool is closed");
  if (!broken.empty()) throw PoolError("Pool: " + broken);
  const std::uint64_t id = next_job++;
  Job& job = jobs[id];
  job.staged_message = std::move(spare_message);
  job.name = "call #" + std::to_string(id);
  job.fn = fn;
  job.invoker = code.invoker;
  job.result_bytes = code.result_bytes;
  job.source = std::move(source);
  job.ordered = ordered;
  job.unbounded = unbounded;
  job.sink = sink;
  job.out = out;
  dispatch();
  return id;
}

void PoolCore::fail_job(Job& job, std::exception_ptr error) {
  if (!job.failure) job.failure = std::move(error);
  job.source_done = true;  // no more of its chunks are sent
  job.staged = false;
  job.ready.clear();
}

void PoolCore::fail_all(const std::string& why) {
  for (auto& [id, job] : jobs)
    fail_job(job, std::make_exception_ptr(PoolError("Pool: " + why)));
}

// How many chunks of `job` the next frame for worker `w` carries. Several
// consecutive chunks dealt to one worker in one pass travel in one frame
// when that changes nothing a caller can see: a map (its results go
// straight to their place; it fails as a whole) of items and results that
// travel as their object bytes, with no max_tasks_per_child (which counts
// chunks). The worker still runs them chunk by chunk (an error or its death
// names the exact chunk); the frame's header, its hand-off and its
// bookkeeping are paid once per kPackItems items instead of once per chunk.
// No more than `share` (items_ahead_limit()) minus what the worker holds, so
// that a small call is still split over every worker, and a frame and its
// results take at most a quarter of their rings.
std::uint64_t PoolCore::chunks_per_frame(const Job& job, const Worker& w,
                                         std::uint64_t share) const {
  const std::uint64_t item_bytes = job.source->flat_item_bytes();
  if (job.sink == nullptr || job.result_bytes == 0 || item_bytes == 0 ||
      options.max_tasks_per_child != 0)
    return 1;
  std::uint64_t room = kPackItems;
  if (share > w.items_ahead) room = std::min(room, share - w.items_ahead);
  room = std::min({room, w.tasks->max_message() / 4 / item_bytes,
                   w.results->max_message() / 4 / job.result_bytes});
  return std::max<std::uint64_t>(1, room / job.source->chunksize());
}

// Puts chunks into worker `index`'s ring until it holds `level` of them
// or, with `items`, until they hold that many items (unpublished:
// dispatch() flushes); frames of several chunks hold no more than `share`
// (see chunks_per_frame). Returns false when no job has a chunk to give.
bool PoolCore::fill(std::size_t index, std::size_t level, std::uint64_t items,
                    std::uint64_t share) {
  Worker& w = workers[index];
  while (w.in_flight.size() < level && (items == 0 || w.items_ahead < items)) {
    Job* job = nullptr;
    std::uint64_t job_id = 0;
    for (auto& [id, candidate] : jobs) {
      if (candidate.failure || candidate.abandoned) continue;
      if (candidate.staged) {
        job = &candidate;
        job_id = id;
        break;
      }
      if (candidate.source_done) continue;
      const std::size_t limit = 2 * workers.size() * (options.prefetch + 1);
      if (!candidate.unbounded && !closed &&
          candidate.in_flight + candidate.ready.size() >= limit)
        continue;
      job = &candidate;
      job_id = id;
      break;
    }
    if (job == nullptr) return false;
    // The chunk is in the ring: its task is in flight.
    const auto put = [&](SpscRing::Loan& loan) {
      Task task = job->staged_task;
      task.worker = index;
      task.position = w.puts++;
      task.message = loan.data();
      task.bytes = loan.size();
      // A large chunk is published at once: its worker starts on it while
      // the next one is encoded for the others.
      if (loan.size() >= kPublishAtOnceBytes) {
        loan.commit(Publish::kNow);
      } else {
        loan.commit(Publish::kDeferred);
        w.unflushed = true;
      }
      w.in_flight.push_back(task);
      w.items_ahead += task.count;
      ++job->in_flight;
      job->staged = false;
    };
    // `chunks`: how many chunks the frame carries (chunks_per_frame).
    const auto make_task = [&](std::byte* at, std::uint64_t first,
                               std::uint64_t count, std::uint64_t chunks) {
      const std::uint64_t chunk_items =
          chunks > 1 ? job->source->chunksize() : count;
      const TaskHeader header{
          next_seq,
          count,
          reinterpret_cast<std::uint64_t>(job->invoker),
          reinterpret_cast<std::uint64_t>(job->fn),
          job->result_bytes != 0 ? count * job->result_bytes : kUnknownSize,
          chunk_items,
          chunks > 1 ? job->source->flat_item_bytes() : 0};
      std::memcpy(at, &header, sizeof header);
      job->staged_task = Task{
          job_id, job->chunks_made, first, count, chunk_items, next_seq, index,
          0,      nullptr,          0};
      job->chunks_made += job->staged_task.chunks();
      ++next_seq;
    };
    std::vector<std::byte>& message = job->staged_message;
    if (!job->staged) {
      const std::uint64_t chunks = chunks_per_frame(*job, w, share);
      // Items of a known encoded size are encoded straight into the ring.
      const std::optional<std::size_t> direct = job->source->next_size(chunks);
      if (direct && sizeof(TaskHeader) + *direct <= w.tasks->max_message()) {
        std::optional<SpscRing::Loan> loan =
            w.tasks->try_loan(sizeof(TaskHeader) + *direct);
        if (!loan) return true;  // this worker's ring is full for now
        std::uint64_t first = 0, count = 0;
        job->source->next_into(loan->data() + sizeof(TaskHeader), chunks, first,
                               count);
        make_task(loan->data(), first, count, chunks);
        put(*loan);
        continue;
      }
      message.resize(sizeof(TaskHeader));
      std::uint64_t first = 0, count = 0;
      if (!job->source->next(message, first, count)) {
        job->source_done = true;
        source_ended = true;
        continue;
      }
      make_task(message.data(), first, count, 1);
      job->staged = true;
    }
    if (message.size() > w.tasks->max_message()) {
      const std::string limit = std::to_string(w.tasks->max_message());
      fail_job(
          *job,
          std::make_exception_ptr(MessageTooLong(
              "Pool: chunk " + std::to_string(job->staged_task.chunk) + " of " +
                  job->name + " takes " + std::to_string(message.size()) +
                  " bytes, more than one message of the task queue "
                  "holds (" +
                  limit +
                  " bytes): raise PoolOptions::task_queue_bytes or lower "
                  "chunksize",
              message.size(), w.tasks->max_message())));
      continue;
    }
    std::optional<SpscRing::Loan> loan = w.tasks->try_loan(message.size());
    if (!loan) return true;  // this worker's ring is full for now
    std::memcpy(loan->data(), message.data(), message.size());
    put(*loan);
  }
  return true;
}

// kItemsAhead, but no more than a worker's share of the items the calls
// still have to run (in flight or not yet dealt), so that a call smaller
// than that (1,024 SHA-512 items) is split over every worker instead of
// queued behind the first: map of 1,024 SHA-512s at chunksize 1 ran on one
// worker, slower than the serial loop.
std::uint64_t PoolCore::items_ahead_limit() const {
  std::uint64_t outstanding = 0;
  std::uint64_t live = 0;
  for (const Worker& w : workers) {
    outstanding += w.items_ahead;
    if (!w.retiring && !w.exiting) ++live;
  }
  for (const auto& [id, job] : jobs) {
    if (job.failure || job.abandoned || job.source_done) continue;
    const std::optional<std::uint64_t> left = job.source->items_left();
    if (!left) return kItemsAhead;  // a source of unknown length
    outstanding += *left + (job.staged ? job.staged_task.count : 0);
  }
  if (live == 0) return kItemsAhead;
  return std::clamp<std::uint64_t>((outstanding + live - 1) / live, 1,
                                   kItemsAhead);
}

// Deals chunks out one per worker per round, up to `prefetch` each, so a
// call of a few chunks spreads over every worker instead of queueing
// behind the first one; then publishes each ring's new chunks at once.
void PoolCore::dispatch() {
  if (terminated || !broken.empty() ||
      shared->stop.load(std::memory_order_relaxed))
    return;
  [&] {
    const std::uint64_t ahead = items_ahead_limit();
    for (std::size_t level = 1; level <= options.prefetch; ++level) {
      for (std::size_t k = 0; k < workers.size(); ++k) {
        const std::size_t index = (round_robin + k) % workers.size();
        if (workers[index].retiring || workers[index].exiting) continue;
        if (!fill(index, level, 0, ahead)) return;
      }
    }
    for (std::size_t k = 0; k < workers.size(); ++k) {
      const std::size_t index = (round_robin + k) % workers.size();
      if (workers[index].retiring || workers[index].exiting) continue;
      if (!fill(index, SIZE_MAX, ahead, ahead)) return;
    }
  }();
  round_robin = (round_robin + 1) % workers.size();
  for (Worker& w : workers) {
    if (!w.unflushed) continue;
    w.tasks->flush();
    w.unflushed = false;
  }
}

void PoolCore::complete_task(const Task& task) {
  auto job_it = jobs.find(task.job);
  if (job_it != jobs.end()) {
    --job_it->second.in_flight;
    if (job_it->second.abandoned && job_it->second.in_flight == 0)
      erase_job(job_it);
  }
}

// A message from worker slot `index`'s result ring, read in place.
void PoolCore::handle_message(std::size_t index, SpscRing::View& view) {
  ResultHeader header;
  if (view.size() < sizeof header) {
    throw PeerError("Pool: a " + std::to_string(view.size()) +
                    "-byte result message from worker pid " +
                    std::to_string(workers[index].process.pid()));
  }
  std::memcpy(&header, view.data(), sizeof header);
  if (header.kind == ResultKind::kRetiring) {
    view.release();
    // The health check may have seen this worker exit and replaced it before
    // its farewell was read, and handle_exit itself reads results: only the
    // current generation, and only once, is handled here.
    Worker& w = workers[index];
    if (static_cast<pid_t>(header.seq) != w.process.pid() || w.exiting) return;
    w.retiring = true;
    handle_exit(index);
    return;
  }
  handle_result(index, view.bytes());
}

void PoolCore::handle_result(std::size_t index,
                             std::span<const std::byte> message) {
  [[maybe_unused]] const InjectedSlowdown<Primitive::kPool> slowdown;
  ResultHeader header;
  std::memcpy(&header, message.data(), sizeof header);
  const auto payload = message.subspan(sizeof header);
  if (header.kind == ResultKind::kInitializerFailed) {
    broken = "the initializer failed in a worker: " +
             std::string(reinterpret_cast<const char*>(payload.data()),
                         payload.size());
    fail_all(broken);
    return;
  }
  // A worker runs its ring's tasks in order: this is its oldest one.
  Worker& w = workers[index];
  if (w.in_flight.empty() || w.in_flight.front().seq != header.seq) {
    throw PeerError("Pool: worker pid " + std::to_string(w.process.pid()) +
                    " answered task " + std::to_string(header.seq) +
                    ", which it was not running");
  }
  const Task task = w.in_flight.front();
  w.in_flight.pop_front();
  w.items_ahead -= task.count;
  auto job_it = jobs.find(task.job);
  if (job_it == jobs.end()) return;
  Job& job = job_it->second;
  --job.in_flight;
  if (job.abandoned) {
    if (job.in_flight == 0) erase_job(job_it);
    return;
  }
  if (job.failure) return;
  if (header.kind == ResultKind::kTooLong) {
    fail_job(job,
             std::make_exception_ptr(MessageTooLong(
                 "Pool: the results of " + describe_chunks(task) + " of " +
                     job.name + " take " + std::to_string(header.detail) +
                     " bytes, more than one message of the result queue "
                     "holds (" +
                     std::to_string(header.limit) +
                     " bytes): raise PoolOptions::result_queue_bytes or lower "
                     "chunksize",
                 header.detail, header.limit)));
    return;
  }
  if (header.kind == ResultKind::kError) {
    const std::uint64_t item = task.first_item + header.detail;
    fail_job(
        job,
        std::make_exception_ptr(TaskError(
            "Pool: item " + std::to_string(item) + " (chunk " +
                std::to_string(task.chunk + header.detail / task.chunk_items) +
                " of " + job.name + ") raised: " +
                std::string(reinterpret_cast<const char*>(payload.data()),
                            payload.size()),
            item)));
    return;
  }
  if (job.sink != nullptr) {
    try {
      job.sink(job.out, task.first_item, task.count, payload);
    } catch (...) {
      fail_job(job, std::current_exception());
    }
    return;
  }
  ChunkResult result;
  result.first_item = task.first_item;
  result.count = task.count;
  result.payload.assign(payload.begin(), payload.end());
  job.ready.emplace(task.chunk, std::move(result));
}

// Handles every message worker slot `index` has published.
void PoolCore::drain(std::size_t index) {
  for (;;) {
    std::optional<SpscRing::View> view =
        workers[index].results->try_recv_view();
    if (!view) return;
    handle_message(index, *view);
  }
}

// Handles what the workers have published; returns whether there was any.
bool PoolCore::poll_results() {
  bool any = false;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    // A bounded batch per worker, so that one busy worker cannot starve the
    // others' rings.
    for (int n = 0; n < 4096; ++n) {
      Worker& w = workers[i];
      if (w.exiting) break;
      std::optional<SpscRing::View> view = w.results->try_recv_view();
      if (!view) break;
      any = true;
      handle_message(i, *view);
    }
  }
  return any;
}

bool PoolCore::results_waiting() const {
  for (const Worker& w : workers) {
    if (!w.exiting && w.results->readable()) return true;
  }
  return false;
}

// Fails the job whose chunk `task` is: "Pool: worker pid <worker> <when>
// chunk ... of call #n; <replaced>".
void PoolCore::lose(const Task& task, const std::string& worker,
                    const char* when, const char* replaced,
                    std::optional<std::uint64_t> running) {
  workers[task.worker].items_ahead -= task.count;
  complete_task(task);
  auto job_it = jobs.find(task.job);
  if (job_it == jobs.end() || job_it->second.failure ||
      job_it->second.abandoned)
    return;
  // The chunk that was running, when the frame holds several.
  Task named = task;
  if (running && *running < task.chunks()) {
    named.chunk = task.chunk + *running;
    named.first_item = task.first_item + *running * task.chunk_items;
    named.count =
        std::min(task.chunk_items, task.count - *running * task.chunk_items);
    named.chunk_items = named.count;
  }
  fail_job(job_it->second, std::make_exception_ptr(WorkerLost(
                               "Pool: worker pid " + worker + " " + when + " " +
                                   describe_chunks(named) + " of " +
                                   job_it->second.name + "; " + replaced,
                               named.first_item, named.count)));
}

// A worker has exited (or announced that it is retiring): collect what it
// sent, report the chunks it took and never finished, and replace it,
// handing its replacement fresh rings and the chunks it never took.
void PoolCore::handle_exit(std::size_t index) {
  Worker& w = workers[index];
  w.exiting = true;
  if (w.retiring) w.process.join();
  const std::optional<int> code = w.process.exitcode();
  // Everything it published is in its result ring: read it first.
  try {
    drain(index);
  } catch (const PeerError&) {
    // A corrupt ring: what it holds after that is lost with the worker.
  }
  const std::uint64_t taken = slot(index).taken.load(std::memory_order_acquire);
  const std::string pid = std::to_string(w.process.pid());
  const std::string worker = pid + " " + describe_exit(code);
  if (code == kInitializerFailed && broken.empty()) {
    broken = "the initializer failed in worker pid " + pid;
    fail_all(broken);
  }
  if (code == kBadStart && broken.empty()) {
    broken = "worker pid " + pid +
             " could not join the pool (its reason is on stderr)";
    fail_all(broken);
  }
  const bool replace = !terminated && broken.empty() &&
                       !shared->stop.load(std::memory_order_relaxed) &&
                       !(closed && w.tasks->closed());
  const char* fate =
      replace ? "the worker was replaced" : "the worker was not replaced";
  // The chunk it was running first (any before it finished, but died
  // unpublished with it).
  for (std::size_t i = 0; i < w.in_flight.size(); ++i) {
    if (w.in_flight[i].position + 1 != taken) continue;
    const Task task = w.in_flight[i];
    w.in_flight.erase(i);
    lose(task, worker, "while running", fate,
         slot(index).running_chunk.load(std::memory_order_relaxed));
    break;
  }
  while (!w.in_flight.empty() && w.in_flight.front().position < taken) {
    const Task task = w.in_flight.front();
    w.in_flight.pop_front();
    lose(task, worker, "while running", fate);
  }
  if (!replace) {
    // Not replaced: the chunks waiting in its ring are lost with it.
    while (!w.in_flight.empty()) {
      const Task task = w.in_flight.front();
      w.in_flight.pop_front();
      lose(task, worker, "before running", fate);
    }
    return;
  }
  // The chunks it never took are still intact in its old task ring.
  std::unique_ptr<SpscRing> old_tasks = std::move(w.tasks);
  make_rings(index);
  for (std::size_t i = 0; i < w.in_flight.size(); ++i) {
    Task& task = w.in_flight[i];
    std::optional<SpscRing::Loan> loan = w.tasks->try_loan(task.bytes);
    if (!loan)  // cannot happen: they fitted in a ring of the same size
      throw PoolError("Pool: a replaced worker's chunks do not fit its ring");
    std::memcpy(loan->data(), task.message, task.bytes);
    task.message = loan->data();
    task.position = w.puts++;
    loan->commit(Publish::kDeferred);
  }
  w.tasks->flush();
  retired_rings.push_back(std::move(old_tasks));
  start_worker(index);
}

void PoolCore::check_health() {
  last_health_check = Clock::now();
  for (std::size_t i = 0; i < workers.size(); ++i) {
    Worker& w = workers[i];
    // An exited worker that was not replaced (closing, stopping) stays
    // `exiting`: it is accounted for already.
    if (!w.exiting && w.process.pid() != 0 && !w.process.is_alive())
      handle_exit(i);
  }
}

// Handles whatever results have arrived, waiting for some (until the
// deadline or the next health check) when none has. Returns false when the
// deadline passed.
bool PoolCore::pump(const Deadline& deadline) {
  retired_rings.clear();  // no view into them is held here
  source_ended = false;
  dispatch();
  // A source found empty only now may have finished the caller's job (its
  // chunks all sent and answered): let the caller look before we wait for
  // results that will not come.
  if (source_ended) return true;
  if (Clock::now() - last_health_check > kHealthInterval) check_health();
  if (poll_results()) return true;
  // Spin on the rings, then sleep until a worker publishes: it wakes us
  // only after we announce that we sleep (see worker_main's publish).
  const Deadline slice = Deadline::after(deadline.remaining(kHealthInterval));
  internal::wait_for(
      shared->results, options.wait, slice, [&] { return results_waiting(); },
      [] { heavy_fence(); });
  if (poll_results()) return true;
  check_health();
  return !deadline.passed();
}

std::optional<ChunkResult> PoolCore::next_chunk(std::uint64_t job_id,
                                                const Deadline& deadline) {
  for (;;) {
    auto it = jobs.find(job_id);
    if (it == jobs.end())
      throw std::logic_error("Pool: unknown or finished call");
    Job& job = it->second;
    if (job.failure) std::rethrow_exception(job.failure);
    if (!job.ready.empty()) {
      auto first = job.ready.begin();
      if (!job.ordered || first->first == job.next_to_deliver) {
        ChunkResult result = std::move(first->second);
        job.ready.erase(first);
        ++job.next_to_deliver;
        dispatch();  // a bounded job may now make more
        return result;
      }
    }
    if (job.finished()) return std::nullopt;
    if (terminated) throw PoolError("Pool: the pool was terminated");
    if (!broken.empty()) throw PoolError("Pool: " + broken);
    if (!pump(deadline))
      throw TimeoutError("Pool: result not ready within the timeout");
  }
}

void PoolCore::forget_job(std::uint64_t job_id) noexcept {
  auto it = jobs.find(job_id);
  if (it == jobs.end()) return;
  Job& job = it->second;
  if (job.in_flight == 0) {
    erase_job(it);
    return;
  }
  job.abandoned = true;
  job.source_done = true;
  job.staged = false;
  job.ready.clear();
}

void PoolCore::join() {
  if (!closed && !terminated) {
    throw std::logic_error("Pool::join: call close() or terminate() first");
  }
  if (terminated) return;
  // Finish what was submitted (results stay with their calls).
  auto pending = [&] {
    for (const Worker& w : workers) {
      if (!w.in_flight.empty()) return true;
    }
    for (auto& [id, job] : jobs) {
      if (!job.failure && !job.abandoned && (!job.source_done || job.staged))
        return true;
    }
    return false;
  };
  while (pending() && broken.empty()) pump(Deadline());
  for (Worker& w : workers) w.tasks->close();
  for (std::size_t i = 0; i < workers.size(); ++i) {
    Worker& w = workers[i];
    while (!w.process.join(kHealthInterval)) poll_results();
  }
}

void PoolCore::terminate() noexcept {
  if (terminated) return;
  terminated = true;
  shared->stop.store(1, std::memory_order_release);
  for (Worker& w : workers) {
    try {
      if (w.tasks) w.tasks->close();
      if (w.process.pid() != 0) {
        w.process.kill();
        w.process.join();
      }
    } catch (...) {
      // Reaped elsewhere (GracefulShutdown): nothing left to stop.
    }
  }
  fail_all("the pool was terminated");
}

}  // namespace internal

// --- Pool
// ---------------------------------------------------------------------

Pool::Pool(PoolOptions options)
    : core_(std::make_unique<internal::PoolCore>(std::move(options))) {}
Pool::~Pool() { terminate(); }

std::size_t Pool::map_default_chunksize(std::size_t items,
                                        std::size_t item_bytes,
                                        std::size_t mean_bytes) const {
  const std::size_t python =
      default_chunksize(items, static_cast<std::size_t>(workers()), mean_bytes);
  if (item_bytes == 0) return python;
  const PoolOptions& o = core_->options;
  const std::size_t quarter =
      std::min(o.task_queue_bytes, o.result_queue_bytes) / 4;
  return std::clamp<std::size_t>(quarter / item_bytes, 1, python);
}

std::uint64_t Pool::start(void* fn, internal::ChunkCode code,
                          std::unique_ptr<internal::ChunkSource> source,
                          bool ordered, bool unbounded,
                          internal::ResultSink sink, void* out) {
  if (core_->method != StartMethod::fork) {
    // Workers that are not forks of this process find code by handle.
    const auto handle = [&](const void* address) {
      auto [it, added] = core_->code_handles.try_emplace(address, 0);
      if (added) {
        try {
          it->second = internal::code_handle(address);
        } catch (...) {
          core_->code_handles.erase(it);
          throw;
        }
      }
      return it->second;
    };
    fn = reinterpret_cast<void*>(handle(fn));
    code.invoker = reinterpret_cast<internal::Invoker>(
        handle(reinterpret_cast<const void*>(code.invoker)));
  }
  return core_->start_job(fn, code, std::move(source), ordered, unbounded, sink,
                          out);
}

void Pool::close() { core_->closed = true; }
void Pool::join() { core_->join(); }
void Pool::terminate() noexcept { core_->terminate(); }
int Pool::workers() const { return core_->options.workers; }
StartMethod Pool::start_method() const { return core_->method; }

std::vector<pid_t> Pool::worker_pids() const {
  std::lock_guard lock(core_->pids_mutex);
  return core_->pids;
}

std::uint64_t Pool::workers_started() const { return core_->started; }

void Pool::request_stop() noexcept {
  core_->shared->stop.store(1, std::memory_order_release);
}

namespace internal {

std::optional<ChunkResult> next_chunk(PoolCore& core, std::uint64_t job,
                                      const Deadline& deadline) {
  return core.next_chunk(job, deadline);
}

void forget_job(PoolCore& core, std::uint64_t job) noexcept {
  core.forget_job(job);
}

void finish_job(PoolCore& core, std::uint64_t job) {
  try {
    while (core.next_chunk(job, Deadline())) {
    }
  } catch (...) {
    core.forget_job(job);
    throw;
  }
  core.forget_job(job);
}

}  // namespace internal

}  // namespace mp
