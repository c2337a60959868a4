// Process lifecycle: the READY line, SIGTERM/SIGINT handling, version.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace bridge {

// Blocks SIGINT and SIGTERM in this thread and every thread started after it,
// so that only WaitForShutdownSignal() sees them. Call first in main().
void BlockShutdownSignals();

// Waits for SIGINT or SIGTERM; returns the signal number.
int WaitForShutdownSignal();

// Prints `READY <name> key=value ...` on stdout and flushes: tests and
// bridge.sh wait for this line instead of sleeping.
void PrintReady(absl::string_view name,
                const std::vector<std::pair<std::string, std::string>>& endpoints);

absl::string_view BridgeVersion();

}  // namespace bridge
