#include "converse_metrics.h"

#include "common/metrics.h"
#include "prometheus/family.h"

namespace bridge::media_worker {

ConverseMetrics::ConverseMetrics() {
  auto& r = *MetricsRegistry();
  streams = &prometheus::BuildGauge()
                 .Name("bridge_converse_streams")
                 .Help("Media.Converse streams open on this worker")
                 .Register(r)
                 .Add({});
  auto& dropped = prometheus::BuildCounter()
                      .Name("bridge_converse_dropped_audio_total")
                      .Help("Converse audio messages dropped by backpressure (out: a slow client, "
                            "in: input too far ahead of real time)")
                      .Register(r);
  dropped_out = &dropped.Add({{"direction", "out"}});
  dropped_in = &dropped.Add({{"direction", "in"}});
  // Sub-millisecond to seconds: the codec costs microseconds, a slow client
  // or a busy pool shows up in the upper buckets.
  chunk_seconds = &prometheus::BuildHistogram()
                       .Name("bridge_converse_chunk_seconds")
                       .Help("Bridge-added latency per agent audio chunk: arrival from the agent "
                             "to the start of the response write")
                       .Register(r)
                       .Add({}, prometheus::Histogram::BucketBoundaries{
                                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05, 0.1, 0.25, 0.5, 1, 2.5});
  ended_ = &prometheus::BuildCounter()
                .Name("bridge_converse_streams_total")
                .Help("Converse streams ended, by outcome (ok, cancelled, error)")
                .Register(r);
  for (const char* outcome : {"ok", "cancelled", "error"}) Ended(outcome);  // at 0 from the start
}

prometheus::Counter& ConverseMetrics::Ended(const char* outcome) {
  return ended_->Add({{"outcome", outcome}});
}

}  // namespace bridge::media_worker
