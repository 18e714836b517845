#include "lib/spawn.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/process.h"
#include "lib/task.h"
#include "lib/test_util.h"

namespace mp {
namespace {

using ::testing::HasSubstr;

int g_set_by_the_parent = 0;

int read_global(std::string_view) { return g_set_by_the_parent; }

int marker_visible(std::string_view) {
  return std::getenv(internal::kSpawnTaskFdVariable) != nullptr ? 1 : 0;
}

Process spawn_process(Task task) {
  Process process(std::move(task));
  process.set_start_method(StartMethod::spawn);
  return process;
}

class SpawnTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(leaks_.Check(), ""); }
  testing::LeakCheck leaks_;
};

TEST_F(SpawnTest, ChildIsAFreshRunNotACopy) {
  g_set_by_the_parent = 7;
  Process p = spawn_process({read_global, ""});
  p.start();
  p.join();
  g_set_by_the_parent = 0;
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(SpawnTest, WorkerMarkerIsGoneFromTheChildsEnvironment) {
  Process p = spawn_process({marker_visible, ""});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(SpawnTest, FunctionFromADlopenedLibraryIsRefused) {
  void* library = ::dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(library, nullptr) << ::dlerror();
  auto function =
      reinterpret_cast<TaskFunction>(::dlsym(library, "zlibVersion"));
  ASSERT_NE(function, nullptr);
  Process p = spawn_process({function, ""});
  try {
    p.start();
    FAIL() << "referenced code from a dlopen'ed library";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("libz.so.1"));
    EXPECT_THAT(e.what(), HasSubstr("dlopen"));
  }
  EXPECT_EQ(p.pid(), 0);
  ::dlclose(library);
}

TEST_F(SpawnTest, AddressOutsideAnyObjectsCodeIsRefused) {
  static unsigned char data[16];
  auto heap = std::make_unique<unsigned char[]>(16);
  for (void* address :
       {static_cast<void*>(data), static_cast<void*>(heap.get())}) {
    Process p = spawn_process({reinterpret_cast<TaskFunction>(address), ""});
    try {
      p.start();
      FAIL() << "referenced an address that is not code";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("code of no loaded object"));
    }
  }
}

}  // namespace
}  // namespace mp
