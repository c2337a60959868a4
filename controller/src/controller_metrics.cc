#include "controller_metrics.h"

#include "common/metrics.h"

namespace bridge::controller {
namespace {
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *b;
}
}  // namespace

ControllerMetrics::ControllerMetrics() {
  auto& r = *MetricsRegistry();
  ingest_events = &prometheus::BuildCounter()
                       .Name("bridge_controller_ingest_events_total")
                       .Help("Webhook events ingested, by kind and outcome")
                       .Register(r);
  messages_accepted = &ingest_events->Add({{"kind", "message"}, {"outcome", "queued"}});
  messages_duplicate = &ingest_events->Add({{"kind", "message"}, {"outcome", "duplicate"}});
  statuses = &ingest_events->Add({{"kind", "status"}, {"outcome", "recorded"}});
  other_events = &ingest_events->Add({{"kind", "other"}, {"outcome", "ignored"}});
  ingest_failures = &ingest_events->Add({{"kind", "batch"}, {"outcome", "store_error"}});
  messages_too_old = &ingest_events->Add({{"kind", "message"}, {"outcome", "too_old"}});
  messages_applied = &ingest_events->Add({{"kind", "message"}, {"outcome", "applied"}});
  failures_unmatched = &ingest_events->Add({{"kind", "status"}, {"outcome", "failed_unmatched"}});
  actions = &prometheus::BuildCounter()
                 .Name("bridge_controller_message_actions_total")
                 .Help("What reactions, edits, revokes, number changes and failed voice notes did")
                 .Register(r);
  delivery_failures = &prometheus::BuildCounter()
                           .Name("bridge_controller_delivery_failures_total")
                           .Help("`failed` statuses for messages the workers sent, by error code")
                           .Register(r);
  calls = &prometheus::BuildCounter()
               .Name("bridge_controller_calls_total")
               .Help("WhatsApp calls by outcome: offered to a worker, duplicate webhook, held "
                     "(no worker attached yet), no_worker (none attached in time: it rang out), "
                     "no_capacity (every worker full or draining: one rejects it), "
                     "rejected, reject failed, answered, failed (answering), "
                     "live_ended (a live call ended on its worker, whoever ended it), worker_lost, ended "
                     "(Meta's terminate webhook)")
               .Register(r);
  for (const char* o : {"offered", "duplicate", "held", "no_worker", "no_capacity", "rejected",
                        "reject_failed", "answered", "failed", "live_ended", "worker_lost", "ended"}) {
    calls->Add({{"outcome", o}});
  }
  // At 0 from the start: the window-closed alert's increase() sees the first.
  delivery_failures->Add({{"code", "131047"}});
  ingest_commit_seconds = &prometheus::BuildHistogram()
                               .Name("bridge_controller_ingest_commit_seconds")
                               .Help("Time to make one webhook batch durable")
                               .Register(r)
                               .Add({}, LatencyBuckets());
  queue_wait_seconds = &prometheus::BuildHistogram()
                            .Name("bridge_turn_queue_wait_seconds")
                            .Help("From a turn's arrival to its dispatch to a worker")
                            .Register(r)
                            .Add({}, LatencyBuckets());
  turns = &prometheus::BuildCounter()
               .Name("bridge_controller_turns_total")
               .Help("Turn results reported by workers, by outcome")
               .Register(r);
  turns_done = &turns->Add({{"outcome", "done"}});
  turns_failed = &turns->Add({{"outcome", "failed"}});
  turns_retried = &turns->Add({{"outcome", "retried"}});
  turns_window_closed = &turns->Add({{"outcome", "window_closed"}});
  turns_given_up = &turns->Add({{"outcome", "given_up"}});
  turns_unanswered = &turns->Add({{"outcome", "unanswered"}});
  turns_reclaimed = &turns->Add({{"outcome", "reclaimed"}});
  ingest_refused = &prometheus::BuildCounter()
                        .Name("bridge_controller_ingest_refused_total")
                        .Help("Deliver calls refused because --max_pending_turns were waiting")
                        .Register(r)
                        .Add({});
  sessions_active = &prometheus::BuildGauge()
                         .Name("bridge_controller_sessions")
                         .Help("Sessions not ended")
                         .Register(r)
                         .Add({});
  turns_pending = &prometheus::BuildGauge()
                       .Name("bridge_controller_turns_pending")
                       .Help("Turns queued or in flight")
                       .Register(r)
                       .Add({});
  workers_serving = &prometheus::BuildGauge()
                         .Name("bridge_controller_workers")
                         .Help("Workers attached and serving")
                         .Register(r)
                         .Add({});
  workers_dead = &prometheus::BuildCounter()
                      .Name("bridge_controller_workers_lost_total")
                      .Help("Workers declared dead (gone past --reattach_grace, or heartbeats missed)")
                      .Register(r)
                      .Add({});
  workers_left = &prometheus::BuildCounter()
                      .Name("bridge_controller_workers_left_total")
                      .Help("Workers that said goodbye (drained, stopped) and detached: not "
                            "counted as lost")
                      .Register(r)
                      .Add({});
  turns_coalesced = &prometheus::BuildCounter()
                         .Name("bridge_controller_messages_coalesced_total")
                         .Help("Messages answered together with an earlier one of the same burst")
                         .Register(r)
                         .Add({});
  auto& takeover = prometheus::BuildCounter()
                       .Name("bridge_controller_takeover_total")
                       .Help("Human takeover: handoffs the agent asked for, takeovers, "
                             "operator messages, hand-backs")
                       .Register(r);
  handoffs = &takeover.Add({{"event", "handoff_requested"}});
  takeovers = &takeover.Add({{"event", "taken_over"}});
  operator_messages = &takeover.Add({{"event", "operator_message"}});
  handbacks = &takeover.Add({{"event", "handed_back"}});
  sessions_waiting_for_person = &prometheus::BuildGauge()
                                     .Name("bridge_controller_sessions_waiting_for_person")
                                     .Help("Sessions whose agent asked for a person and that no "
                                           "operator has taken over yet")
                                     .Register(r)
                                     .Add({});
  transcript_entries = &prometheus::BuildCounter()
                            .Name("bridge_controller_transcript_entries_total")
                            .Help("Exchanges recorded in the transcript")
                            .Register(r)
                            .Add({});
  erasures = &prometheus::BuildCounter()
                  .Name("bridge_controller_erasures_total")
                  .Help("Users forgotten (Sessions.ForgetUser)")
                  .Register(r)
                  .Add({});
}

}  // namespace bridge::controller
