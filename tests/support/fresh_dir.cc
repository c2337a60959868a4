#include "fresh_dir.h"

#include <stdlib.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace bridge::testing {

std::string FreshDir(const std::string& stem) {
  std::string path = absl::StrCat(::testing::TempDir(), "/", stem, "-XXXXXX");
  const bool made = mkdtemp(path.data()) != nullptr;
  EXPECT_TRUE(made) << "cannot make a directory like " << path;
  return path;
}

}  // namespace bridge::testing
