#include "common/service.h"

#include "common/log.h"
#include "common/process.h"

namespace bridge {

int RunUntilSignal(absl::string_view name, absl::StatusOr<std::unique_ptr<Service>> service) {
  if (!service.ok()) {
    LogError("cannot start", {{"error", service.status()}});
    return absl::IsInvalidArgument(service.status()) ? 2 : 1;
  }
  PrintReady(name, (*service)->endpoints());
  int sig = WaitForShutdownSignal();
  LogInfo("shutting down", {{"signal", sig}});
  (*service)->Shutdown();
  LogInfo("stopped");
  return 0;
}

}  // namespace bridge
