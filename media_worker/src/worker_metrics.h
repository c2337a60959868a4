// The worker's Prometheus metrics: per-stage latency of every turn, turn
// outcomes by message type, error classes, and live sessions.
#pragma once

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace bridge::media_worker {

struct WorkerMetrics {
  WorkerMetrics();
  // Stages: download, decode, first_audio_to_agent, first_agent_audio,
  // reply_complete, encode, upload, send, end_to_end.
  prometheus::Histogram& Stage(const std::string& stage);
  prometheus::Counter& Turn(const std::string& type, const std::string& outcome);
  prometheus::Counter& Error(const std::string& error_class);
  // Why agent replies ended (ReplyEndName): closed, end_call, aligned, marker, quiet_gap.
  prometheus::Counter& ReplyEnd(const std::string& reason);

  prometheus::Family<prometheus::Histogram>* stages;
  prometheus::Family<prometheus::Counter>* turns;
  prometheus::Family<prometheus::Counter>* errors;
  prometheus::Family<prometheus::Counter>* reply_ends;
  prometheus::Gauge* sessions;
  prometheus::Gauge* turns_active;
  prometheus::Counter* agent_connects;
};

}  // namespace bridge::media_worker
