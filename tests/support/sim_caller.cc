#include "sim_caller.h"

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {

using media_worker::CallMedia;
using nlohmann::json;

namespace {

// Runs `fn` on the loop and waits for it.
template <typename Fn>
void OnLoop(media_worker::MediaLoop* loop, Fn fn) {
  absl::Notification done;
  loop->Post([&] {
    loop->AssertInLoop();
    fn();
    done.Notify();
  });
  done.WaitForNotification();
}

}  // namespace

SimCaller::SimCaller(media_worker::MediaLoop* loop, SimCallerOptions options)
    : loop_(loop), options_(std::move(options)), identity_(*media_worker::DtlsIdentity::Generate()) {}

SimCaller::~SimCaller() {
  OnLoop(loop_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_worker::media_thread) {
    if (media_) media_->Close();
    media_.reset();
  });
}

absl::StatusOr<std::string> SimCaller::Call() {
  absl::StatusOr<std::string> offer = absl::UnknownError("not gathered");
  absl::Notification gathered;
  loop_->Post([&] {
    loop_->AssertInLoop();
    media_worker::CallMediaOptions o;
    o.network.local_ips = options_.local_ips;
    o.lite = options_.ice_lite;
    o.controlling = !options_.ice_lite;  // a full-ICE offerer controls
    o.dtls_role = media_worker::DtlsRole::kServer;  // actpass: the answerer connects
    media_worker::CallMediaEvents ev;
    ev.on_connected = [this] {
      absl::MutexLock l(&mu_);
      connected_ = true;
    };
    ev.on_failed = [this](const absl::Status& s) {
      absl::MutexLock l(&mu_);
      failed_ = s;
    };
    ev.on_audio = [this](absl::Span<const int16_t> pcm, absl::Duration) {
      size_t loud = 0;
      for (int16_t v : pcm) loud += (v >= 1000 || v <= -1000) ? 1 : 0;
      absl::MutexLock l(&mu_);
      loud_ += loud;
    };
    auto media = CallMedia::Create(loop_, identity_, o, std::move(ev));
    if (!media.ok()) {
      offer = media.status();
      gathered.Notify();
      return;
    }
    media_ = *media;
    media_->Gather([&](absl::StatusOr<media_worker::LocalDescription> l) {
      if (l.ok()) {
        media_worker::SdpAnswerParams p{l->ice_ufrag, l->ice_pwd, l->candidates,
                                        l->fingerprint_sha256};
        offer = media_worker::BuildSdpOffer(p, options_.ice_lite);
      } else {
        offer = l.status();
      }
      gathered.Notify();
    });
  });
  gathered.WaitForNotification();
  if (!offer.ok()) return offer.status();
  httplib::Client cli(absl::StrCat("http://", options_.whatsapp_sim));
  auto r = cli.Post(absl::StrCat("/sim/users/", options_.user, "/call?name=Caller").c_str(), *offer,
                    "application/sdp");
  if (!r || r->status != 200) {
    return absl::UnavailableError(absl::StrCat("whatsapp-sim refused the call: ", r ? r->body : "no answer"));
  }
  call_id_ = json::parse(r->body).value("call_id", "");
  return call_id_;
}

absl::Status SimCaller::AwaitAnswer(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  httplib::Client cli(absl::StrCat("http://", options_.whatsapp_sim));
  cli.set_read_timeout(absl::ToInt64Seconds(timeout) + 5);
  int seen = 0;
  while (absl::Now() < deadline) {
    const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    auto r = cli.Get(absl::StrCat("/sim/calls?min_count=", seen + 1, "&wait_ms=", wait_ms).c_str());
    if (!r || r->status != 200) return absl::UnavailableError("whatsapp-sim /sim/calls failed");
    const json all = json::parse(r->body);
    for (size_t i = static_cast<size_t>(seen); i < all.size(); ++i) {
      const json& a = all[i];
      if (a.value("call_id", "") != call_id_) continue;
      const std::string action = a.value("action", "");
      if (action != "pre_accept" && action != "accept") {
        return absl::FailedPreconditionError(absl::StrCat("the business answered with ", action));
      }
      absl::StatusOr<media_worker::SdpOffer> answer = media_worker::ParseSdpOffer(a.value("sdp", ""));
      if (!answer.ok()) return answer.status();
      absl::Status s;
      OnLoop(loop_, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_worker::media_thread) { s = media_->Connect(*answer); });
      return s;
    }
    seen = static_cast<int>(all.size());
  }
  return absl::DeadlineExceededError("no answer from the business");
}

absl::Status SimCaller::AwaitConnected(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return connected_ || !failed_.ok(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError("the call's media did not connect");
  }
  return failed_;
}

void SimCaller::Say(std::vector<int16_t> pcm) {
  loop_->Post([this, pcm = std::move(pcm)] {
    loop_->AssertInLoop();
    if (media_) media_->Play(pcm);
  });
}

bool SimCaller::AwaitHeard(size_t loud_samples, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return loud_ >= loud_samples; };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

std::vector<std::string> SimCaller::actions() {
  httplib::Client cli(absl::StrCat("http://", options_.whatsapp_sim));
  std::vector<std::string> out;
  auto r = cli.Get("/sim/calls");
  if (!r || r->status != 200) return out;
  for (const json& a : json::parse(r->body)) {
    if (a.value("call_id", "") == call_id_) out.push_back(a.value("action", ""));
  }
  return out;
}

absl::Status SimCaller::Hangup() {
  httplib::Client cli(absl::StrCat("http://", options_.whatsapp_sim));
  auto r = cli.Post(absl::StrCat("/sim/users/", options_.user, "/hangup?call_id=", call_id_).c_str(),
                    "", "text/plain");
  if (!r || r->status != 200) return absl::UnavailableError("whatsapp-sim refused the hang-up");
  return absl::OkStatus();
}

media_worker::CallMediaStats SimCaller::Stats() {
  media_worker::CallMediaStats s;
  OnLoop(loop_, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_worker::media_thread) {
    if (media_) s = media_->stats();
  });
  return s;
}

}  // namespace bridge::testing
