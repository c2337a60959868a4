#include "gateway_metrics.h"

#include "common/metrics.h"

namespace bridge::gateway {

GatewayMetrics::GatewayMetrics() {
  auto& r = *MetricsRegistry();
  webhooks = &prometheus::BuildCounter()
                  .Name("bridge_gateway_webhooks_total")
                  .Help("Webhook POSTs by outcome")
                  .Register(r);
  acked = &webhooks->Add({{"outcome", "acked"}});
  bad_signature = &webhooks->Add({{"outcome", "bad_signature"}});
  missing_signature = &webhooks->Add({{"outcome", "missing_signature"}});
  malformed = &webhooks->Add({{"outcome", "malformed"}});
  too_large = &webhooks->Add({{"outcome", "too_large"}});
  unavailable = &webhooks->Add({{"outcome", "controller_unavailable"}});
  not_configured = &webhooks->Add({{"outcome", "secret_not_configured"}});
  events = &prometheus::BuildCounter()
                .Name("bridge_gateway_webhook_events_total")
                .Help("Events in acknowledged webhooks, by kind")
                .Register(r);
  messages = &events->Add({{"kind", "message"}});
  statuses = &events->Add({{"kind", "status"}});
  others = &events->Add({{"kind", "other"}});
  calls = &events->Add({{"kind", "call"}});
  malformed_parts = &events->Add({{"kind", "malformed"}});
  ack_seconds = &prometheus::BuildHistogram()
                     .Name("bridge_webhook_ack_seconds")
                     .Help("From receiving a webhook POST to answering it")
                     .Register(r)
                     .Add({}, prometheus::Histogram::BucketBoundaries{
                                  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                  0.5, 1, 2.5, 5});
}

}  // namespace bridge::gateway
