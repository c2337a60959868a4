// The controller's gRPC services (callback API), thin adapters over the
// Coordinator: bridge.v1.Ingest, bridge.v1.WorkerLink and bridge.v1.Sessions.
#pragma once

#include <memory>

#include "bridge/v1/ingest.grpc.pb.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "bridge/v1/worker_link.grpc.pb.h"
#include "common/call_auth.h"
#include "serving_gate.h"
#include "coordinator.h"

namespace bridge::controller {

// Each admits its callers first (serving_gate.h): Ingest and WorkerLink
// with the cluster token, Sessions with the operator token, and all three
// only on the leader.
std::unique_ptr<v1::Ingest::CallbackService> NewIngestService(Coordinator* coordinator,
                                                              Admission auth);
std::unique_ptr<v1::WorkerLink::CallbackService> NewWorkerLinkService(Coordinator* coordinator,
                                                                      Admission auth);
class ConversationEraser;
// Sessions.ForgetUser deletes conversations through `eraser` (null: none
// configured, they are reported as not deleted).
std::unique_ptr<v1::Sessions::CallbackService> NewSessionsService(Coordinator* coordinator,
                                                                  Admission auth,
                                                                  ConversationEraser* eraser);

}  // namespace bridge::controller
