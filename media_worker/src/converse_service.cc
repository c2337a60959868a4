#include "converse_service.h"

#include <openssl/rand.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace bridge::media_worker {
namespace {

constexpr char kSessionPrefix[] = "cv-";
// Blocking calls are signed-URL fetches (bounded by the connect timeout) and
// socket closes; a few threads keep one slow fetch from holding up the rest.
constexpr int kBlockingThreads = 8;

std::string NewSessionId() {
  unsigned char raw[12];
  RAND_bytes(raw, sizeof(raw));
  return absl::StrCat(kSessionPrefix,
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw),
                                                               sizeof(raw))));
}

int CodecThreads() {
  return std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
}

using Refused = RefusedReactor<grpc::ServerBidiReactor<v1::ConverseRequest, v1::ConverseResponse>>;

}  // namespace

ConverseService::ConverseService(ConverseSettings settings, ws::ClientPool* ws_pool,
                                 CallAuth auth)
    : auth_(std::move(auth)), codec_(CodecThreads()), blocking_(kBlockingThreads) {
  env_.settings = std::move(settings);
  env_.ws_pool = ws_pool;
  env_.metrics = &metrics_;
  env_.codec = &codec_;
  env_.blocking = &blocking_;
  env_.report = [this](v1::WorkerMessage m) { SendReport(std::move(m)); };
  env_.on_done = [this](const std::string& id) { Done(id); };
}

ConverseService::~ConverseService() {
  Shutdown();
  WaitForStreams();
}

void ConverseService::SetReporter(Report report) {
  absl::MutexLock lock(&mu_);
  report_ = std::move(report);
}

void ConverseService::SendReport(v1::WorkerMessage m) {
  Report report;
  {
    absl::MutexLock lock(&mu_);
    report = report_;
  }
  if (report) report(std::move(m));
}

grpc::ServerBidiReactor<v1::ConverseRequest, v1::ConverseResponse>* ConverseService::Converse(
    grpc::CallbackServerContext* ctx) {
  if (grpc::Status refused = auth_.Check(ctx); !refused.ok()) return new Refused(refused);
  absl::MutexLock lock(&mu_);
  if (grpc::Status refused = Admit(); !refused.ok()) {
    metrics_.Ended(refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED
                       ? "refused_full"
                       : "refused_unavailable")
        .Increment();
    return new Refused(std::move(refused));
  }
  const std::string id = NewSessionId();
  std::shared_ptr<ConverseReactor> stream = ConverseReactor::Open(&env_, ctx, id);
  streams_[id] = stream;
  return stream.get();  // it owns itself until OnDone
}

grpc::Status ConverseService::Admit() {
  if (stopping_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is stopping");
  if (draining_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is draining");
  if (capacity_ == 0) return grpc::Status::OK;
  const int open = static_cast<int>(streams_.size());
  const int held = held_ ? held_() : 0;
  if (open >= max_streams_ || open + held >= capacity_) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("the worker is full: ", open, " streams and ", held,
                                     " WhatsApp sessions (capacity ", capacity_,
                                     ", at most ", max_streams_, " streams)"));
  }
  return grpc::Status::OK;
}

void ConverseService::SetCapacity(int capacity, int max_streams, std::function<int()> held) {
  absl::MutexLock lock(&mu_);
  capacity_ = capacity;
  max_streams_ = max_streams;
  held_ = std::move(held);
}

void ConverseService::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool ConverseService::IsConverseSession(const std::string& session_id) {
  return absl::StartsWith(session_id, kSessionPrefix);
}

void ConverseService::EndSession(const std::string& session_id, const std::string& reason) {
  std::shared_ptr<ConverseReactor> stream;
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(session_id);
    if (it != streams_.end()) stream = it->second.lock();
  }
  if (!stream) return;  // already gone (it ended and reported so)
  stream->Abort(grpc::Status(grpc::StatusCode::ABORTED,
                             absl::StrCat("the session was ended: ", reason)),
                absl::StrCat("ended by the controller: ", reason));
}

std::vector<std::shared_ptr<ConverseReactor>> ConverseService::Open() {
  std::vector<std::shared_ptr<ConverseReactor>> open;
  absl::MutexLock lock(&mu_);
  for (auto& [id, weak] : streams_) {
    if (auto s = weak.lock()) open.push_back(std::move(s));
  }
  return open;
}

void ConverseService::Reannounce() {
  for (auto& s : Open()) s->Reannounce();
}

void ConverseService::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& s : Open()) {
    s->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker is stopping"),
             "worker stopping");
  }
}

void ConverseService::WaitForStreams() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  mu_.Await(absl::Condition(&idle));
}

void ConverseService::Done(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  streams_.erase(session_id);
}

}  // namespace bridge::media_worker
