// Prometheus metrics of bridge.v1.Media/Converse streams on the worker.
#pragma once

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace bridge::media_worker {

struct ConverseMetrics {
  ConverseMetrics();
  prometheus::Gauge* streams;                // bridge_converse_streams: open now
  prometheus::Counter* dropped_out;          // ..._dropped_audio_total{direction="out"}
  prometheus::Counter* dropped_in;           // ..._dropped_audio_total{direction="in"}
  prometheus::Histogram* chunk_seconds;      // agent audio arrival -> response write started
  prometheus::Counter& Ended(const char* outcome);  // bridge_converse_streams_total{outcome}

 private:
  prometheus::Family<prometheus::Counter>* ended_;
};

}  // namespace bridge::media_worker
