// The controller's gRPC services (callback API), thin adapters over the
// Coordinator: bridge.v1.Ingest, bridge.v1.WorkerLink and bridge.v1.Sessions.
#pragma once

#include <memory>

#include "bridge/v1/ingest.grpc.pb.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "bridge/v1/worker_link.grpc.pb.h"
#include "common/call_auth.h"
#include "coordinator.h"

namespace bridge::controller {

// Each checks its callers first (common/call_auth.h): Ingest and WorkerLink
// with the cluster token, Sessions with the operator token.
std::unique_ptr<v1::Ingest::CallbackService> NewIngestService(Coordinator* coordinator,
                                                              CallAuth auth);
std::unique_ptr<v1::WorkerLink::CallbackService> NewWorkerLinkService(Coordinator* coordinator,
                                                                      CallAuth auth);
std::unique_ptr<v1::Sessions::CallbackService> NewSessionsService(Coordinator* coordinator,
                                                                  CallAuth auth);

}  // namespace bridge::controller
