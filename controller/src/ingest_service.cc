#include "services.h"

namespace bridge::controller {
namespace {

class IngestService final : public v1::Ingest::CallbackService {
 public:
  IngestService(Coordinator* c, Admission auth) : coordinator_(c), auth_(std::move(auth)) {}

  // Answers only once every message of the batch is durable (or a known
  // duplicate): the gateway acks WhatsApp on this answer.
  grpc::ServerUnaryReactor* Deliver(grpc::CallbackServerContext* ctx,
                                    const v1::DeliverRequest* request,
                                    v1::DeliverResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) {
      reactor->Finish(refused);
      return reactor;
    }
    coordinator_->Ingest(*request, [reactor, response](absl::StatusOr<v1::DeliverResponse> r) {
      if (!r.ok()) {
        reactor->Finish(grpc::Status(absl::IsResourceExhausted(r.status())
                                         ? grpc::StatusCode::RESOURCE_EXHAUSTED
                                         : grpc::StatusCode::UNAVAILABLE,
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
  const Admission auth_;
};

}  // namespace

std::unique_ptr<v1::Ingest::CallbackService> NewIngestService(Coordinator* coordinator,
                                                              Admission auth) {
  return std::make_unique<IngestService>(coordinator, std::move(auth));
}

}  // namespace bridge::controller
