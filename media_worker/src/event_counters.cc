#include "event_counters.h"

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"

namespace bridge::media_worker {

namespace {

using Family = prometheus::Family<prometheus::Counter>;

Family& CodeCounter(const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*MetricsRegistry());
}

Family& AgentCloses() {
  static auto& family = CodeCounter("bridge_worker_agent_closes_total",
                                    "Agent WebSockets closed by the agent or the network, by "
                                    "close code (1000 ended, 1002 idle/operational, 1008 bad "
                                    "input, 1011 crash, 1006 lost)");
  return family;
}

Family& AgentRefusals() {
  static auto& family = CodeCounter("bridge_worker_agent_refusals_total",
                                    "Agent WebSocket handshakes refused, by HTTP status "
                                    "(429: the plan's concurrency limit)");
  return family;
}

Family& GraphErrors() {
  static auto& family = CodeCounter("bridge_worker_graph_errors_total",
                                    "Graph API calls answered with an error, each attempt, by "
                                    "Graph error code (0: no Graph error body)");
  return family;
}

}  // namespace

void RegisterEventCounters() {
  // The series the alert rules watch start at 0, so that increase() sees
  // the first one (a series born at 1 has no earlier sample to rise from).
  AgentCloses().Add({{"code", "1008"}});
  AgentRefusals().Add({{"http_status", "429"}});
  for (const char* code : {"190", "131047"}) GraphErrors().Add({{"code", code}});
}

void CountAgentClose(int close_code) {
  AgentCloses().Add({{"code", absl::StrCat(close_code)}}).Increment();
}

void CountAgentRefusal(int http_status) {
  AgentRefusals().Add({{"http_status", absl::StrCat(http_status)}}).Increment();
}

void CountGraphError(int graph_code) {
  GraphErrors().Add({{"code", absl::StrCat(graph_code)}}).Increment();
}

}  // namespace bridge::media_worker
