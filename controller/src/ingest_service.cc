#include "services.h"

namespace bridge::controller {
namespace {

class IngestService final : public v1::Ingest::CallbackService {
 public:
  explicit IngestService(Coordinator* c) : coordinator_(c) {}

  // Answers only once every message of the batch is durable (or a known
  // duplicate): the gateway acks WhatsApp on this answer.
  grpc::ServerUnaryReactor* Deliver(grpc::CallbackServerContext* ctx,
                                    const v1::DeliverRequest* request,
                                    v1::DeliverResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    coordinator_->Ingest(*request, [reactor, response](absl::StatusOr<v1::DeliverResponse> r) {
      if (!r.ok()) {
        reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     std::string(r.status().message())));
        return;
      }
      *response = *std::move(r);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

 private:
  Coordinator* coordinator_;
};

}  // namespace

std::unique_ptr<v1::Ingest::CallbackService> NewIngestService(Coordinator* coordinator) {
  return std::make_unique<IngestService>(coordinator);
}

}  // namespace bridge::controller
