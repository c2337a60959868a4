// Prometheus metrics of calls on the worker (docs/calls.md): how many are
// live, how they ended, how long answering took, what the network did to
// the caller's audio, and what the bridge itself adds in each direction.
#pragma once

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace bridge::media_worker {

struct CallMetrics {
  CallMetrics();
  prometheus::Gauge* active;             // bridge_worker_calls_active
  prometheus::Histogram* setup_seconds;  // offer received -> DTLS up (media can flow)
  // Bridge-added latency per 20 ms frame: caller packet arrival -> sent to
  // the agent; agent audio arrival -> its packet sent (beyond real-time pacing).
  prometheus::Histogram* to_agent_seconds;
  prometheus::Histogram* to_caller_seconds;
  prometheus::Histogram* jitter_seconds;  // interarrival jitter at each call's end
  prometheus::Counter* packets_received;
  prometheus::Counter* packets_lost;       // rebuilt from FEC or concealed
  prometheus::Counter* packets_recovered;  // of those, from the next packet's FEC
  prometheus::Counter* barge_ins;          // caller speech cut the agent's audio
  prometheus::Counter& Ended(const char* outcome);  // bridge_worker_calls_total{outcome}

 private:
  prometheus::Family<prometheus::Counter>* ended_;
};

}  // namespace bridge::media_worker
