#include "call_metrics.h"

#include "common/metrics.h"

namespace bridge::media_worker {
namespace {

prometheus::Histogram* Histogram(const char* name, const char* help,
                                 prometheus::Histogram::BucketBoundaries buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(*MetricsRegistry()).Add(
      {}, std::move(buckets));
}

prometheus::Counter* Counter(const char* name, const char* help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(*MetricsRegistry()).Add({});
}

}  // namespace

CallMetrics::CallMetrics() {
  auto& r = *MetricsRegistry();
  active = &prometheus::BuildGauge()
                .Name("bridge_worker_calls_active")
                .Help("WhatsApp calls live on this worker")
                .Register(r)
                .Add({});
  setup_seconds = Histogram("bridge_worker_call_setup_seconds",
                            "Call setup: the offer received to DTLS-SRTP up (audio can flow)",
                            {0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20});
  // The bar is 20 ms p99 per direction: buckets resolve around it.
  const prometheus::Histogram::BucketBoundaries added = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                         0.015, 0.02, 0.03, 0.05, 0.1, 0.25};
  to_agent_seconds = Histogram("bridge_worker_call_to_agent_seconds",
                               "Bridge-added latency per caller frame: RTP arrival to sent to "
                               "the agent (reordering waits included)",
                               added);
  to_caller_seconds = Histogram("bridge_worker_call_to_caller_seconds",
                                "Bridge-added latency per agent frame: beyond real-time pacing, "
                                "agent audio arrival to its RTP packet sent",
                                added);
  jitter_seconds = Histogram("bridge_worker_call_jitter_seconds",
                             "Interarrival jitter of the caller's RTP (RFC 3550) at each call's end",
                             {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16});
  packets_received = Counter("bridge_worker_call_packets_received_total",
                             "Caller RTP packets received");
  packets_lost = Counter("bridge_worker_call_packets_lost_total",
                         "Caller RTP packets that never arrived in time (rebuilt or concealed)");
  packets_recovered = Counter("bridge_worker_call_packets_recovered_total",
                              "Lost caller packets rebuilt from the next packet's in-band FEC");
  barge_ins = Counter("bridge_worker_call_barge_ins_total",
                      "Times the caller's speech cut off the agent's queued audio");
  ended_ = &prometheus::BuildCounter()
                .Name("bridge_worker_calls_total")
                .Help("Calls offered to this worker, by outcome (answered, rejected, failed, "
                      "ended)")
                .Register(r);
  for (const char* o : {"answered", "rejected", "failed", "ended"}) Ended(o);
}

prometheus::Counter& CallMetrics::Ended(const char* outcome) {
  return ended_->Add({{"outcome", outcome}});
}

}  // namespace bridge::media_worker
