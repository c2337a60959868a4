// The gateway's Prometheus metrics: every webhook POST ends in exactly one
// outcome, and the time from receipt to answer is the webhook→ack latency
// Meta measures us by.
#pragma once

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"

namespace bridge::gateway {

struct GatewayMetrics {
  GatewayMetrics();
  prometheus::Family<prometheus::Counter>* webhooks;  // {outcome}
  prometheus::Counter* acked;
  prometheus::Counter* bad_signature;
  prometheus::Counter* missing_signature;
  prometheus::Counter* malformed;
  prometheus::Counter* too_large;
  prometheus::Counter* unavailable;
  prometheus::Counter* not_configured;
  prometheus::Family<prometheus::Counter>* events;  // {kind}
  prometheus::Counter* messages;
  prometheus::Counter* statuses;
  prometheus::Counter* others;
  prometheus::Counter* calls;  // `calls` webhook entries (connect, terminate)
  prometheus::Counter* malformed_parts;  // skipped entries, changes, messages, statuses
  prometheus::Histogram* ack_seconds;
};

}  // namespace bridge::gateway
