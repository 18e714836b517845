#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/error.h"
#include "lib/fd.h"
#include "lib/mapping.h"
#include "lib/process.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using ::testing::HasSubstr;

TEST(FdTest, ClosesOnDestructionAndMove) {
  const int before = testing::count_open_fds();
  {
    Fd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(a);
    Fd b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    Fd c;
    c = std::move(b);
    EXPECT_EQ(testing::count_open_fds(), before + 1);
  }
  EXPECT_EQ(testing::count_open_fds(), before);
}

TEST(FdTest, CloseReportsTheCallAndErrno) {
  Fd bogus(100000);
  try {
    bogus.close();
    FAIL();
  } catch (const OsError& e) {
    EXPECT_EQ(e.call(), "close");
    EXPECT_EQ(e.error_number(), EBADF);
    EXPECT_THAT(e.what(), HasSubstr("close (fd 100000): Bad file descriptor"));
  }
  EXPECT_FALSE(bogus);
}

TEST(MappingTest, SharedMemoryIsSeenByTheChild) {
  Mapping m = Mapping::shared(100);
  EXPECT_GE(m.size(), 100u);
  Process p([&] { std::memcpy(m.data(), "hello", 6); });
  p.start();
  p.join();
  EXPECT_STREQ(static_cast<const char*>(m.data()), "hello");
}

TEST(MappingTest, PrivateMemoryIsCopyOnWrite) {
  Mapping m = Mapping::private_anonymous(100);
  Process p([&] { std::memcpy(m.data(), "hello", 6); });
  p.start();
  p.join();
  EXPECT_EQ(static_cast<const char*>(m.data())[0], '\0');
}

TEST(MappingTest, ErrorsAreClear) {
  EXPECT_THROW(Mapping::shared(0), std::invalid_argument);
  try {
    Mapping::shared(std::numeric_limits<std::size_t>::max() / 2);
    FAIL();
  } catch (const OsError& e) {
    EXPECT_EQ(e.call(), "mmap");
    EXPECT_THAT(e.what(), HasSubstr("Cannot allocate memory"));
  }
}

}  // namespace
}  // namespace mp
