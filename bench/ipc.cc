// How fast data moves between processes, each mechanism against the raw limit
// measured in the same run.
//
// Throughput (producer here, consumer in a peer process started once per
// benchmark run and ready, its buffer in place, before the timed loop; a
// ring's first lap sent untimed; one message per iteration; the last
// iteration waits until the consumer has received every message):
//   BM_MemcpyThroughput        one memcpy in one process: the memory-bus limit
//   BM_MemcpySlotsThroughput   one memcpy a message into `slots` targets in
//                              turn, as a producer fills a ring of that many
//                              slots: the limit with a ring's cache footprint
//                              (the loan rows' grid)
//   BM_RawPipeThroughput       write()/read() loops on a pipe of the default
//                              buffer size (64 KiB): the kernel limit
//   BM_RawPipeGrownThroughput  the same on a pipe grown as mp::Pipe grows its
//                              pipes (mp::grow_pipe_buffer, to
//                              /proc/sys/fs/pipe-max-size)
//   BM_RawPipeFramedThroughput the plainest length-prefixed loop on a grown
//                              pipe (a 4-byte length with each payload, as
//                              mp::Pipe's frames carry, one call each way):
//                              what any framing costs, so
//                              that mp::Pipe's own overhead is its gap to
//                              this row
//   BM_PipeThroughput          mp::Pipe(false) send_bytes / recv_bytes_into
//   BM_RawRingThroughput       the plainest lock-free SPSC byte ring in shared
//                              memory (memcpy in and out, cursors on separate
//                              cache lines, cached peer cursors, spinning):
//                              the shared-memory limit
//   BM_SpscRingThroughput      mp::SpscRing send_bytes / recv_bytes_into
//   BM_SpscRingLoanThroughput  mp::SpscRing loan (filled with one memcpy) /
//                              recv_view (read in place, no copy out)
//   BM_QueueThroughput         mp::Queue put_bytes / get_bytes_into
//   BM_QueueMpmcThroughput     mp::Queue with P producer and C consumer
//                              processes (batches of 4096 messages)
//   BM_JoinableQueueThroughput mp::JoinableQueue: task_done per message, join
//                              at the end
//   BM_ChannelThroughput       mp::SemaphoreChannel (one slot, as in the seed)
//   BM_RingChannelThroughput   mp::RingChannel with `slots` slots
//   BM_RingChannelLoanThroughput  mp::RingChannel loan (filled with one
//                              memcpy) / recv_view (read in place)
//   BM_BoostMqThroughput       boost::interprocess::message_queue
//   BM_FloatChannel            the seed's experiment: 100 000 doubles a message
// Typed messages (one process, no peer: the CPU cost of the typed path):
//   BM_QueueTypedRoundTrip     put<T> then get<T> of a `bytes`-byte value on
//                              one mp::Queue; tagged:1 is the library's typed
//                              path (type tag checked, lib/codec.h), tagged:0
//                              the same without a tag (encode, put_bytes,
//                              get_bytes, decode): the tag's cost
// Round trip (one message there and back per iteration; manual time; the
// counters p50_ns and p99_ns are the median and 99th percentile of the
// per-iteration round trips, timed with steady_clock; cdf_p<P>_ns, for the P
// in kCdfPercents, are the P-th percentiles of the same samples, the
// distribution the report draws as a CDF; bench/console_main.cc keeps them
// out of the console table, the JSON output has them):
//   BM_RawFutexPingPong        two processes on a shared futex word: the floor
//                              for any blocking hand-off
//   BM_RawSpinPingPong         two processes spinning on a shared atomic: the
//                              floor for any hand-off at all
//   BM_RawPipePingPong, BM_RawPipeGrownPingPong, BM_PipePingPong,
//   BM_RawRingPingPong, BM_SpscRingPingPong, BM_QueuePingPong,
//   BM_ChannelPingPong, BM_BoostMqPingPong
// Every throughput and round-trip row reports minor_faults: minor page
// faults of this process and its peer per iteration (bench/faults.h).
// The ring and Queue rows (raw and ours) use the same ring size:
// ring_capacity().
// spin_us:S is the wait policy: 0 blocks at once, S > 0 spins S microseconds
// first (mp::WaitPolicy).
// The benchmark and its peer are pinned to the first two CPUs the process may
// use (class Placement; MPBENCH_PIN=0 leaves them to the scheduler), so that
// every run measures two processes on two cores.

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench/ballast.h"
#include "bench/faults.h"
#include "benchmark/benchmark.h"
#include "lib/channel.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/mapping.h"
#include "lib/peers.h"
#include "lib/pipe.h"
#include "lib/process.h"
#include "lib/queue.h"
#include "lib/spsc_ring.h"
#include "lib/wait.h"

namespace mp::bench {
namespace {

namespace bip = boost::interprocess;
using Clock = std::chrono::steady_clock;
using mpbench::MinorFaults;

constexpr int64_t kSizes[] = {8, 64, 512, 4096, 65536, 1 << 20, 16 << 20};
constexpr int64_t kPingPongSizes[] = {8, 64, 4096, 65536};
constexpr int64_t kSpins[] = {0, 50};
constexpr int64_t kSlots[] = {2, 4, 8};

WaitPolicy policy_for(int64_t spin_us) {
  WaitPolicy policy =
      spin_us == 0
          ? WaitPolicy::block_only()
          : WaitPolicy::spin_then_block(std::chrono::microseconds(spin_us));
  return policy;
}

// The payload of message `i`: its index in the first 8 bytes (when there is
// room), so the consumer checks that every message arrived, in order.
void stamp(std::span<std::byte> message, uint64_t i) {
  if (message.size() >= sizeof i) std::memcpy(message.data(), &i, sizeof i);
}
bool stamped(const std::byte* data, std::size_t size, uint64_t i) {
  if (size < sizeof i) return true;
  uint64_t got;
  std::memcpy(&got, data, sizeof got);
  return got == i;
}

// The control line between the benchmark and its peer: a count of messages
// out, an acknowledgement back. Separate from the data path being measured.
struct Control {
  Connection to_peer_read, to_peer_write, from_peer_read, from_peer_write;
  Control() {
    std::tie(to_peer_read, to_peer_write) = Pipe(false);
    std::tie(from_peer_read, from_peer_write) = Pipe(false);
  }
};

// Where the benchmark and its peer run. Unpinned, Linux often wakes a peer
// that slept on a futex on the CPU of the process that woke it (it is
// cache-hot there), and a spinning pair sharing one CPU hands off at
// scheduler speed: the same benchmark then measures 0.1 us in one run and
// 16 us in the next. Pinned, the benchmark runs on the first CPU it may use
// and its peer on the second, as two processes on two cores, every run.
// MPBENCH_PIN=0 leaves placement to the scheduler.
class Placement {
 public:
  Placement() {
    const char* pin = std::getenv("MPBENCH_PIN");
    if (pin != nullptr && std::string(pin) == "0") return;
    internal::check(::sched_getaffinity(0, sizeof original_, &original_),
                    "sched_getaffinity");
    int found = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; ++cpu) {
      if (CPU_ISSET(cpu, &original_)) (found++ == 0 ? self_ : peer_) = cpu;
    }
    if (found < 2) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(self_, &one);
    internal::check(::sched_setaffinity(0, sizeof one, &one),
                    "sched_setaffinity");
    pinned_ = true;
  }
  ~Placement() {
    // Best effort: a destructor cannot throw, and the next Placement pins
    // again anyway.
    if (pinned_) ::sched_setaffinity(0, sizeof original_, &original_);
  }
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;
  // In the peer, right after the fork.
  void pin_peer() const {
    if (!pinned_) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(peer_, &one);
    internal::check(::sched_setaffinity(0, sizeof one, &one),
                    "sched_setaffinity");
  }

 private:
  cpu_set_t original_{};
  int self_ = -1, peer_ = -1;
  bool pinned_ = false;
};

// A peer process for one benchmark run. `body(count)` runs in the child, once
// for each announce(count) (a warm-up round, then the timed one), and returns
// 0 when every message checked out. A body with set-up of its own (a receive
// buffer to allocate and fault in) takes `body(count, ready)` and calls
// ready() when that is done; a plain body is ready at once. The body object
// lives on in the child between rounds, so what it keeps is set up once.
class Peer {
 public:
  template <typename Body>
  explicit Peer(Body body)
      : process_([this, body]() mutable -> int {
          placement_.pin_peer();
          // The parent's ends: with them open here, its close would never
          // read as end of file.
          control_.to_peer_write.close();
          control_.from_peer_read.close();
          const auto ready = [this] { control_.from_peer_write.send(kReady); };
          int code = 10;  // no round announced
          while (const auto count = control_.to_peer_read.recv<uint64_t>()) {
            if constexpr (std::is_invocable_v<Body&, uint64_t,
                                              decltype(ready)&>) {
              code = body(*count, ready);
            } else {
              ready();
              code = body(*count);
            }
            control_.from_peer_write.send(code);
            if (code != 0) break;
          }
          return code;
        }) {
    process_.set_daemon(true);
    process_.start();
  }
  // Tells the peer how many messages to expect and waits until it is ready
  // for the first, so that the timed loop starts with the peer running and
  // its buffers in place (as a benchmark's own set-up stays outside it).
  // Throws PeerError if the peer ends first.
  void announce(uint64_t count) {
    control_.to_peer_write.send(count);
    const auto reply = control_.from_peer_read.recv<int>();
    if (reply != kReady) {
      throw PeerError(reply ? "peer failed before it was ready (code " +
                                  std::to_string(*reply) + ")"
                            : "peer exited before it was ready");
    }
  }
  // Waits for the peer's verdict on the round; 0 means it received
  // everything intact.
  int verdict() {
    const auto code = control_.from_peer_read.recv<int>();
    return code ? *code : 11;
  }
  // Reaps the peer; returns an error text or "".
  std::string finish() {
    control_.to_peer_write.close();
    if (!process_.join(std::chrono::seconds(30))) {
      process_.kill();
      process_.join();
      return "peer did not exit";
    }
    return process_.exitcode() == 0
               ? ""
               : "peer exited with " + std::to_string(*process_.exitcode());
  }
  Process& process() { return process_; }

 private:
  static constexpr int kReady = -1;
  Placement placement_;
  Control control_;
  Process process_;
};

// Runs a throughput benchmark: `send(i)` moves message i; the peer runs
// `receive(count)`. The last iteration includes waiting for the consumer's
// verdict, so the time covers delivery, not just handing bytes to a buffer.
// `warm` messages go first, untimed, in a round of their own that the
// consumer must finish before the timed one starts: enough to walk a ring
// once, whose first lap faults in its pages in both processes (at 16 MiB a
// message, most of what a row of a few dozen iterations would count).
template <typename Send, typename Receive>
void run_throughput(benchmark::State& state, std::size_t bytes, Send send,
                    Receive receive, uint64_t warm = 0) {
  try {
    Peer peer(receive);
    MinorFaults faults({peer.process().pid()});
    if (warm > 0) {
      peer.announce(warm);
      for (uint64_t i = 0; i < warm; ++i) send(i);
      if (const int verdict = peer.verdict(); verdict != 0) {
        throw PeerError("consumer saw a wrong message while warming up (code " +
                        std::to_string(verdict) + ")");
      }
    }
    peer.announce(static_cast<uint64_t>(state.max_iterations));
    faults.start();
    uint64_t i = 0;
    int verdict = 0;
    for (auto _ : state) {
      send(i);
      if (++i == static_cast<uint64_t>(state.max_iterations))
        verdict = peer.verdict();
    }
    faults.report(state);
    const std::string error = peer.finish();
    if (verdict != 0) {
      state.SkipWithError(("consumer saw a wrong message (code " +
                           std::to_string(verdict) + ")")
                              .c_str());
    } else if (!error.empty()) {
      state.SkipWithError(error.c_str());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}

// The percentiles reported as cdf_p<P>_ns: a fixed set, the same for every
// round-trip row, dense enough to draw the distribution (every decile, the
// quartiles, and the tails on both sides; 0 and 100 are the fastest and the
// slowest round trip). Quantiles rather than fixed buckets: they follow the
// samples wherever they lie, from a 100 ns spin hand-off to a 100 us pipe
// round trip, with no bucket grid to choose per mechanism.
constexpr double kCdfPercents[] = {0,  0.1, 1,  5,  10, 20, 25, 30,   40, 50,
                                   60, 70,  75, 80, 90, 95, 99, 99.9, 100};

// Runs a round-trip benchmark: `round_trip(i)` sends message i and waits for
// the reply; the peer runs `echo(count)`. Reports manual time (the sum of the
// round trips), the median and 99th percentile, and the kCdfPercents
// percentiles. A round trip costs the timed loop two clock reads and a store
// into a vector sized before the loop (no allocation in it). The first
// `warm` messages go untimed, through `warm_up(warm)`, before the count of
// faults starts.
template <typename RoundTrip, typename Echo, typename WarmUp>
void run_ping_pong(benchmark::State& state, RoundTrip round_trip, Echo echo,
                   uint64_t warm, WarmUp warm_up) {
  std::vector<double> samples;
  std::size_t taken = 0;
  try {
    Peer peer(echo);
    // Sized and written (faulted in) here, after the fork: memory written
    // before it is shared copy-on-write with the peer, and each page's first
    // store in the timed loop would take a fault (1 per 512 round trips).
    samples.assign(static_cast<std::size_t>(state.max_iterations), 0.0);
    MinorFaults faults({peer.process().pid()});
    peer.announce(static_cast<uint64_t>(state.max_iterations) + warm);
    warm_up(warm);
    faults.start();
    uint64_t i = warm;
    for (auto _ : state) {
      const auto begin = Clock::now();
      round_trip(i++);
      const double seconds =
          std::chrono::duration<double>(Clock::now() - begin).count();
      state.SetIterationTime(seconds);
      samples[taken++] = seconds;
    }
    const int verdict = peer.verdict();
    faults.report(state);
    const std::string error = peer.finish();
    if (verdict != 0) {
      state.SkipWithError(
          ("peer saw a wrong message (code " + std::to_string(verdict) + ")")
              .c_str());
    } else if (!error.empty()) {
      state.SkipWithError(error.c_str());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  samples.resize(taken);
  if (samples.empty()) return;
  std::sort(samples.begin(), samples.end());
  auto percentile = [&](double p) {
    return samples[std::min(samples.size() - 1,
                            static_cast<std::size_t>(p * samples.size()))] *
           1e9;
  };
  state.counters["p50_ns"] = percentile(0.50);
  state.counters["p99_ns"] = percentile(0.99);
  for (double p : kCdfPercents) {
    char name[32];
    std::snprintf(name, sizeof name, "cdf_p%g_ns", p);
    state.counters[name] = percentile(p / 100);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename RoundTrip, typename Echo>
void run_ping_pong(benchmark::State& state, RoundTrip round_trip, Echo echo) {
  run_ping_pong(state, round_trip, echo, 0, [](uint64_t) {});
}

// --- Throughput
// ----------------------------------------------------------------

// Where a buffer's pages lie in physical memory decides which L2 sets it
// uses, and at 1 MiB (source and target fill a 2 MiB L2) that alone moved a
// memcpy between 36 and 48 us (12 fresh placements in one process, 2-vCPU
// Intel(R) Xeon(R) Processor). Freed pages are handed out again last in,
// first out, so every repetition of a row got the pages of the one before,
// and a median of ten was one placement: 1 MiB rows of the same copy came
// out 40.5 and 45.5 us in one run. A PageDraw, made before a run allocates
// its buffers (and its channel), holds a random number of fresh pages until
// the run ends, so that each repetition lands on pages of its own.
class PageDraw {
 public:
  PageDraw() {
    static std::mt19937 random{std::random_device{}()};
    const auto pages =
        std::uniform_int_distribution<std::size_t>(0, 511)(random);
    if (pages == 0) return;
    held_ = resident_pages(pages *
                           static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
  }

 private:
  Mapping held_;
};

// A buffer of `bytes` on pages of its own (not the heap's, which keeps
// reusing the same ones), every byte set to `fill` so they are in place.
Mapping page_buffer(std::size_t bytes, std::byte fill) {
  Mapping buffer = Mapping::private_anonymous(bytes);
  std::memset(buffer.data(), static_cast<int>(fill), bytes);
  return buffer;
}

void BM_MemcpyThroughput(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  PageDraw draw;
  const Mapping source = page_buffer(bytes, std::byte{1});
  const Mapping target = page_buffer(bytes, std::byte{0});
  for (auto _ : state) {
    std::memcpy(target.data(), source.data(), bytes);
    benchmark::DoNotOptimize(target.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}

// A producer that fills S slots in turn writes S times the message's bytes
// before it writes one again: from 2 slots of 1 MiB on, source and slots
// outgrow a 2 MiB L2, and every copy is slower than BM_MemcpyThroughput's
// (measured, 2-vCPU Intel(R) Xeon(R) Processor: 40 us one target, 48-55 us
// two in turn). This is that copy alone, the like-for-like limit of a loaned
// S-slot ring. BM_MemcpyThroughput keeps its own loop: sharing this one
// (a target looked up each iteration) made it 3x slower at 512 B.
void BM_MemcpySlotsThroughput(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const auto slots = static_cast<std::size_t>(state.range(1));
  PageDraw draw;
  const Mapping source = page_buffer(bytes, std::byte{1});
  std::vector<Mapping> targets;
  for (std::size_t s = 0; s < slots; ++s)
    targets.push_back(page_buffer(bytes, std::byte{0}));
  std::size_t next = 0;
  for (auto _ : state) {
    std::memcpy(targets[next].data(), source.data(), bytes);
    benchmark::DoNotOptimize(targets[next].data());
    benchmark::ClobberMemory();
    if (++next == slots) next = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}

bool write_all(int fd, const std::byte* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n <= 0) {
      if (n == -1 && errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, std::byte* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::read(fd, data, size);
    if (n <= 0) {
      if (n == -1 && errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// A uniquely named message queue, created exclusively with mode 0600 and
// unlinked at once: the mapping (inherited by the forked peer) outlives the
// name, so nothing is left in /dev/shm even if this process crashes.
std::unique_ptr<bip::message_queue> make_boost_mq(std::size_t max_msg,
                                                  std::size_t max_count) {
  static std::atomic<int> counter{0};
  const std::string name = "mpbench-mq-" + std::to_string(::getpid()) + "-" +
                           std::to_string(++counter);
  bip::permissions owner_only(0600);
  auto mq = std::make_unique<bip::message_queue>(
      bip::create_only, name.c_str(), max_count, max_msg, owner_only);
  bip::message_queue::remove(name.c_str());
  return mq;
}

// --- Links
// --------------------------------------------------------------------- A link
// carries messages one way between this process and a peer. It is made before
// the peer forks; send() runs on one side, recv_into() on the other and returns
// the message's length (nullopt when the link failed).

// A bare pipe2() pipe: the default buffer, or grown as mp::Pipe grows its
// own (so that Pipe is compared with a raw pipe of the same buffer size).
class RawPipeLink {
 public:
  explicit RawPipeLink(bool grown = false) {
    int fds[2];
    internal::check(::pipe2(fds, O_CLOEXEC), "pipe2");
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    if (grown) grow_pipe_buffer(write_.get());
  }
  void send(std::span<const std::byte> message) {
    if (!write_all(write_.get(), message.data(), message.size()))
      throw OsError("write", errno);
  }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    if (!read_all(read_.get(), buffer.data(), buffer.size()))
      return std::nullopt;
    return buffer.size();
  }

 private:
  Fd read_, write_;
};

// BM_RawPipeFramedThroughput's link: a grown pipe carrying a 4-byte length
// (mp::Pipe's, CPython's header size) before each payload, each frame in one
// call each way. Up to 4 KiB the frame
// is copied whole into a buffer and written, and read whole and copied out
// (a two-part writev or readv costs more there, as mp::Pipe found); above
// that, writev and readv take the length and the payload in place. No
// checks beyond the length's.
class RawFramedPipeLink {
 public:
  RawFramedPipeLink() {
    int fds[2];
    internal::check(::pipe2(fds, O_CLOEXEC), "pipe2");
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    grow_pipe_buffer(write_.get());
  }
  void send(std::span<const std::byte> message) {
    auto length = static_cast<std::uint32_t>(message.size());
    if (message.size() <= kCopied) {
      std::memcpy(frame_.data(), &length, sizeof length);
      std::memcpy(frame_.data() + sizeof length, message.data(),
                  message.size());
      if (!write_all(write_.get(), frame_.data(),
                     sizeof length + message.size()))
        throw OsError("write", errno);
      return;
    }
    iovec parts[2] = {{&length, sizeof length},
                      {const_cast<std::byte*>(message.data()), message.size()}};
    if (!transfer_all(::writev, write_.get(), parts))
      throw OsError("writev", errno);
  }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    std::uint32_t length;
    if (buffer.size() <= kCopied) {
      if (!read_all(read_.get(), frame_.data(), sizeof length + buffer.size()))
        return std::nullopt;
      std::memcpy(&length, frame_.data(), sizeof length);
      if (length != buffer.size()) return std::nullopt;
      std::memcpy(buffer.data(), frame_.data() + sizeof length, buffer.size());
      return buffer.size();
    }
    iovec parts[2] = {{&length, sizeof length}, {buffer.data(), buffer.size()}};
    if (!transfer_all(::readv, read_.get(), parts) || length != buffer.size())
      return std::nullopt;
    return buffer.size();
  }

 private:
  static constexpr std::size_t kCopied = 4096;
  // writev or readv of both parts until done; false on EOF or an error.
  template <typename Call>
  static bool transfer_all(Call call, int fd, iovec (&parts)[2]) {
    iovec* next = parts;
    int count = 2;
    while (count > 0) {
      const ssize_t n = call(fd, next, count);
      if (n <= 0) {
        if (n == -1 && errno == EINTR) continue;
        return false;
      }
      internal::skip_transferred(next, count, static_cast<std::size_t>(n));
    }
    return true;
  }

  Fd read_, write_;
  std::array<std::byte, sizeof(std::uint32_t) + kCopied> frame_;
};

// The ring size of every ring row, raw and ours: 1 MiB, or room for two
// messages (so that the loaned variant can hold one whole).
std::size_t ring_capacity(std::size_t bytes) {
  return std::max<std::size_t>(1 << 20, std::bit_ceil(2 * (bytes + 8)));
}

// mp::Queue rows use the ring rows' size too (a record takes its message's
// size + 4 bytes, less than a raw ring frame).
QueueOptions queue_options(std::size_t bytes, int64_t spin_us) {
  QueueOptions options;
  options.capacity_bytes = ring_capacity(bytes);
  options.wait = policy_for(spin_us);
  return options;
}

// The plainest lock-free single-producer single-consumer byte ring in shared
// memory: the producer waits for room for a chunk (the whole message, or a
// quarter of the ring at a time for a larger one, as mp::SpscRing streams),
// copies it in (in two parts where it wraps) and publishes its cursor; the
// consumer waits for a chunk, copies it out and publishes its own. Each keeps
// a copy of the other's cursor and reloads it only when that runs out; both
// spin with the pause hint, yielding the CPU every 256 checks as mp's own
// spin loops do (without that, on a machine with more runnable processes than
// cores, a spinner burns whole time slices while its peer waits for the CPU,
// and the row measures the scheduler). No framing (both sides know the
// size), no sleeping, no batching. A side that waits checks now and then that
// its peer still lives, so a dead peer fails the benchmark instead of
// hanging it.
class RawRingLink {
 public:
  explicit RawRingLink(std::size_t capacity)
      : memory_(Mapping::shared(sizeof(Cursors) + capacity)),
        capacity_(capacity) {
    new (memory_.data()) Cursors();
  }
  std::size_t buffer_bytes() const { return capacity_; }
  void send(std::span<const std::byte> message) {
    Cursors& c = cursors();
    announce(c.producer_pid);
    const std::byte* from = message.data();
    std::size_t left = message.size();
    while (left > 0) {
      const std::size_t n = std::min<std::size_t>(left, capacity_ / 4);
      if (capacity_ - (tail_ - head_cache_) < n) {
        head_cache_ = wait_until(
            c.head,
            [&](uint64_t head) { return capacity_ - (tail_ - head) >= n; },
            c.consumer_pid);
        if (capacity_ - (tail_ - head_cache_) < n)
          throw PeerError("consumer died");
      }
      const std::size_t offset = tail_ & (capacity_ - 1);
      const std::size_t first = std::min(n, capacity_ - offset);
      std::memcpy(data() + offset, from, first);
      std::memcpy(data(), from + first, n - first);
      tail_ += n;
      from += n;
      left -= n;
      c.tail.store(tail_, std::memory_order_release);
    }
  }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    Cursors& c = cursors();
    announce(c.consumer_pid);
    std::byte* to = buffer.data();
    std::size_t left = buffer.size();
    while (left > 0) {
      const std::size_t n = std::min<std::size_t>(left, capacity_ / 4);
      if (tail_cache_ - head_ < n) {
        tail_cache_ = wait_until(
            c.tail, [&](uint64_t tail) { return tail - head_ >= n; },
            c.producer_pid);
        if (tail_cache_ - head_ < n) return std::nullopt;
      }
      const std::size_t offset = head_ & (capacity_ - 1);
      const std::size_t first = std::min(n, capacity_ - offset);
      std::memcpy(to, data() + offset, first);
      std::memcpy(to + first, data(), n - first);
      head_ += n;
      to += n;
      left -= n;
      c.head.store(head_, std::memory_order_release);
    }
    return buffer.size();
  }

 private:
  struct Cursors {
    alignas(64) std::atomic<uint64_t> tail{0};
    alignas(64) std::atomic<uint64_t> head{0};
    alignas(64) std::atomic<pid_t> producer_pid{0};
    std::atomic<pid_t> consumer_pid{0};
  };
  Cursors& cursors() const { return *static_cast<Cursors*>(memory_.data()); }
  // Records this side's pid for the peer's liveness check; written once,
  // not per message (both pids share a line that must stay clean).
  static void announce(std::atomic<pid_t>& slot) {
    const pid_t self = internal::current_pid();
    if (slot.load(std::memory_order_relaxed) != self)
      slot.store(self, std::memory_order_relaxed);
  }
  std::byte* data() const { return memory_.bytes() + sizeof(Cursors); }
  // Spins until `enough(cursor)`; returns the cursor (not enough if the peer
  // has died).
  template <typename Enough>
  static uint64_t wait_until(const std::atomic<uint64_t>& cursor, Enough enough,
                             const std::atomic<pid_t>& peer) {
    for (uint32_t i = 1;; ++i) {
      const uint64_t now = cursor.load(std::memory_order_acquire);
      if (enough(now)) return now;
      internal::cpu_relax();
      if ((i & 255) == 0) sched_yield();
      if ((i & 0xfffff) == 0) {
        const pid_t pid = peer.load(std::memory_order_relaxed);
        if (pid != 0 && !internal::process_alive(pid)) return now;
      }
    }
  }

  Mapping memory_;
  uint64_t capacity_;
  uint64_t tail_ = 0, head_cache_ = 0;  // producer's
  uint64_t head_ = 0, tail_cache_ = 0;  // consumer's
};

// mp::SpscRing, copying in and out.
class SpscRingLink {
 public:
  SpscRingLink(std::size_t bytes, int64_t spin_us)
      : ring_({.capacity_bytes = ring_capacity(bytes),
               .wait = policy_for(spin_us)}) {}
  std::size_t buffer_bytes() const { return ring_.capacity_bytes(); }
  void send(std::span<const std::byte> message) { ring_.send_bytes(message); }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    return ring_.recv_bytes_into(buffer);
  }
  SpscRing& ring() { return ring_; }

 private:
  SpscRing ring_;
};

class PipeLink {
 public:
  PipeLink() { std::tie(read_, write_) = Pipe(false); }
  void send(std::span<const std::byte> message) { write_.send_bytes(message); }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    return read_.recv_bytes_into(buffer);
  }

 private:
  Connection read_, write_;
};

class QueueLink {
 public:
  QueueLink(std::size_t bytes, int64_t spin_us)
      : queue_(queue_options(bytes, spin_us)) {}
  std::size_t buffer_bytes() const { return queue_.capacity_bytes(); }
  void send(std::span<const std::byte> message) { queue_.put_bytes(message); }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    return queue_.get_bytes_into(buffer);
  }

 private:
  Queue queue_;
};

class ChannelLink {
 public:
  ChannelLink(std::size_t bytes, std::size_t slots, int64_t spin_us)
      : channel_(bytes, slots, policy_for(spin_us)) {}
  std::size_t buffer_bytes() const {
    return channel_.slots() * channel_.capacity();
  }
  void send(std::span<const std::byte> message) { channel_.send(message); }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    return channel_.recv_into(buffer);
  }

 private:
  RingChannel<std::byte> channel_;
};

class BoostMqLink {
 public:
  BoostMqLink(std::size_t bytes, std::size_t messages)
      : mq_(make_boost_mq(bytes, messages)) {}
  std::size_t buffer_bytes() const {
    return mq_->get_max_msg() * mq_->get_max_msg_size();
  }
  void send(std::span<const std::byte> message) {
    mq_->send(message.data(), message.size(), 0);
  }
  std::optional<std::size_t> recv_into(std::span<std::byte> buffer) {
    bip::message_queue::size_type got = 0;
    unsigned priority = 0;
    mq_->receive(buffer.data(), buffer.size(), got, priority);
    return static_cast<std::size_t>(got);
  }

 private:
  std::unique_ptr<bip::message_queue> mq_;
};

// Messages of `bytes` that walk a buffer of `buffer_bytes` once.
uint64_t first_lap(std::size_t buffer_bytes, std::size_t bytes) {
  return buffer_bytes / std::max<std::size_t>(bytes, 1) + 1;
}
// The untimed warm-up of a link: one lap of its buffer, or one message for a
// link whose buffer is the kernel's (a pipe's), so that each side's first use
// of its own buffers is set-up too.
template <typename Link>
uint64_t first_lap(const Link& link, std::size_t bytes) {
  if constexpr (requires { link.buffer_bytes(); }) {
    return first_lap(link.buffer_bytes(), bytes);
  } else {
    return 1;
  }
}

// Throughput over one link: message i from here to the peer per iteration,
// after first_lap(link) untimed.
template <typename Link>
void link_throughput(benchmark::State& state, std::size_t bytes, Link& link) {
  std::vector<std::byte> message(bytes);
  run_throughput(
      state, bytes,
      [&](uint64_t i) {
        stamp(message, i);
        link.send(message);
      },
      [&, buffer = std::vector<std::byte>()](uint64_t count,
                                             const auto& ready) mutable {
        buffer.resize(bytes);
        ready();
        for (uint64_t i = 0; i < count; ++i) {
          const auto n = link.recv_into(buffer);
          if (!n || *n != bytes) return 1;
          if (!stamped(buffer.data(), bytes, i)) return 2;
        }
        return 0;
      },
      first_lap(link, bytes));
}

// Round trips over two links: message i out on `ping`, echoed back on `pong`.
template <typename Link>
void link_ping_pong(benchmark::State& state, std::size_t bytes, Link& ping,
                    Link& pong) {
  std::vector<std::byte> message(bytes), reply(bytes);
  const auto get_reply = [&] {
    if (pong.recv_into(reply) != bytes)
      throw PeerError("short or missing reply");
  };
  // Untimed: one round trip, and one lap of each ring where the link has
  // one, before the timed loop, so that both processes have touched every
  // page they use (each maps a shared page on its own first touch, and the
  // first store into a buffer made before the fork copies its page): without
  // this, minor_faults counted up to 0.1 a round trip, set-up spread over a
  // short row. In bursts that either ring holds whole, so that the peer's
  // echoes never wait for this side to read: a lap then costs a few
  // hand-offs instead of a round trip a message (131,072 at 8 bytes in a
  // 1 MiB ring, ~50 us each at spin_us:0).
  const uint64_t warm = first_lap(ping, bytes);
  uint64_t burst = 1;
  if constexpr (requires { ping.buffer_bytes(); })
    burst = std::max<uint64_t>(1, ping.buffer_bytes() / (2 * (bytes + 64)));
  run_ping_pong(
      state,
      [&](uint64_t i) {
        stamp(message, i);
        ping.send(message);
        get_reply();
      },
      [&](uint64_t count, const auto& ready) {
        std::vector<std::byte> buffer(bytes);
        ready();
        for (uint64_t i = 0; i < count; ++i) {
          if (ping.recv_into(buffer) != bytes) return 1;
          if (!stamped(buffer.data(), bytes, i)) return 2;
          pong.send(buffer);
        }
        return 0;
      },
      warm,
      [&](uint64_t count) {
        for (uint64_t sent = 0; sent < count;) {
          const uint64_t n = std::min(burst, count - sent);
          for (uint64_t k = 0; k < n; ++k) {
            stamp(message, sent + k);
            ping.send(message);
          }
          for (uint64_t k = 0; k < n; ++k) get_reply();
          sent += n;
        }
      });
}

// Builds the link(s) (which may throw, e.g. for want of shared memory) and
// runs the benchmark, reporting a failure to build through SkipWithError.
template <typename Make, typename Run>
void with_links(benchmark::State& state, Make make, Run run) {
  decltype(make()) link;
  try {
    link = make();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  run(*link);
}

std::size_t bytes_arg(const benchmark::State& state) {
  return static_cast<std::size_t>(state.range(0));
}

// --- Throughput
// ----------------------------------------------------------------

void BM_RawPipeThroughput(benchmark::State& state) {
  with_links(
      state, [] { return std::make_unique<RawPipeLink>(); },
      [&](RawPipeLink& link) {
        link_throughput(state, bytes_arg(state), link);
      });
}

void BM_RawPipeGrownThroughput(benchmark::State& state) {
  RawPipeLink link(/*grown=*/true);
  link_throughput(state, bytes_arg(state), link);
}

void BM_RawPipeFramedThroughput(benchmark::State& state) {
  RawFramedPipeLink link;
  link_throughput(state, bytes_arg(state), link);
}

void BM_RawRingThroughput(benchmark::State& state) {
  with_links(
      state,
      [&] {
        return std::make_unique<RawRingLink>(ring_capacity(bytes_arg(state)));
      },
      [&](RawRingLink& link) {
        link_throughput(state, bytes_arg(state), link);
      });
}

void BM_SpscRingThroughput(benchmark::State& state) {
  with_links(
      state,
      [&] { return std::make_unique<SpscRingLink>(bytes_arg(state), 50); },
      [&](SpscRingLink& link) {
        link_throughput(state, bytes_arg(state), link);
      });
}

// Zero copy on the consumer's side, one copy (filling the loan) on the
// producer's: what a producer that builds its message in place pays.
void BM_SpscRingLoanThroughput(benchmark::State& state) {
  const std::size_t bytes = bytes_arg(state);
  PageDraw draw;
  with_links(
      state, [&] { return std::make_unique<SpscRingLink>(bytes, 50); },
      [&](SpscRingLink& link) {
        SpscRing& ring = link.ring();
        const Mapping source = page_buffer(bytes, std::byte{0});
        const std::span message(source.bytes(), bytes);
        run_throughput(
            state, bytes,
            [&](uint64_t i) {
              stamp(message, i);
              auto slot = ring.loan(bytes);
              std::memcpy(slot.data(), message.data(), bytes);
              slot.commit();
            },
            [&](uint64_t count) {
              for (uint64_t i = 0; i < count; ++i) {
                const auto view = ring.recv_view();
                if (!view || view->size() != bytes) return 1;
                if (!stamped(view->data(), bytes, i)) return 2;
              }
              return 0;
            },
            first_lap(link, bytes));
      });
}

void BM_PipeThroughput(benchmark::State& state) {
  with_links(
      state, [] { return std::make_unique<PipeLink>(); },
      [&](PipeLink& link) { link_throughput(state, bytes_arg(state), link); });
}

void BM_QueueThroughput(benchmark::State& state) {
  with_links(
      state,
      [&] {
        return std::make_unique<QueueLink>(bytes_arg(state), state.range(1));
      },
      [&](QueueLink& link) { link_throughput(state, bytes_arg(state), link); });
}

void BM_ChannelThroughput(benchmark::State& state) {
  with_links(
      state,
      [&] {
        return std::make_unique<ChannelLink>(bytes_arg(state), 1,
                                             state.range(1));
      },
      [&](ChannelLink& link) {
        link_throughput(state, bytes_arg(state), link);
      });
}

void BM_RingChannelThroughput(benchmark::State& state) {
  with_links(
      state,
      [&] {
        return std::make_unique<ChannelLink>(
            bytes_arg(state), static_cast<std::size_t>(state.range(1)),
            state.range(2));
      },
      [&](ChannelLink& link) {
        link_throughput(state, bytes_arg(state), link);
      });
}

// --- Queue with several producers and consumers (issue 12) ------------------
// P producer and C consumer processes, started once per run outside the
// timed loop (unpinned: with P + C > 2 they share the CPUs). One iteration
// is one batch of kMpmcBatch messages: the producers put kMpmcBatch / P each
// (released through their control pipes), and the iteration ends when every
// producer has put its share and the queue is empty again (qsize() counts a
// message until a consumer has copied it out). The pipes cost a few
// microseconds a batch, well under 1% of it. Untimed batches first lap the
// ring twice (its pages' first touches are set-up). A message carries its
// producer's number and sequence number; each consumer checks that it sees
// every producer's messages in order, and after the run the consumers'
// counts must add up to what was put. items_per_second is messages.
constexpr int64_t kMpmcBatch = 4096;

void BM_QueueMpmcThroughput(benchmark::State& state) {
  const std::size_t bytes = bytes_arg(state);
  const auto producers = static_cast<int>(state.range(1));
  const auto consumers = static_cast<int>(state.range(2));
  const int64_t share = kMpmcBatch / producers;
  try {
    Queue queue(queue_options(bytes, 50));
    std::vector<Control> controls(
        static_cast<std::size_t>(producers + consumers));
    std::vector<Process> workers;
    for (int p = 0; p < producers; ++p) {
      Control& control = controls[static_cast<std::size_t>(p)];
      workers.emplace_back([&, p]() -> int {
        std::vector<std::byte> message(std::max<std::size_t>(bytes, 16));
        uint64_t sequence = 0;
        const auto id = static_cast<uint64_t>(p);
        // 1: put a share; 0 (or a closed pipe): stop. Every worker holds
        // every pipe's ends (forked), so a close alone would not be seen.
        for (;;) {
          const auto go = control.to_peer_read.recv<uint64_t>();
          if (!go || *go == 0) break;
          for (int64_t i = 0; i < share; ++i, ++sequence) {
            std::memcpy(message.data(), &id, sizeof id);
            if (bytes >= 16)
              std::memcpy(message.data() + 8, &sequence, sizeof sequence);
            queue.put_bytes(std::span(message).first(bytes));
          }
          control.from_peer_write.send(0);
        }
        return 0;
      });
    }
    for (int c = 0; c < consumers; ++c) {
      Control& control = controls[static_cast<std::size_t>(producers + c)];
      workers.emplace_back([&, producers]() -> int {
        std::vector<std::byte> buffer(bytes);
        std::vector<uint64_t> next(static_cast<std::size_t>(producers), 0);
        uint64_t count = 0;
        while (auto n = queue.get_bytes_into(buffer)) {
          if (*n != bytes) return 1;
          ++count;
          if (bytes < 16) continue;
          uint64_t id, sequence;
          std::memcpy(&id, buffer.data(), sizeof id);
          std::memcpy(&sequence, buffer.data() + 8, sizeof sequence);
          if (id >= next.size() || sequence < next[id]) return 2;
          next[id] = sequence + 1;
        }
        control.from_peer_write.send(count);
        return 0;
      });
    }
    for (Process& worker : workers) {
      worker.set_daemon(true);
      worker.start();
    }
    const auto batch = [&] {
      for (int p = 0; p < producers; ++p)
        controls[static_cast<std::size_t>(p)].to_peer_write.send(uint64_t{1});
      for (int p = 0; p < producers; ++p) {
        if (!controls[static_cast<std::size_t>(p)].from_peer_read.recv<int>())
          throw PeerError("a producer died");
      }
      while (queue.qsize() != 0) internal::cpu_relax();
    };
    // Untimed: laps of the ring until every process has touched the pages
    // it uses (first touches are set-up; minor_faults then shows the steady
    // state). Each process maps a shared page on its own first touch (fork
    // copies no page tables of shared memory), and where two producers or
    // two consumers take turns, two laps left pages that one of them had
    // not touched yet: 0.07 faults a batch in the timed loop with two
    // producers. So: at least two laps, then until a whole lap adds no
    // fault in any of the processes (at most 64 laps).
    std::vector<pid_t> pids;
    for (Process& worker : workers) pids.push_back(worker.pid());
    const std::size_t batch_bytes =
        static_cast<std::size_t>(kMpmcBatch) * (bytes + 4);
    const std::size_t batches_per_lap =
        (queue.capacity_bytes() + batch_bytes - 1) / batch_bytes;
    int64_t warm_up = 0;
    std::uint64_t seen = mpbench::minor_faults_now(pids);
    for (int lap = 0; lap < 64; ++lap) {
      for (std::size_t b = 0; b < batches_per_lap; ++b, ++warm_up) batch();
      const std::uint64_t now = mpbench::minor_faults_now(pids);
      if (lap >= 1 && now == seen) break;
      seen = now;
    }
    MinorFaults faults(pids);
    faults.start();
    for (auto _ : state) batch();
    faults.report(state);
    for (int p = 0; p < producers; ++p)
      controls[static_cast<std::size_t>(p)].to_peer_write.send(uint64_t{0});
    queue.close();
    uint64_t received = 0;
    for (int c = 0; c < consumers; ++c) {
      const auto count = controls[static_cast<std::size_t>(producers + c)]
                             .from_peer_read.recv<uint64_t>();
      if (!count) throw PeerError("a consumer saw a wrong message");
      received += *count;
    }
    for (Process& worker : workers) {
      if (!worker.join(std::chrono::seconds(30))) {
        worker.kill();
        worker.join();
      }
      if (worker.exitcode() != 0)
        throw PeerError("a worker exited with " +
                        std::to_string(worker.exitcode().value_or(-1)));
    }
    const uint64_t put =
        static_cast<uint64_t>(state.iterations() + warm_up) * share * producers;
    if (received != put)
      throw PeerError(std::to_string(received) + " messages received of " +
                      std::to_string(put));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  const int64_t messages = state.iterations() * share * producers;
  state.SetItemsProcessed(messages);
  state.SetBytesProcessed(messages * static_cast<int64_t>(bytes));
}

// --- Zero-copy channel (issue 12) ------------------------------------------
// The producer fills a loaned slot with one memcpy (a producer that builds
// its message in place would not even pay that); the consumer reads the
// message in its slot (checks the stamp) and gives it back: one copy in all,
// against BM_MemcpyThroughput of the same size. slots:1 copies between the
// same two buffers every time, as BM_MemcpyThroughput does; slots:2 lets
// the producer fill one slot while the consumer holds the other, at the
// price of a working set of three messages instead of two (at 1 MiB, more
// than a 2 MiB L2 holds).
void BM_RingChannelLoanThroughput(benchmark::State& state) {
  const std::size_t bytes = bytes_arg(state);
  using Channel = RingChannel<std::byte>;
  PageDraw draw;
  with_links(
      state,
      [&] {
        return std::make_unique<Channel>(
            bytes, static_cast<std::size_t>(state.range(1)),
            policy_for(state.range(2)));
      },
      [&](Channel& channel) {
        // One lap through every slot before the peer is forked, outside the
        // timed loop: the slots' first touches (a fresh mapping, hundreds of
        // page faults a megabyte) are set-up, not the steady state measured.
        for (std::size_t s = 0; s < channel.slots(); ++s) {
          auto slot = channel.loan(bytes);
          std::memset(slot.data(), 0, bytes);
          slot.send();
        }
        for (std::size_t s = 0; s < channel.slots(); ++s) channel.recv_view();
        const Mapping source = page_buffer(bytes, std::byte{0});
        const std::span message(source.bytes(), bytes);
        run_throughput(
            state, bytes,
            [&](uint64_t i) {
              stamp(message, i);
              auto slot = channel.loan(bytes);
              std::memcpy(slot.data(), message.data(), bytes);
              slot.send();
            },
            [&](uint64_t count) {
              for (uint64_t i = 0; i < count; ++i) {
                const auto view = channel.recv_view();
                if (!view || view->size() != bytes) return 1;
                if (!stamped(view->data(), bytes, i)) return 2;
              }
              return 0;
            });
      });
}

// The seeds' JoinableQueue pattern: the consumer marks every message done,
// and the producer's last iteration waits in join() until all are.
void BM_JoinableQueueThroughput(benchmark::State& state) {
  const std::size_t bytes = bytes_arg(state);
  with_links(
      state,
      [&] { return std::make_unique<JoinableQueue>(queue_options(bytes, 50)); },
      [&](JoinableQueue& queue) {
        std::vector<std::byte> message(bytes);
        run_throughput(
            state, bytes,
            [&](uint64_t i) {
              stamp(message, i);
              queue.put_bytes(message);
              if (i + 1 == static_cast<uint64_t>(state.max_iterations))
                queue.join();
            },
            [&, buffer = std::vector<std::byte>()](uint64_t count,
                                                   const auto& ready) mutable {
              buffer.resize(bytes);
              ready();
              for (uint64_t i = 0; i < count; ++i) {
                const auto n = queue.get_bytes_into(buffer);
                if (!n || *n != bytes) return 1;
                if (!stamped(buffer.data(), bytes, i)) return 2;
                queue.task_done();
              }
              return 0;
            },
            first_lap(queue.capacity_bytes(), bytes));
      });
}

void BM_BoostMqThroughput(benchmark::State& state) {
  const std::size_t bytes = bytes_arg(state);
  with_links(
      state,
      [&] {
        return std::make_unique<BoostMqLink>(
            bytes, std::clamp<std::size_t>((64 << 20) / bytes, 2, 1024));
      },
      [&](BoostMqLink& link) { link_throughput(state, bytes, link); });
}

// The seed's FloatChannel experiment: 100 000 doubles a message through the
// one-slot semaphore channel.
void BM_FloatChannel(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  with_links(
      state, [&] { return std::make_unique<SemaphoreChannel<double>>(count); },
      [&](SemaphoreChannel<double>& channel) {
        std::vector<double> values(count);
        for (std::size_t k = 0; k < count; ++k)
          values[k] = static_cast<double>(k);
        run_throughput(
            state, count * sizeof(double),
            [&](uint64_t i) {
              values[0] = static_cast<double>(i);
              channel.send(values);
            },
            [&, got = std::vector<double>()](uint64_t messages,
                                             const auto& ready) mutable {
              got.resize(count);
              ready();
              for (uint64_t i = 0; i < messages; ++i) {
                const auto n = channel.recv_into(got);
                if (!n || *n != count) return 1;
                if (got[0] != static_cast<double>(i) ||
                    got[count - 1] != static_cast<double>(count - 1))
                  return 2;
              }
              return 0;
            },
            /*warm=*/2);
      });
}

// --- Typed messages
// -------------------------------------------------------------

template <std::size_t kBytes>
void BM_QueueTypedRoundTrip(benchmark::State& state) {
  using Value = std::array<char, kBytes>;
  const bool tagged = state.range(1) != 0;
  with_links(
      state, [] { return std::make_unique<Queue>(queue_options(kBytes, 0)); },
      [&](Queue& queue) {
        Value value{};
        value.fill('x');
        std::vector<std::byte> scratch;
        for (auto _ : state) {
          if (tagged) {
            queue.put(value);
            benchmark::DoNotOptimize(queue.get<Value>());
          } else {
            scratch.clear();
            encode_into(value, scratch);
            queue.put_bytes(scratch);
            benchmark::DoNotOptimize(decode<Value>(*queue.get_bytes()));
          }
        }
        state.SetItemsProcessed(state.iterations());
      });
}

// --- Round trips
// -----------------------------------------------------------------

// The floors: a bare word in shared memory that the two processes take turns
// advancing (odd: the benchmark's turn is over; even: the peer's).
struct TurnWord {
  Mapping memory = Mapping::shared(64);
  std::atomic<uint32_t>& turn() const {
    return *static_cast<std::atomic<uint32_t>*>(memory.data());
  }
};

void futex_wait_for(std::atomic<uint32_t>& word, uint32_t want) {
  for (uint32_t seen; (seen = word.load(std::memory_order_acquire)) != want;) {
    internal::futex_wait(&word, seen, std::chrono::seconds(1));
  }
}

void BM_RawFutexPingPong(benchmark::State& state) {
  TurnWord word;
  std::atomic<uint32_t>& turn = word.turn();
  run_ping_pong(
      state,
      [&](uint64_t i) {
        turn.store(static_cast<uint32_t>(2 * i + 1), std::memory_order_release);
        internal::futex_wake(&turn, 1);
        futex_wait_for(turn, static_cast<uint32_t>(2 * i + 2));
      },
      [&](uint64_t count) {
        for (uint64_t i = 0; i < count; ++i) {
          futex_wait_for(turn, static_cast<uint32_t>(2 * i + 1));
          turn.store(static_cast<uint32_t>(2 * i + 2),
                     std::memory_order_release);
          internal::futex_wake(&turn, 1);
        }
        return 0;
      });
}

void spin_for(std::atomic<uint32_t>& word, uint32_t want) {
  while (word.load(std::memory_order_acquire) != want) internal::cpu_relax();
}

void BM_RawSpinPingPong(benchmark::State& state) {
  TurnWord word;
  std::atomic<uint32_t>& turn = word.turn();
  run_ping_pong(
      state,
      [&](uint64_t i) {
        turn.store(static_cast<uint32_t>(2 * i + 1), std::memory_order_release);
        spin_for(turn, static_cast<uint32_t>(2 * i + 2));
      },
      [&](uint64_t count) {
        for (uint64_t i = 0; i < count; ++i) {
          spin_for(turn, static_cast<uint32_t>(2 * i + 1));
          turn.store(static_cast<uint32_t>(2 * i + 2),
                     std::memory_order_release);
        }
        return 0;
      });
}

template <typename Link, typename... Args>
void ping_pong_of(benchmark::State& state, Args... args) {
  with_links(
      state,
      [&] {
        return std::make_unique<std::pair<Link, Link>>(Link(args...),
                                                       Link(args...));
      },
      [&](std::pair<Link, Link>& links) {
        link_ping_pong(state, bytes_arg(state), links.first, links.second);
      });
}

void BM_RawPipePingPong(benchmark::State& state) {
  ping_pong_of<RawPipeLink>(state);
}
void BM_RawPipeGrownPingPong(benchmark::State& state) {
  ping_pong_of<RawPipeLink>(state, true);
}
void BM_PipePingPong(benchmark::State& state) { ping_pong_of<PipeLink>(state); }
void BM_RawRingPingPong(benchmark::State& state) {
  ping_pong_of<RawRingLink>(state, ring_capacity(bytes_arg(state)));
}
void BM_SpscRingPingPong(benchmark::State& state) {
  ping_pong_of<SpscRingLink>(state, bytes_arg(state), state.range(1));
}
void BM_QueuePingPong(benchmark::State& state) {
  ping_pong_of<QueueLink>(state, bytes_arg(state), state.range(1));
}
void BM_ChannelPingPong(benchmark::State& state) {
  ping_pong_of<ChannelLink>(state, bytes_arg(state), std::size_t{1},
                            state.range(1));
}
void BM_BoostMqPingPong(benchmark::State& state) {
  ping_pong_of<BoostMqLink>(state, bytes_arg(state), std::size_t{4});
}

// --- Registration
// ------------------------------------------------------------------

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes"});
  for (int64_t size : kSizes) b->Args({size});
}
void sizes_spins(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "spin_us"});
  for (int64_t spin : kSpins)
    for (int64_t size : kSizes) b->Args({size, spin});
}
void sizes_slots_spins(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "slots", "spin_us"});
  for (int64_t spin : kSpins)
    for (int64_t slots : kSlots)
      for (int64_t size : kSizes) b->Args({size, slots, spin});
}
void ping_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes"});
  for (int64_t size : kPingPongSizes) b->Args({size});
}
void ping_sizes_spins(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "spin_us"});
  for (int64_t spin : kSpins)
    for (int64_t size : kPingPongSizes) b->Args({size, spin});
}

BENCHMARK(BM_MemcpyThroughput)->Apply(sizes);
BENCHMARK(BM_RawPipeThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_RawPipeGrownThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_RawPipeFramedThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_PipeThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_RawRingThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_SpscRingThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_SpscRingLoanThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_QueueThroughput)->Apply(sizes_spins)->UseRealTime();
BENCHMARK(BM_ChannelThroughput)->Apply(sizes_spins)->UseRealTime();
BENCHMARK(BM_RingChannelThroughput)->Apply(sizes_slots_spins)->UseRealTime();
BENCHMARK(BM_QueueMpmcThroughput)
    ->ArgNames({"bytes", "producers", "consumers"})
    ->ArgsProduct({{64, 4096}, {1, 2}, {1, 2}})
    ->UseRealTime();
BENCHMARK(BM_RingChannelLoanThroughput)
    ->ArgNames({"bytes", "slots", "spin_us"})
    ->ArgsProduct({{1 << 20, 16 << 20}, {1, 2}, {50}})
    ->UseRealTime();
BENCHMARK(BM_MemcpySlotsThroughput)
    ->ArgNames({"bytes", "slots"})
    ->ArgsProduct({{1 << 20, 16 << 20}, {1, 2}});
BENCHMARK(BM_JoinableQueueThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_BoostMqThroughput)->Apply(sizes)->UseRealTime();
BENCHMARK_TEMPLATE(BM_QueueTypedRoundTrip, 8)
    ->ArgNames({"bytes", "tagged"})
    ->Args({8, 0})
    ->Args({8, 1});
BENCHMARK_TEMPLATE(BM_QueueTypedRoundTrip, 64)
    ->ArgNames({"bytes", "tagged"})
    ->Args({64, 0})
    ->Args({64, 1});
BENCHMARK(BM_FloatChannel)->ArgNames({"doubles"})->Arg(100'000)->UseRealTime();

BENCHMARK(BM_RawFutexPingPong)->UseManualTime();
BENCHMARK(BM_RawSpinPingPong)->UseManualTime();
BENCHMARK(BM_RawPipePingPong)->Apply(ping_sizes)->UseManualTime();
BENCHMARK(BM_RawPipeGrownPingPong)->Apply(ping_sizes)->UseManualTime();
BENCHMARK(BM_PipePingPong)->Apply(ping_sizes)->UseManualTime();
BENCHMARK(BM_RawRingPingPong)->Apply(ping_sizes)->UseManualTime();
BENCHMARK(BM_SpscRingPingPong)->Apply(ping_sizes_spins)->UseManualTime();
BENCHMARK(BM_QueuePingPong)->Apply(ping_sizes_spins)->UseManualTime();
BENCHMARK(BM_ChannelPingPong)->Apply(ping_sizes_spins)->UseManualTime();
BENCHMARK(BM_BoostMqPingPong)->Apply(ping_sizes)->UseManualTime();

}  // namespace
}  // namespace mp::bench
