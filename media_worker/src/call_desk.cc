#include "call_desk.h"

#include <netdb.h>

#include <thread>
#include <sys/socket.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "call_refusal.h"
#include "common/log.h"

namespace bridge::media_worker {

// Graph calls and agent starts block (with their retries) for seconds at
// worst; calls are answered in parallel up to this many at once.
constexpr int kBlockingThreads = 8;

absl::Status ResolveStunServer(const std::string& spec, MediaNetwork* net) {
  if (spec.empty()) return absl::OkStatus();
  absl::string_view rest = spec;
  absl::ConsumePrefix(&rest, "stun:");
  std::string host(rest);
  int port = 3478;
  if (const size_t colon = rest.rfind(':'); colon != absl::string_view::npos) {
    host = std::string(rest.substr(0, colon));
    if (!absl::SimpleAtoi(rest.substr(colon + 1), &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("STUN_SERVER (--stun_server) has a bad port: ", spec));
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("STUN_SERVER (--stun_server) does not resolve to an IPv4 address: ", spec));
  }
  char ip[NI_MAXHOST];
  getnameinfo(found->ai_addr, found->ai_addrlen, ip, sizeof ip, nullptr, 0, NI_NUMERICHOST);
  freeaddrinfo(found);
  net->stun_ip = ip;
  net->stun_port = port;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CallDesk>> CallDesk::Create(
    CallSettings settings, GraphApi* graph, ws::ClientPool* ws_pool,
    std::function<void(v1::WorkerMessage)> report) {
  std::unique_ptr<CallDesk> desk(new CallDesk());
  auto identity = DtlsIdentity::Generate();
  if (!identity.ok()) return identity.status();
  const int loops = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 0; i < loops; ++i) {
    desk->loops_.push_back(std::make_unique<MediaLoop>(absl::StrCat("media-", i)));
  }
  desk->blocking_ = std::make_unique<ThreadPool>(kBlockingThreads);
  CallEnv& env = desk->env_;
  env.settings = std::move(settings);
  env.identity = *std::move(identity);
  env.graph = graph;
  env.ws_pool = ws_pool;
  env.blocking = desk->blocking_.get();
  env.metrics = &desk->metrics_;
  env.report = std::move(report);
  CallDesk* raw = desk.get();
  env.on_done = [raw](const std::string& call_id) { raw->Done(call_id); };
  return desk;
}

CallDesk::~CallDesk() { Shutdown(absl::Seconds(5)); }

void CallDesk::Offer(const v1::CallOffer& offer) {
  const CallSettings& s = env_.settings;
  if (!offer.refuse_reason().empty()) return Refuse(offer, offer.refuse_reason());
  if (!s.enabled) return Refuse(offer, "calls are off on this worker (--calls=off)");
  absl::StatusOr<SdpOffer> sdp = ParseSdpOffer(offer.sdp());
  if (!sdp.ok()) return Refuse(offer, std::string(sdp.status().message()));
  absl::MutexLock lock(&mu_);
  if (draining_) return Refuse(offer, "the worker is draining or stopping");
  if (static_cast<int>(calls_.size()) >= s.max_calls) {
    return Refuse(offer, absl::StrCat("no capacity: ", calls_.size(),
                                      " calls live on this worker (--max_calls)"));
  }
  if (calls_.count(offer.call_id()) > 0) return;  // offered twice: answering already
  MediaLoop* loop = loops_[next_loop_++ % loops_.size()].get();
  calls_[offer.call_id()] = CallSession::Answer(&env_, loop, offer, *std::move(sdp));
  LogInfo("call offered", {{"call_id", offer.call_id()}, {"live", static_cast<int64_t>(calls_.size())}});
}

void CallDesk::Refuse(const v1::CallOffer& offer, std::string reason) {
  env_.metrics->Ended("rejected").Increment();
  blocking_->Submit([this, offer, reason = std::move(reason)] {
    v1::WorkerMessage out;
    *out.mutable_call_report() = RefuseCall(*env_.graph, offer, reason);
    env_.report(std::move(out));
  });
}

void CallDesk::End(const v1::CallEnd& end) {
  std::shared_ptr<CallSession> call;
  {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(end.call_id());
    if (it != calls_.end()) call = it->second;
  }
  if (call) {
    call->End(end.reason(), end.terminate());
    return;
  }
  if (!end.terminate()) return;  // already over here
  // A call whose worker died: terminate it for the controller.
  blocking_->Submit([this, end] {
    absl::Status s = env_.graph->ActOnCall(end.phone_number_id(), end.call_id(),
                                           CallAction::kTerminate, "");
    LogInfo("call terminated for the controller",
            {{"call_id", end.call_id()}, {"reason", end.reason()},
             {"result", s.ok() ? std::string("ok") : std::string(s.message())}});
  });
}

void CallDesk::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

int CallDesk::active() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(calls_.size());
}

void CallDesk::Done(const std::string& call_id) {
  absl::MutexLock lock(&mu_);
  calls_.erase(call_id);
}

void CallDesk::Shutdown(absl::Duration timeout) {
  std::map<std::string, std::shared_ptr<CallSession>> calls;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    calls = calls_;
  }
  for (auto& [id, call] : calls) call->End("the worker is stopping", /*terminate=*/true);
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_.empty(); };
  mu_.AwaitWithTimeout(absl::Condition(&none), timeout);
}

}  // namespace bridge::media_worker
