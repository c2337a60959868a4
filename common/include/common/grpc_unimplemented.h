// Reactors that answer UNIMPLEMENTED with a message saying what is missing,
// for RPCs whose contract is fixed but whose behaviour lands later.
#pragma once

#include <string>

#include "grpcpp/grpcpp.h"

namespace bridge {

inline grpc::Status NotBuiltYet(const std::string& method) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      method + " is not implemented in this build yet");
}

inline grpc::ServerUnaryReactor* UnimplementedUnary(grpc::CallbackServerContext* ctx,
                                                    const std::string& method) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(NotBuiltYet(method));
  return reactor;
}

template <typename Req, typename Resp>
class UnimplementedBidiReactor : public grpc::ServerBidiReactor<Req, Resp> {
 public:
  explicit UnimplementedBidiReactor(const std::string& method) {
    this->Finish(NotBuiltYet(method));
  }
  void OnDone() override { delete this; }
};

template <typename Resp>
class UnimplementedWriteReactor : public grpc::ServerWriteReactor<Resp> {
 public:
  explicit UnimplementedWriteReactor(const std::string& method) {
    this->Finish(NotBuiltYet(method));
  }
  void OnDone() override { delete this; }
};

}  // namespace bridge
