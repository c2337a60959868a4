// Counters of events the dashboards and alert rules key on, by code. A light
// header (no prometheus-cpp) for the agent socket and the Graph client, which
// count where the event happens, whichever session or stream it belongs to.
#pragma once

namespace bridge::media_worker {

// Registers the three families, with the series the alert rules watch at 0.
void RegisterEventCounters();
void CountAgentClose(int close_code);     // bridge_worker_agent_closes_total{code}
void CountAgentRefusal(int http_status);  // bridge_worker_agent_refusals_total{http_status}
void CountGraphError(int graph_code);     // bridge_worker_graph_errors_total{code}

}  // namespace bridge::media_worker
