// The controller's Prometheus metrics, registered once in the process
// registry. Names follow Prometheus conventions (bridge_ prefix, _total for
// counters, base units).
#pragma once

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace bridge::controller {

struct ControllerMetrics {
  ControllerMetrics();

  prometheus::Family<prometheus::Counter>* ingest_events;  // {kind, outcome}
  prometheus::Counter* messages_accepted;
  prometheus::Counter* messages_duplicate;
  prometheus::Counter* statuses;
  prometheus::Counter* other_events;
  prometheus::Counter* ingest_failures;
  prometheus::Histogram* ingest_commit_seconds;
  prometheus::Histogram* queue_wait_seconds;
  prometheus::Family<prometheus::Counter>* turns;  // {outcome}
  prometheus::Counter* turns_done;
  prometheus::Counter* turns_failed;
  prometheus::Counter* turns_retried;
  prometheus::Gauge* sessions_active;
  prometheus::Gauge* turns_pending;
  prometheus::Gauge* workers_serving;
  prometheus::Counter* workers_dead;
};

}  // namespace bridge::controller
