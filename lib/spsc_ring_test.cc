#include "lib/spsc_ring.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/process.h"
#include "lib/spsc_ring_testing.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using internal::SpscRingTestAccess;
using ::testing::HasSubstr;

// Short liveness checks keep the dead-peer tests fast.
SpscRingOptions options(std::size_t capacity) {
  SpscRingOptions o;
  o.capacity_bytes = capacity;
  o.wait.liveness_check = 20ms;
  return o;
}

// Message i: a length that varies (0 to 300 bytes, so frames of every
// padding and the end-of-ring skip all occur) and bytes derived from i.
std::vector<std::byte> message(std::uint64_t i) {
  std::vector<std::byte> m((i * 37) % 301);
  for (std::size_t k = 0; k < m.size(); ++k)
    m[k] = static_cast<std::byte>((i * 131 + k) & 0xff);
  return m;
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return std::as_bytes(std::span(s));
}

class SpscRingTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(SpscRingTest, OrderAcrossProcessesThenEndOfStream) {
  SpscRing ring(options(4096));
  Process producer([&] {
    for (std::uint64_t i = 0; i < 20000; ++i) ring.send_bytes(message(i));
    ring.close();
  });
  producer.start();
  for (std::uint64_t i = 0; i < 20000; ++i) {
    const auto got = ring.recv_bytes();
    ASSERT_TRUE(got.has_value()) << i;
    ASSERT_EQ(*got, message(i)) << i;
  }
  EXPECT_EQ(ring.recv_bytes(), std::nullopt);
  EXPECT_TRUE(ring.end_of_stream());
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_F(SpscRingTest, ChildConsumesWhatTheParentSends) {
  SpscRing ring(options(1024));
  Process consumer([&] {
    std::vector<std::byte> buffer(400);
    for (std::uint64_t i = 0; i < 5000; ++i) {
      const auto n = ring.recv_bytes_into(buffer);
      if (!n || *n != message(i).size() ||
          !std::equal(buffer.begin(), buffer.begin() + *n, message(i).begin()))
        return 1;
    }
    return ring.recv_bytes_into(buffer).has_value() ? 2 : 0;
  });
  consumer.start();
  for (std::uint64_t i = 0; i < 5000; ++i) ring.send_bytes(message(i));
  ring.close();
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
}

TEST_F(SpscRingTest, WrapsAroundManyTimesInOneThread) {
  SpscRing ring(options(256));
  for (std::uint64_t i = 0; i < 5000; ++i) {
    const auto m = message(i % 7);  // up to 222 bytes: most frames skip the end
    // One piece, up to 232 bytes: one that does not fit before the end of
    // the ring waits for the consumer to pass the skipped end.
    if (!ring.try_send_bytes(m)) {
      EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
      ASSERT_TRUE(ring.try_send_bytes(m)) << i;
    }
    EXPECT_EQ(ring.try_recv_bytes(), m) << i;
  }
  EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
}

TEST_F(SpscRingTest, StreamsAMessageLargerThanTheRing) {
  SpscRing ring(options(4096));
  std::vector<std::byte> big(1 << 20);
  for (std::size_t k = 0; k < big.size(); ++k)
    big[k] = static_cast<std::byte>(k * 7 % 251);
  Process producer([&] {
    ring.send_bytes(big);
    ring.send_bytes(big);
    ring.send_bytes(big);
    ring.close();
  });
  producer.start();
  EXPECT_EQ(ring.recv_bytes(), big);
  // A view cannot hold a streamed message: it says so and leaves it there.
  try {
    ring.recv_view();
    ADD_FAILURE() << "no MessageTooLong";
  } catch (const MessageTooLong& e) {
    EXPECT_EQ(e.length(), big.size());
    EXPECT_EQ(e.limit(), ring.max_message());
  }
  std::vector<std::byte> buffer(big.size() - 1);
  EXPECT_THROW(ring.recv_bytes_into(buffer), MessageTooLong);
  buffer.resize(big.size());
  EXPECT_EQ(ring.recv_bytes_into(buffer), big.size());
  EXPECT_EQ(buffer, big);
  EXPECT_EQ(ring.recv_bytes(), big);
  EXPECT_EQ(ring.recv_bytes(), std::nullopt);
  producer.join();
}

TEST_F(SpscRingTest, LoanFillsInPlaceAndViewReadsInPlace) {
  SpscRing ring(options(256));
  {
    auto slot = ring.loan(100);
    ASSERT_EQ(slot.size(), 100u);
    std::memcpy(slot.data(), "hello", 5);
    slot.commit(5);
  }
  {
    auto view = ring.recv_view();
    ASSERT_TRUE(view.has_value());
    EXPECT_EQ(
        std::string(reinterpret_cast<const char*>(view->data()), view->size()),
        "hello");
    // One view at a time: the next receive must wait for this release.
    EXPECT_THROW(ring.try_recv_bytes(), std::logic_error);
  }
}

TEST_F(SpscRingTest, TheLargestMessageFillsTheRingUntilReleased) {
  SpscRing ring(options(256));
  auto full = ring.loan(ring.max_message());
  full.commit();
  EXPECT_FALSE(ring.try_send_bytes(as_bytes("x")));
  EXPECT_FALSE(ring.try_loan(0).has_value());
  {
    auto view = ring.try_recv_view();
    ASSERT_TRUE(view.has_value());
    EXPECT_EQ(view->size(), ring.max_message());
    EXPECT_FALSE(ring.try_send_bytes(as_bytes("x")));
  }
  EXPECT_TRUE(ring.try_send_bytes(as_bytes("x")));
  EXPECT_THROW(ring.loan(ring.max_message() + 1), MessageTooLong);
}

TEST_F(SpscRingTest, AnUncommittedLoanPublishesNothing) {
  SpscRing ring(options(256));
  {
    auto slot = ring.loan(16);
    std::memset(slot.data(), 1, 16);
    EXPECT_THROW(ring.send_bytes(as_bytes("no")), std::logic_error);
  }
  EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
  ring.send_bytes(as_bytes("yes"));
  auto got = ring.try_recv_bytes();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), 3u);
}

TEST_F(SpscRingTest, DeferredMessagesAppearAtFlush) {
  SpscRing ring(options(1024));
  ring.send_bytes(as_bytes("a"), Publish::kDeferred);
  ring.loan(1).commit(Publish::kDeferred);
  EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
  ring.flush();
  EXPECT_TRUE(ring.try_recv_bytes().has_value());
  EXPECT_TRUE(ring.try_recv_bytes().has_value());
  EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
}

TEST_F(SpscRingTest, AWaitForRoomPublishesDeferredMessages) {
  // Without that, a producer batching into a full ring would wait forever
  // for a consumer that cannot see the batch.
  SpscRing ring(options(256));
  std::thread consumer([&] {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(ring.recv_bytes().has_value());
  });
  for (int i = 0; i < 100; ++i)
    ring.send_bytes(as_bytes(std::string(40, 'x')), Publish::kDeferred);
  ring.flush();
  consumer.join();
}

TEST_F(SpscRingTest, TimeoutsAndTryForms) {
  SpscRing ring(options(256));
  EXPECT_EQ(ring.try_recv_bytes(), std::nullopt);
  EXPECT_FALSE(ring.try_recv_view().has_value());
  EXPECT_THROW(ring.recv_bytes(10ms), Empty);
  EXPECT_THROW(ring.recv_view(10ms), Empty);
  std::vector<std::byte> buffer(8);
  EXPECT_THROW(ring.recv_bytes_into(buffer, 10ms), Empty);
  ring.send_bytes(std::vector<std::byte>(200), 10ms);
  EXPECT_THROW(ring.send_bytes(std::vector<std::byte>(100), 10ms), Full);
  EXPECT_THROW(ring.loan(100, 10ms), Full);
  EXPECT_FALSE(ring.try_send_bytes(std::vector<std::byte>(100)));
  // One piece only for the timed and try_ forms.
  EXPECT_THROW(ring.send_bytes(std::vector<std::byte>(1000), 10ms),
               MessageTooLong);
  EXPECT_THROW(ring.recv_bytes_into(buffer, 10ms), MessageTooLong);
  EXPECT_EQ(ring.recv_bytes(10ms)->size(), 200u);
  ring.close();
  EXPECT_EQ(ring.recv_bytes(10ms), std::nullopt);
}

TEST_F(SpscRingTest, CloseEndsTheStreamAndRefusesSends) {
  SpscRing ring(options(256));
  std::thread consumer([&] { EXPECT_EQ(ring.recv_bytes(), std::nullopt); });
  std::this_thread::sleep_for(10ms);  // usually asleep by now; either is fine
  ring.close();
  consumer.join();
  EXPECT_THROW(ring.send_bytes(as_bytes("late")), ClosedError);
  EXPECT_THROW(ring.loan(1), ClosedError);
  ring.close();  // idempotent
}

TEST_F(SpscRingTest, DeadProducerIsAPeerErrorAfterItsMessages) {
  SpscRing ring(options(4096));
  Process producer([&] {
    ring.send_bytes(as_bytes("one"));
    ring.send_bytes(as_bytes("two"));
    auto slot = ring.loan(100);  // dies before committing: nothing published
    std::memset(slot.data(), 7, 100);
    ::_exit(0);
  });
  producer.start();
  EXPECT_EQ(ring.recv_bytes()->size(), 3u);
  EXPECT_EQ(ring.recv_bytes()->size(), 3u);
  try {
    ring.recv_bytes();
    ADD_FAILURE() << "no PeerError";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("pid " + std::to_string(producer.pid())));
  }
  producer.join();
}

TEST_F(SpscRingTest, ProducerKilledMidStreamLosesNothingSilently) {
  SpscRing ring(options(4096));
  Process producer([&] {
    ring.send_bytes(std::vector<std::byte>(1 << 20));  // blocks: ring full
  });
  producer.start();
  while (SpscRingTestAccess::tail(ring) < 2048) std::this_thread::yield();
  producer.kill();
  try {
    ring.recv_bytes();
    ADD_FAILURE() << "no PeerError";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("in the middle of a 1048576-byte message"));
    EXPECT_THAT(e.what(), HasSubstr("pid " + std::to_string(producer.pid())));
  }
  producer.join();
}

TEST_F(SpscRingTest, DeadConsumerIsAPeerErrorForABlockedProducer) {
  SpscRing ring(options(256));
  Process consumer([&] { return ring.recv_bytes().has_value() ? 0 : 1; });
  consumer.start();
  ring.send_bytes(as_bytes("first"));
  consumer.join();
  try {
    for (int i = 0; i < 100; ++i) ring.send_bytes(as_bytes("more"));
    ADD_FAILURE() << "no PeerError";
  } catch (const PeerError& e) {
    EXPECT_THAT(e.what(), HasSubstr("pid " + std::to_string(consumer.pid())));
  }
}

TEST_F(SpscRingTest, PingPongBetweenProcesses) {
  SpscRing there(options(4096)), back(options(4096));
  Process echo([&] {
    while (auto view = there.recv_view()) back.send_bytes(view->bytes());
    back.close();
  });
  echo.start();
  for (std::uint64_t i = 0; i < 2000; ++i) {
    there.send_bytes(message(i));
    ASSERT_EQ(back.recv_bytes(), message(i));
  }
  there.close();
  EXPECT_EQ(back.recv_bytes(), std::nullopt);
  echo.join();
  EXPECT_EQ(echo.exitcode(), 0);
}

// Both sides block at once (no spinning): on a ring that fills after a few
// messages, and in round trips, where each side sleeps until the other
// answers. Liveness checks are far apart: a lost wake-up would hang here
// until the test's timeout instead of being rescued by the periodic check.
TEST_F(SpscRingTest, NoLostWakeUpsWhenSidesSleep) {
  SpscRingOptions o = options(256);
  o.wait = WaitPolicy::block_only();
  o.wait.liveness_check = std::chrono::seconds(30);
  SpscRing ring(o), there(o), back(o);
  Process producer([&] {
    for (std::uint64_t i = 0; i < 20000; ++i)
      ring.send_bytes(std::as_bytes(std::span(&i, 1)));
    ring.close();
    while (auto view = there.recv_view()) back.send_bytes(view->bytes());
  });
  producer.start();
  std::uint64_t expected = 0;
  while (auto got = ring.recv_bytes()) {
    std::uint64_t value;
    ASSERT_EQ(got->size(), sizeof value);
    std::memcpy(&value, got->data(), sizeof value);
    ASSERT_EQ(value, expected++);
  }
  EXPECT_EQ(expected, 20000u);
  for (std::uint64_t i = 0; i < 2000; ++i) {
    there.send_bytes(std::as_bytes(std::span(&i, 1)));
    const auto got = back.recv_bytes();
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(std::memcmp(got->data(), &i, sizeof i), 0);
  }
  there.close();
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_F(SpscRingTest, ManyMessagesBetweenThreads) {
  // Under --config=tsan this checks the ring's memory ordering.
  SpscRing ring(options(512));
  constexpr std::uint64_t kCount = 100000;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kCount; ++i) {
      if (i % 3 == 0) {
        auto slot = ring.loan(sizeof i);
        std::memcpy(slot.data(), &i, sizeof i);
        slot.commit(i % 2 ? Publish::kDeferred : Publish::kNow);
      } else {
        ring.send_bytes(std::as_bytes(std::span(&i, 1)),
                        i % 5 == 0 ? Publish::kNow : Publish::kDeferred);
      }
      if (i % 16 == 0) ring.flush();
    }
    ring.close();
  });
  std::uint64_t expected = 0;
  for (;;) {
    std::uint64_t got;
    if (expected % 2) {
      auto view = ring.recv_view();
      if (!view) break;
      ASSERT_EQ(view->size(), sizeof got);
      std::memcpy(&got, view->data(), sizeof got);
    } else {
      auto n = ring.recv_bytes_into(std::as_writable_bytes(std::span(&got, 1)));
      if (!n) break;
    }
    ASSERT_EQ(got, expected);
    ++expected;
  }
  producer.join();
  EXPECT_EQ(expected, kCount);
}

// --- What a buggy or hostile producer could write ---------------------------

std::vector<std::byte> frame(std::uint32_t length, std::uint32_t kind) {
  std::vector<std::byte> f(8);
  std::memcpy(f.data(), &length, 4);
  std::memcpy(f.data() + 4, &kind, 4);
  return f;
}

// Ring images a reader must refuse, each at its first frame; `head` and
// `tail` are the cursors, `at` where the frame header is written.
struct CorruptCase {
  const char* what;
  std::uint64_t head, tail, at;
  std::uint32_t length, kind;
};

TEST_F(SpscRingTest, CorruptFramesAreRefusedAndNothingIsConsumed) {
  const CorruptCase cases[] = {
      {"truncated: a 100-byte message with only its header published", 0, 8, 0,
       100, 1},
      {"unknown kind", 0, 8, 0, 0, 99},
      {"tail beyond the ring", 0, 4096, 0, 0, 1},
      {"frame across the end of the ring", 240, 320, 240, 64, 1},
      {"a middle piece without its first", 0, 8, 0, 0, 3},
      {"a first piece without the length", 0, 8, 0, 0, 2},
      {"padding that stops short of the end", 0, 16, 0, 8, 5},
  };
  for (const CorruptCase& c : cases) {
    SCOPED_TRACE(c.what);
    SpscRing ring(options(256));
    std::vector<std::byte> bytes(256);
    const auto f = frame(c.length, c.kind);
    std::copy(f.begin(), f.end(), bytes.begin() + c.at);
    SpscRingTestAccess::overwrite(ring, c.head, c.tail, bytes);
    for (int i = 0; i < 2; ++i) {  // nothing consumed: refused again
      try {
        ring.try_recv_bytes();
        ADD_FAILURE() << "no PeerError";
      } catch (const PeerError& e) {
        EXPECT_THAT(e.what(), HasSubstr("corrupt ring"));
      }
    }
  }
}

TEST_F(SpscRingTest, CapacityIsRoundedAndBounded) {
  EXPECT_EQ(SpscRing(options(1)).capacity_bytes(), 256u);
  EXPECT_EQ(SpscRing(options(1000)).capacity_bytes(), 1024u);
  EXPECT_THROW(SpscRing(options((std::size_t{1} << 32) + 1)),
               std::invalid_argument);
}

}  // namespace
}  // namespace mp
