#include "worker_metrics.h"

#include "common/metrics.h"

namespace bridge::media_worker {

WorkerMetrics::WorkerMetrics() {
  auto& r = *MetricsRegistry();
  stages = &prometheus::BuildHistogram()
                .Name("bridge_turn_stage_seconds")
                .Help("Latency of each stage of a turn on the worker")
                .Register(r);
  turns = &prometheus::BuildCounter()
               .Name("bridge_worker_turns_total")
               .Help("Turns run, by message type and outcome")
               .Register(r);
  errors = &prometheus::BuildCounter()
                .Name("bridge_worker_errors_total")
                .Help("Errors by class (agent, decode, transcribe, send_retried, maybe_sent, "
                      "voice_fallback_text)")
                .Register(r);
  reply_ends = &prometheus::BuildCounter()
                    .Name("bridge_worker_reply_ends_total")
                    .Help("Agent replies by the evidence that ended them (PROTOCOLS.md B4)")
                    .Register(r);
  sessions = &prometheus::BuildGauge()
                  .Name("bridge_worker_sessions")
                  .Help("Sessions held by this worker")
                  .Register(r)
                  .Add({});
  turns_active = &prometheus::BuildGauge()
                      .Name("bridge_worker_turns_active")
                      .Help("Turns running now")
                      .Register(r)
                      .Add({});
  agent_connects = &prometheus::BuildCounter()
                        .Name("bridge_worker_agent_connects_total")
                        .Help("ElevenLabs conversations opened")
                        .Register(r)
                        .Add({});
  // Every class at 0 from the start, so that a dashboard shows the rate.
  for (const char* c : {"agent", "decode", "transcribe", "send_retried", "maybe_sent",
                        "voice_fallback_text"}) {
    Error(c);
  }
}

prometheus::Histogram& WorkerMetrics::Stage(const std::string& stage) {
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return stages->Add({{"stage", stage}}, kBuckets);
}

prometheus::Counter& WorkerMetrics::Turn(const std::string& type, const std::string& outcome) {
  return turns->Add({{"type", type}, {"outcome", outcome}});
}

prometheus::Counter& WorkerMetrics::Error(const std::string& error_class) {
  return errors->Add({{"class", error_class}});
}

prometheus::Counter& WorkerMetrics::ReplyEnd(const std::string& reason) {
  return reply_ends->Add({{"reason", reason}});
}

}  // namespace bridge::media_worker
