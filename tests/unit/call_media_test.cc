// Two CallMedia endpoints on one media loop place a call to each other over
// real UDP sockets on loopback: libnice ICE, an OpenSSL DTLS handshake,
// libsrtp2 both ways and Opus, each side playing a tone the other must hear.
// One side plays Meta (the offerer, ICE-lite, actpass) or a browser (full
// ICE, controlling), the other the worker answering.
#include "call_media.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace bridge::media_worker {
namespace {

std::vector<int16_t> Tone(double hz, int rate, absl::Duration d) {
  std::vector<int16_t> pcm(static_cast<size_t>(rate * absl::ToDoubleSeconds(d)));
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * hz * static_cast<double>(i) / rate));
  }
  return pcm;
}

// Frequency from zero crossings, over the loud part only.
double DominantHz(const std::vector<int16_t>& pcm, int rate) {
  int crossings = 0;
  size_t loud = 0;
  for (size_t i = 1; i < pcm.size(); ++i) {
    if (std::abs(pcm[i]) < 500 && std::abs(pcm[i - 1]) < 500) continue;
    ++loud;
    if ((pcm[i - 1] < 0) != (pcm[i] < 0)) ++crossings;
  }
  return loud == 0 ? 0 : crossings / 2.0 / (static_cast<double>(loud) / rate);
}

struct Side {
  absl::Mutex mu;
  std::vector<int16_t> heard ABSL_GUARDED_BY(mu);
  bool connected ABSL_GUARDED_BY(mu) = false;
  absl::Status failed ABSL_GUARDED_BY(mu);
  std::shared_ptr<CallMedia> media ABSL_GUARDED_BY(media_thread);

  CallMediaEvents Events() {
    CallMediaEvents ev;
    ev.on_connected = [this] {
      absl::MutexLock l(&mu);
      connected = true;
    };
    ev.on_failed = [this](const absl::Status& s) {
      absl::MutexLock l(&mu);
      failed = s;
    };
    ev.on_audio = [this](absl::Span<const int16_t> pcm, absl::Duration) {
      absl::MutexLock l(&mu);
      heard.insert(heard.end(), pcm.begin(), pcm.end());
    };
    return ev;
  }
  // Awaits `pred` (under mu) or a failure, for up to 30 s.
  bool Await(std::function<bool()> pred) {
    absl::MutexLock l(&mu);
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !failed.ok() || pred(); };
    mu.AwaitWithTimeout(absl::Condition(&cond), absl::Seconds(30));
    return failed.ok() && pred();
  }
  bool AwaitConnected() {
    return Await([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return connected; });
  }
  bool AwaitHeard(size_t samples) {
    return Await([this, samples]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return heard.size() >= samples; });
  }
};

struct Call {
  MediaLoop loop{"media-test"};
  std::shared_ptr<const DtlsIdentity> caller_id = *DtlsIdentity::Generate();
  std::shared_ptr<const DtlsIdentity> worker_id = *DtlsIdentity::Generate();
  Side caller, worker;

  ~Call() {
    absl::Notification done;
    loop.Post([&] {
      loop.AssertInLoop();
      if (caller.media) caller.media->Close();
      if (worker.media) worker.media->Close();
      caller.media.reset();
      worker.media.reset();
      done.Notify();
    });
    done.WaitForNotification();
  }

  // Offer, answer, connect: what whatsapp-sim and the worker do over Graph.
  absl::Status Place(bool caller_lite, bool tamper_fingerprint = false) {
    absl::Status result;
    absl::Notification done;
    loop.Post([&, caller_lite, tamper_fingerprint] {
      loop.AssertInLoop();
      CallMediaOptions co;
      co.network.local_ips = {"127.0.0.1"};
      co.lite = caller_lite;
      co.controlling = !caller_lite;  // a full-ICE offerer controls
      co.dtls_role = DtlsRole::kServer;
      auto c = CallMedia::Create(&loop, caller_id, co, caller.Events());
      if (!c.ok()) { result = c.status(); done.Notify(); return; }
      caller.media = *c;
      caller.media->Gather([&, caller_lite, tamper_fingerprint](absl::StatusOr<LocalDescription> l)
                               ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread) {
        if (!l.ok()) { result = l.status(); done.Notify(); return; }
        SdpAnswerParams p{l->ice_ufrag, l->ice_pwd, l->candidates, l->fingerprint_sha256};
        if (tamper_fingerprint) p.fingerprint_sha256[0] = p.fingerprint_sha256[0] == 'A' ? 'B' : 'A';
        absl::StatusOr<SdpOffer> offer = ParseSdpOffer(BuildSdpOffer(p, caller_lite));
        if (!offer.ok()) { result = offer.status(); done.Notify(); return; }
        CallMediaOptions wo;
        wo.network.local_ips = {"127.0.0.1"};
        wo.controlling = offer->ice_lite;
        wo.dtls_role = AnswerSetup(offer->setup) == DtlsSetup::kActive ? DtlsRole::kClient : DtlsRole::kServer;
        auto w = CallMedia::Create(&loop, worker_id, wo, worker.Events());
        if (!w.ok()) { result = w.status(); done.Notify(); return; }
        worker.media = *w;
        worker.media->Gather([&, offer = *offer](absl::StatusOr<LocalDescription> wl)
                                 ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread) {
          if (!wl.ok()) { result = wl.status(); done.Notify(); return; }
          SdpAnswerParams wp{wl->ice_ufrag, wl->ice_pwd, wl->candidates, wl->fingerprint_sha256};
          absl::StatusOr<SdpOffer> answer = ParseSdpOffer(BuildSdpAnswer(offer, wp));
          if (!answer.ok()) { result = answer.status(); done.Notify(); return; }
          result = worker.media->Connect(offer);
          if (result.ok()) result = caller.media->Connect(*answer);
          done.Notify();
        });
      });
    });
    done.WaitForNotification();
    return result;
  }

  void PlayTones() {
    loop.Post([this] {
      loop.AssertInLoop();
      caller.media->Play(Tone(440, 16000, absl::Seconds(1)));
      worker.media->Play(Tone(1000, 16000, absl::Seconds(1)));
    });
  }
};

void ExpectAudioFlowsBothWays(Call& call) {
  ASSERT_TRUE(call.worker.AwaitConnected());
  ASSERT_TRUE(call.caller.AwaitConnected());
  call.PlayTones();
  // Silence flows from the first tick; the tones follow: 1.5 s of audio
  // holds all of each.
  ASSERT_TRUE(call.worker.AwaitHeard(24000));
  ASSERT_TRUE(call.caller.AwaitHeard(24000));
  absl::MutexLock a(&call.worker.mu), b(&call.caller.mu);
  EXPECT_NEAR(DominantHz(call.worker.heard, 16000), 440, 20);
  EXPECT_NEAR(DominantHz(call.caller.heard, 16000), 1000, 40);
}

TEST(CallMediaTest, AnsweringAnIceLiteOffererLikeMetaCarriesAudioBothWays) {
  Call call;
  ASSERT_TRUE(call.Place(/*caller_lite=*/true).ok());
  ExpectAudioFlowsBothWays(call);
  absl::Notification got;
  CallMediaStats stats;
  call.loop.Post([&] {
    call.loop.AssertInLoop();
    stats = call.worker.media->stats();
    got.Notify();
  });
  got.WaitForNotification();
  EXPECT_GE(stats.in.received, 70u);
  EXPECT_EQ(stats.undecryptable, 0u);
  EXPECT_NE(stats.selected_pair.find("127.0.0.1"), std::string::npos) << stats.selected_pair;
}

TEST(CallMediaTest, AnsweringAFullIceOffererLikeABrowserCarriesAudioBothWays) {
  Call call;
  ASSERT_TRUE(call.Place(/*caller_lite=*/false).ok());
  ExpectAudioFlowsBothWays(call);
}

TEST(CallMediaTest, ACertificateThatDoesNotMatchTheFingerprintEndsTheCall) {
  Call call;
  ASSERT_TRUE(call.Place(/*caller_lite=*/true, /*tamper_fingerprint=*/true).ok());
  absl::MutexLock l(&call.worker.mu);
  call.worker.mu.AwaitWithTimeout(absl::Condition(
      +[](absl::Status* s) { return !s->ok(); }, &call.worker.failed), absl::Seconds(30));
  EXPECT_TRUE(absl::IsPermissionDenied(call.worker.failed)) << call.worker.failed;
  EXPECT_FALSE(call.worker.connected);
}

// A caller that vanishes without a terminate (its phone lost the network):
// the worker's consent checks (RFC 7675) go unanswered and its media fails
// with that reason, so the call ends instead of playing to nobody. libnice
// gives up after about 30 s without a response.
TEST(CallMediaTest, ACallerThatStopsAnsweringLosesConsentAndTheCallFails) {
  Call call;
  ASSERT_TRUE(call.Place(/*caller_lite=*/true).ok());
  ASSERT_TRUE(call.worker.AwaitConnected());
  absl::Notification gone;
  call.loop.Post([&] {
    call.loop.AssertInLoop();
    call.caller.media->Close();  // silently: no packet says goodbye
    call.caller.media.reset();
    gone.Notify();
  });
  gone.WaitForNotification();
  absl::MutexLock l(&call.worker.mu);
  call.worker.mu.AwaitWithTimeout(absl::Condition(
      +[](absl::Status* s) { return !s->ok(); }, &call.worker.failed), absl::Seconds(90));
  EXPECT_TRUE(absl::IsUnavailable(call.worker.failed)) << call.worker.failed;
  EXPECT_NE(call.worker.failed.message().find("consent"), std::string::npos) << call.worker.failed;
}

// --media_port_range bounds the ports, --media_public_ip is what the
// candidates announce (a 1:1 NAT maps it to the host address).
TEST(CallMediaTest, CandidatesUseThePortRangeAndAnnounceThePublicAddress) {
  MediaLoop loop("media-test");
  absl::StatusOr<LocalDescription> local = absl::UnknownError("not gathered");
  std::shared_ptr<CallMedia> media;
  absl::Notification done;
  loop.Post([&] {
    loop.AssertInLoop();
    CallMediaOptions o;
    o.network.local_ips = {"127.0.0.1"};
    o.network.port_min = 47100;
    o.network.port_max = 47199;
    o.network.public_ip = "203.0.113.7";
    auto m = CallMedia::Create(&loop, *DtlsIdentity::Generate(), o, {});
    if (!m.ok()) {
      local = m.status();
      done.Notify();
      return;
    }
    media = *m;
    media->Gather([&](absl::StatusOr<LocalDescription> l) {
      local = std::move(l);
      done.Notify();
    });
  });
  done.WaitForNotification();
  ASSERT_TRUE(local.ok()) << local.status();
  ASSERT_EQ(local->candidates.size(), 1u);
  const std::string& c = local->candidates[0];
  EXPECT_NE(c.find(" 203.0.113.7 "), std::string::npos) << c;
  EXPECT_EQ(c.find("127.0.0.1"), std::string::npos) << c;
  int port = 0;
  for (int p = 47100; p <= 47199; ++p) {
    if (c.find(absl::StrCat(" ", p, " typ host")) != std::string::npos) port = p;
  }
  EXPECT_NE(port, 0) << "a port in 47100-47199: " << c;
  absl::Notification closed;
  loop.Post([&] {
    loop.AssertInLoop();
    media->Close();
    media.reset();
    closed.Notify();
  });
  closed.WaitForNotification();
}

}  // namespace
}  // namespace bridge::media_worker
