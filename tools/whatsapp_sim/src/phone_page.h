// The phone page (tools/whatsapp_sim/web/phone.html), compiled in by
// cmake/EmbedFile.cmake.
#pragma once

#include "absl/strings/string_view.h"

namespace bridge::whatsapp_sim {
absl::string_view PhonePage();
}  // namespace bridge::whatsapp_sim
