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
  prometheus::Counter* messages_too_old;  // older than --max_message_age
  prometheus::Counter* messages_applied;  // reactions, edits, revokes, number changes
  prometheus::Counter* failures_unmatched;  // `failed` statuses for no wamid we know
  // What a non-turn message did: reaction_inform, edit_replaced, edit_inform,
  // revoke_dropped, revoke_inform, number_changed, resend_as_text.
  prometheus::Family<prometheus::Counter>* actions;  // {action}
  prometheus::Family<prometheus::Counter>* delivery_failures;  // {code}
  // {outcome}: see controller_metrics.cc
  prometheus::Family<prometheus::Counter>* calls;
  prometheus::Histogram* ingest_commit_seconds;
  prometheus::Histogram* queue_wait_seconds;
  prometheus::Family<prometheus::Counter>* turns;  // {outcome}
  prometheus::Counter* turns_done;
  prometheus::Counter* turns_failed;
  prometheus::Counter* turns_retried;
  prometheus::Counter* turns_window_closed;  // completed without sending (131047)
  prometheus::Counter* turns_given_up;  // out of attempts: became the apology
  prometheus::Counter* turns_unanswered;  // even the apology could not be sent
  prometheus::Counter* turns_reclaimed;  // found running on a re-attaching worker
  prometheus::Counter* ingest_refused;  // over --max_pending_turns
  prometheus::Gauge* sessions_active;
  prometheus::Gauge* turns_pending;
  prometheus::Gauge* workers_serving;
  prometheus::Counter* workers_dead;
  prometheus::Counter* workers_left;  // said goodbye (drain, SIGTERM): not lost
  prometheus::Counter* turns_coalesced;
  prometheus::Counter* handoffs;
  prometheus::Counter* takeovers;
  prometheus::Counter* operator_messages;
  prometheus::Counter* handbacks;
  prometheus::Gauge* sessions_waiting_for_person;
  prometheus::Counter* transcript_entries;
  prometheus::Counter* erasures;
};

}  // namespace bridge::controller
