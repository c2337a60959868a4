// A new, empty, uniquely named directory under the test temp dir. Store
// files named from the pid alone outlive their run, and a later process that
// gets the same pid would load the old sessions; two runs in parallel would
// share one. Every test that names a store file puts it in one of these.
#pragma once

#include <string>

namespace bridge::testing {

std::string FreshDir(const std::string& stem);

}  // namespace bridge::testing
