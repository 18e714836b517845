// The fault campaign: a long pool map and two producer/consumer pairs (one
// over mp::Queue, one over mp::Pipe) run under load while a controller
// randomly SIGKILLs and SIGSTOP/SIGCONTs workers and peers, makes a sender
// close its pipe in the middle of a frame, and sends SIGTERM to the pool's
// parent. After every round it checks that each item was delivered exactly
// once or reported failed with a reason the controller can name (none
// silently lost, none duplicated), that no process outlived the round's
// deadline, and that no zombie, orphan, fd or /dev/shm entry is left.
//
// Rounds: MPBENCH_FAULT_ROUNDS (default 200). Seed: MPBENCH_FAULT_SEED.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/graceful_shutdown.h"
#include "lib/mapping.h"
#include "lib/pipe.h"
#include "lib/pool.h"
#include "lib/process.h"
#include "lib/queue.h"
#include "lib/reaper.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kPoolItems = 600;
constexpr std::size_t kQueueItems = 3000;
constexpr std::size_t kPipeItems = 3000;
constexpr std::size_t kMaxWorkers = 8;
constexpr auto kRoundDeadline = 20s;

// --- What every process of a round records, in shared memory ---------------

struct RoundShared {
  // Pool part: the pool's parent publishes its workers; counts per item.
  std::atomic<pid_t> pool_parent{0};
  std::atomic<pid_t> workers[kMaxWorkers];
  std::atomic<std::uint32_t> pool_submitted[kPoolItems];
  std::atomic<std::uint32_t> pool_delivered[kPoolItems];
  std::atomic<std::uint32_t> pool_failed[kPoolItems];  // WorkerLost named it
  std::atomic<std::uint32_t> pool_wrong[kPoolItems];   // a wrong value arrived
  std::atomic<std::uint32_t> pool_done{0};
  // Queue pair.
  std::atomic<std::uint64_t> queue_next{0};  // producer's progress
  std::atomic<std::uint8_t> queue_attempted[kQueueItems];
  std::atomic<std::uint8_t> queue_put[kQueueItems];
  std::atomic<std::uint32_t> queue_delivered[kQueueItems];
  std::atomic<std::uint32_t> queue_producer_done{0};
  // Pipe pair: one session per pipe; a session ends when either side dies.
  std::atomic<std::uint64_t> pipe_next{0};
  std::atomic<std::uint8_t> pipe_attempted[kPipeItems];
  std::atomic<std::uint8_t> pipe_sent[kPipeItems];
  std::atomic<std::uint32_t> pipe_delivered[kPipeItems];
  std::atomic<std::uint32_t> pipe_close_mid_frame{0};  // the injected fault
  std::atomic<std::uint32_t> pipe_truncated_seen{0};
};

// The pool's work: a little CPU per item, so chunks are in flight when
// faults land.
std::int64_t work(const std::int64_t& x) {
  std::uint64_t h = static_cast<std::uint64_t>(x) + 1;
  for (int i = 0; i < 30000; ++i)
    h = h * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<std::int64_t>(h >> 1) ^ x;
}

// Consumers take ~10 us an item, so a round's pairs run for tens of
// milliseconds and faults land while items are in flight.
void consume_time() {
  const auto until = Clock::now() + 10us;
  while (Clock::now() < until) {
  }
}

// The pool's parent: maps every item, delivering results as they come and
// resubmitting what is left after a worker is lost.
int pool_parent_main(RoundShared* shared, std::uint32_t seed) {
  PoolOptions options;
  options.workers = 3;
  options.wait.liveness_check = 20ms;
  Pool pool(options);
  GracefulShutdown graceful(pool, 5s);
  auto publish = [&] {
    const auto pids = pool.worker_pids();
    for (std::size_t i = 0; i < kMaxWorkers; ++i) {
      shared->workers[i] = i < pids.size() ? pids[i] : 0;
    }
  };
  publish();
  std::mt19937 random(seed);
  std::vector<std::int64_t> remaining(kPoolItems);
  for (std::size_t i = 0; i < kPoolItems; ++i)
    remaining[i] = static_cast<std::int64_t>(i);
  while (!remaining.empty()) {
    for (std::int64_t x : remaining) shared->pool_submitted[x].fetch_add(1);
    const std::size_t chunksize =
        std::array<std::size_t, 3>{1, 4, 16}[random() % 3];
    std::vector<bool> settled(kPoolItems, false);
    // imap_unordered yields values, not items: each result carries its item.
    try {
      for (const auto& [x, value] : pool.imap_unordered(
               +[](const std::int64_t& x) {
                 return std::make_pair(x, work(x));
               },
               std::span<const std::int64_t>(remaining), chunksize)) {
        if (x < 0 || x >= static_cast<std::int64_t>(kPoolItems) ||
            value != work(x)) {
          shared->pool_wrong[0].fetch_add(1);
          continue;
        }
        shared->pool_delivered[x].fetch_add(1);
        settled[x] = true;
        publish();
      }
    } catch (const WorkerLost& e) {
      for (std::uint64_t k = e.first_item(); k < e.first_item() + e.count();
           ++k) {
        const std::int64_t x = remaining[k];
        shared->pool_failed[x].fetch_add(1);
        settled[x] = true;
      }
      publish();
    }
    std::vector<std::int64_t> next;
    for (std::int64_t x : remaining) {
      if (!settled[x]) next.push_back(x);
    }
    remaining.swap(next);
  }
  shared->pool_done = 1;
  pool.close();
  pool.join();
  return 0;
}

// Queue producer: puts items in order from where the last producer stopped.
// An item whose put was interrupted (attempted, not known put) is never put
// again: it might already be in the queue.
int queue_producer_main(RoundShared* shared, Queue* queue) {
  for (std::uint64_t i = shared->queue_next.load(); i < kQueueItems;
       i = shared->queue_next.load()) {
    // Attempted first: a kill between the two stores then leaves i attempted
    // and retried by the next producer (never put, so never put twice),
    // instead of skipped and unaccounted for.
    shared->queue_attempted[i] = 1;
    shared->queue_next = i + 1;  // whatever happens next, never put i twice
    queue->put(static_cast<std::uint64_t>(i));
    shared->queue_put[i] = 1;
  }
  queue->close();
  shared->queue_producer_done = 1;
  return 0;
}

int queue_consumer_main(RoundShared* shared, Queue* queue) {
  while (auto item = queue->get<std::uint64_t>()) {
    if (*item >= kQueueItems) return 2;
    shared->queue_delivered[*item].fetch_add(1);
    consume_time();
  }
  return 0;
}

// One pipe session: the sender sends items from where the last session
// stopped; when told to, it writes half a frame and closes its end.
int pipe_sender_main(RoundShared* shared, Connection* receiver,
                     Connection* sender) {
  receiver->close();
  for (std::uint64_t i = shared->pipe_next.load(); i < kPipeItems;
       i = shared->pipe_next.load()) {
    shared->pipe_attempted[i] = 1;  // first, as in queue_producer_main
    shared->pipe_next = i + 1;
    if (shared->pipe_close_mid_frame.exchange(0)) {
      const std::uint64_t header = sizeof(std::uint64_t);
      if (::write(sender->fileno(), &header, sizeof header) != sizeof header)
        return 3;
      if (::write(sender->fileno(), &i, 3) != 3) return 3;  // 3 of its 8 bytes
      sender->close();
      return 0;
    }
    try {
      sender->send(i);
    } catch (const PeerError&) {
      return 0;  // the receiver is gone: this session is over
    }
    shared->pipe_sent[i] = 1;
  }
  return 0;
}

int pipe_receiver_main(RoundShared* shared, Connection* receiver,
                       Connection* sender) {
  sender->close();
  try {
    while (auto item = receiver->recv<std::uint64_t>()) {
      if (*item >= kPipeItems) return 2;
      shared->pipe_delivered[*item].fetch_add(1);
      consume_time();
    }
  } catch (const PeerError&) {
    shared->pipe_truncated_seen.fetch_add(1);  // the truncated frame, reported
  }
  return 0;
}

// Signals `pid` only if it is still a child of `parent`: pids are reused, and
// a stale one must never hit an unrelated process.
bool signal_child_of(pid_t pid, pid_t parent, int signal) {
  if (pid <= 0) return false;
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return false;
  bool sent = false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (FILE* f = std::fopen(path, "r")) {
    char buffer[512] = {};
    const std::size_t n = std::fread(buffer, 1, sizeof buffer - 1, f);
    std::fclose(f);
    const char* close = std::strrchr(buffer, ')');
    char state = 0;
    int ppid = 0;
    if (n > 0 && close != nullptr &&
        std::sscanf(close + 1, " %c %d", &state, &ppid) == 2 &&
        ppid == parent) {
      sent = ::syscall(SYS_pidfd_send_signal, fd, signal, nullptr, 0) == 0;
    }
  }
  ::close(fd);
  return sent;
}

struct Counts {
  std::uint64_t rounds = 0;
  std::map<std::string, std::uint64_t> faults;
  std::uint64_t delivered = 0;
  std::map<std::string, std::uint64_t> failed;  // by reason
  std::uint64_t lost = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t wrong = 0;
  std::uint64_t hangs = 0;
  std::uint64_t leaks = 0;
  std::uint64_t orphans_reaped = 0;  // daemons dead of PDEATHSIG, reaped here
};

class Round {
 public:
  Round(std::uint32_t seed, Counts& counts)
      : random_(seed),
        seed_(seed),
        counts_(counts),
        memory_(Mapping::shared(sizeof(RoundShared))) {
    shared_ = new (memory_.data()) RoundShared();
    QueueOptions options;
    options.capacity_bytes = 2048;  // small: producers block, faults bite
    options.wait.liveness_check = 20ms;
    queue_.emplace(options);
  }

  void run() {
    const auto start = Clock::now();
    const auto deadline = start + kRoundDeadline;
    pool_parent_ = Process(
        [s = shared_, seed = seed_] { return pool_parent_main(s, seed); });
    pool_parent_.start();
    start_queue_producer();
    start_queue_consumer();
    start_pipe_session();

    // Up to three faults at random moments of the round's first 60 ms (a
    // quiet round takes about as long).
    std::vector<std::pair<Clock::time_point, int>> schedule;
    const int faults = 1 + static_cast<int>(random_() % 3);
    for (int f = 0; f < faults; ++f) {
      schedule.emplace_back(
          start + std::chrono::microseconds(random_() % 60000),
          static_cast<int>(random_() % 100));
    }
    std::sort(schedule.begin(), schedule.end());
    std::size_t next_fault = 0;

    while (!done()) {
      if (Clock::now() > deadline) {
        ++counts_.hangs;
        ADD_FAILURE() << "round with seed " << seed_ << " passed its deadline";
        break;
      }
      if (next_fault < schedule.size() &&
          Clock::now() >= schedule[next_fault].first) {
        inject(schedule[next_fault++].second);
      }
      keep_pairs_going();
      std::this_thread::sleep_for(500us);
    }
    finish();
    account();
  }

 private:
  bool pool_finished() {
    return pool_parent_.pid() != 0 && !pool_parent_.is_alive();
  }
  bool queue_finished() {
    return shared_->queue_producer_done && !queue_consumer_.is_alive() &&
           queue_consumer_.exitcode() == 0;
  }
  bool pipe_finished() {
    return shared_->pipe_next >= kPipeItems && !pipe_sender_.is_alive() &&
           !pipe_receiver_.is_alive();
  }
  bool done() { return pool_finished() && queue_finished() && pipe_finished(); }

  void start_queue_producer() {
    queue_producer_ = Process(
        [s = shared_, q = &*queue_] { return queue_producer_main(s, q); });
    queue_producer_.start();
  }
  void start_queue_consumer() {
    queue_consumer_ = Process(
        [s = shared_, q = &*queue_] { return queue_consumer_main(s, q); });
    queue_consumer_.start();
  }
  void start_pipe_session() {
    auto [receiver, sender] = Pipe(false);
    pipe_receiver_end_ = std::move(receiver);
    pipe_sender_end_ = std::move(sender);
    pipe_sender_ = Process([this] {
      return pipe_sender_main(shared_, &pipe_receiver_end_, &pipe_sender_end_);
    });
    pipe_receiver_ = Process([this] {
      return pipe_receiver_main(shared_, &pipe_receiver_end_,
                                &pipe_sender_end_);
    });
    pipe_sender_.start();
    pipe_receiver_.start();
    pipe_receiver_end_.close();
    pipe_sender_end_.close();
  }

  // Restarts whatever a fault stopped, so every item gets its chance.
  void keep_pairs_going() {
    if (!shared_->queue_producer_done && !queue_producer_.is_alive())
      start_queue_producer();
    if (!queue_consumer_.is_alive() && queue_consumer_.exitcode() != 0)
      start_queue_consumer();
    if (!pipe_sender_.is_alive() || !pipe_receiver_.is_alive()) {
      // A session ends when either side is gone; the other side then sees
      // end of file or a broken pipe and exits. Wait for both, then go on.
      if (!pipe_sender_.join(2s) || !pipe_receiver_.join(2s)) {
        ++counts_.hangs;
        ADD_FAILURE() << "pipe session did not end after one side did (seed "
                      << seed_ << ")";
        pipe_sender_.kill();
        pipe_receiver_.kill();
        pipe_sender_.join();
        pipe_receiver_.join();
      }
      if (shared_->pipe_next < kPipeItems) start_pipe_session();
    }
  }

  void inject(int dice) {
    auto pause = [&](Process& p, const char* name) {
      if (!p.is_alive()) return;
      p.send_signal(SIGSTOP);
      std::this_thread::sleep_for(
          std::chrono::microseconds(1000 + random_() % 15000));
      p.send_signal(SIGCONT);
      ++counts_.faults[std::string("SIGSTOP/SIGCONT ") + name];
    };
    auto kill = [&](Process& p, const char* name) {
      if (!p.is_alive()) return;
      p.kill();
      ++counts_.faults[std::string("SIGKILL ") + name];
      if (&p == &queue_consumer_) ++consumer_kills_;
    };
    const pid_t parent = pool_parent_.pid();
    const pid_t worker = shared_->workers[random_() % 3].load();
    if (dice < 25) {
      if (signal_child_of(worker, parent, SIGKILL))
        ++counts_.faults["SIGKILL pool worker"];
    } else if (dice < 35) {
      if (signal_child_of(worker, parent, SIGSTOP)) {
        std::this_thread::sleep_for(
            std::chrono::microseconds(1000 + random_() % 15000));
        signal_child_of(worker, parent, SIGCONT);
        ++counts_.faults["SIGSTOP/SIGCONT pool worker"];
      }
    } else if (dice < 42) {
      if (pool_parent_.is_alive()) {
        pool_parent_.terminate();
        ++counts_.faults["SIGTERM pool parent"];
      }
    } else if (dice < 54) {
      kill(queue_producer_, "queue producer");
    } else if (dice < 66) {
      kill(queue_consumer_, "queue consumer");
    } else if (dice < 74) {
      pause(random_() % 2 ? queue_producer_ : queue_consumer_, "queue peer");
    } else if (dice < 82) {
      kill(random_() % 2 ? pipe_sender_ : pipe_receiver_, "pipe peer");
    } else if (dice < 90) {
      shared_->pipe_close_mid_frame = 1;
      ++counts_.faults["pipe sender closes its fd mid-frame"];
    } else {
      pause(random_() % 2 ? pipe_sender_ : pipe_receiver_, "pipe peer");
    }
  }

  void finish() {
    for (Process* p : {&pool_parent_, &queue_producer_, &queue_consumer_,
                       &pipe_sender_, &pipe_receiver_}) {
      if (p->pid() != 0 && !p->join(5s)) {
        p->kill();
        p->join();
      }
    }
    // Whatever is still in the queue was put and never taken: take it now so
    // it counts as delivered rather than lost.
    queue_->close();
    while (auto item = queue_->try_get<std::uint64_t>())
      shared_->queue_delivered[*item].fetch_add(1);
    // A SIGTERM that lands before the pool's parent has installed
    // GracefulShutdown kills it outright; its daemon workers then die of
    // PR_SET_PDEATHSIG and, orphaned, come to this process (a subreaper), as
    // they would come to init. Reap them as init would; one still running
    // after a grace period has outlived its parent: a leak.
    const auto until = Clock::now() + 3s;
    while (!testing::child_pids().empty() && Clock::now() < until) {
      counts_.orphans_reaped += reap().size();
      std::this_thread::sleep_for(1ms);
    }
  }

  // Every item: delivered exactly once, or failed for a reason we can name.
  void account() {
    ++counts_.rounds;
    const bool parent_terminated = pool_parent_.exitcode() == -SIGTERM;
    if (!parent_terminated) {
      EXPECT_EQ(pool_parent_.exitcode(), 0) << "seed " << seed_;
    }
    for (std::size_t x = 0; x < kPoolItems; ++x) {
      const std::uint32_t delivered = shared_->pool_delivered[x];
      const std::uint32_t failed = shared_->pool_failed[x];
      counts_.wrong += shared_->pool_wrong[x];
      if (delivered + failed > 1) ++counts_.duplicated;
      if (delivered == 1) {
        ++counts_.delivered;
      } else if (failed == 1) {
        ++counts_.failed["pool: worker lost mid-chunk (WorkerLost)"];
      } else if (parent_terminated) {
        ++counts_
              .failed["pool: parent terminated by SIGTERM before it completed"];
      } else {
        ++counts_.lost;
        ADD_FAILURE() << "pool item " << x << " silently lost (seed " << seed_
                      << ")";
      }
    }
    std::uint64_t queue_unexplained = 0;
    for (std::size_t i = 0; i < kQueueItems; ++i) {
      const std::uint32_t delivered = shared_->queue_delivered[i];
      if (delivered > 1) ++counts_.duplicated;
      if (delivered == 1) {
        ++counts_.delivered;
      } else if (shared_->queue_attempted[i] && !shared_->queue_put[i]) {
        ++counts_.failed["queue: producer killed while putting it"];
      } else if (shared_->queue_put[i]) {
        ++queue_unexplained;  // taken by a consumer that died before recording
                              // it
        ++counts_.failed["queue: consumer killed after taking it"];
      } else {
        ++counts_.lost;
        ADD_FAILURE() << "queue item " << i << " never attempted (seed "
                      << seed_ << ")";
      }
    }
    // A consumer can die holding at most one item it has taken.
    EXPECT_LE(queue_unexplained, consumer_kills_) << "seed " << seed_;
    for (std::size_t i = 0; i < kPipeItems; ++i) {
      const std::uint32_t delivered = shared_->pipe_delivered[i];
      if (delivered > 1) ++counts_.duplicated;
      if (delivered == 1) {
        ++counts_.delivered;
      } else if (shared_->pipe_attempted[i] && !shared_->pipe_sent[i]) {
        ++counts_.failed["pipe: sender killed or closed mid-frame"];
      } else if (shared_->pipe_sent[i]) {
        ++counts_.failed["pipe: receiver killed with it in the pipe"];
      } else {
        ++counts_.lost;
        ADD_FAILURE() << "pipe item " << i << " never attempted (seed " << seed_
                      << ")";
      }
    }
    // Orphaned workers or peers would have been re-parented to this process
    // (a subreaper): the round's leak check sees them among its children.
  }

  std::mt19937 random_;
  std::uint32_t seed_;
  std::uint64_t consumer_kills_ = 0;
  Counts& counts_;
  Mapping memory_;
  RoundShared* shared_;
  std::optional<Queue> queue_;
  Process pool_parent_, queue_producer_, queue_consumer_, pipe_sender_,
      pipe_receiver_;
  Connection pipe_receiver_end_, pipe_sender_end_;
};

TEST(FaultCampaign, NothingLostNothingHangsNothingLeaks) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us
  const char* rounds_env = std::getenv("MPBENCH_FAULT_ROUNDS");
  const char* seed_env = std::getenv("MPBENCH_FAULT_SEED");
  const int rounds = rounds_env ? std::atoi(rounds_env) : 200;
  const std::uint32_t seed =
      seed_env ? static_cast<std::uint32_t>(std::atoll(seed_env)) : 20261123;
  Counts counts;
  const auto begin = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    testing::LeakCheck leaks;
    Round(seed + static_cast<std::uint32_t>(r), counts).run();
    const std::string leaked = leaks.Check();
    if (!leaked.empty()) {
      ++counts.leaks;
      ADD_FAILURE() << "round " << r << " leaked: " << leaked;
    }
  }
  const double seconds =
      std::chrono::duration<double>(Clock::now() - begin).count();
  std::uint64_t injected = 0, failed = 0;
  for (const auto& [name, n] : counts.faults) injected += n;
  for (const auto& [name, n] : counts.failed) failed += n;
  std::printf("fault campaign: seed %u, %.1f s\n", seed, seconds);
  std::printf("  rounds: %llu\n",
              static_cast<unsigned long long>(counts.rounds));
  std::printf("  faults injected: %llu\n",
              static_cast<unsigned long long>(injected));
  for (const auto& [name, n] : counts.faults)
    std::printf("    %-45s %llu\n", name.c_str(),
                static_cast<unsigned long long>(n));
  std::printf("  items delivered exactly once: %llu\n",
              static_cast<unsigned long long>(counts.delivered));
  std::printf("  items reported failed: %llu\n",
              static_cast<unsigned long long>(failed));
  for (const auto& [name, n] : counts.failed)
    std::printf("    %-60s %llu\n", name.c_str(),
                static_cast<unsigned long long>(n));
  std::printf("  items silently lost: %llu\n",
              static_cast<unsigned long long>(counts.lost));
  std::printf("  items delivered twice: %llu\n",
              static_cast<unsigned long long>(counts.duplicated));
  std::printf("  wrong values: %llu\n",
              static_cast<unsigned long long>(counts.wrong));
  std::printf("  hangs: %llu\n", static_cast<unsigned long long>(counts.hangs));
  std::printf(
      "  orphaned daemon workers (parent killed before its handler), reaped: "
      "%llu\n",
      static_cast<unsigned long long>(counts.orphans_reaped));
  std::printf("  leaks found: %llu\n",
              static_cast<unsigned long long>(counts.leaks));
  EXPECT_EQ(counts.rounds, static_cast<std::uint64_t>(rounds));
  EXPECT_EQ(counts.lost, 0u);
  EXPECT_EQ(counts.duplicated, 0u);
  EXPECT_EQ(counts.wrong, 0u);
  EXPECT_EQ(counts.hangs, 0u);
  EXPECT_EQ(counts.leaks, 0u);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
}  // namespace mp
