// The operator console's page (controller/web/console.html), compiled in by
// cmake/EmbedFile.cmake.
#pragma once

#include "absl/strings/string_view.h"

namespace bridge::controller {
absl::string_view ConsolePage();
}  // namespace bridge::controller
