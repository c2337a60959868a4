// Calls load client (issue #15): N WhatsApp calls at once through
// whatsapp-sim to one worker, each caller on the product's media library
// playing Meta's side (tests/support/sim_caller.h), all of them on one media
// thread per core here. Each caller says a 440 Hz second then two silent seconds,
// over and over, for --duration; then hangs up. Prints one summary line:
//   CALLS n=N ok=K failed=F setup_p50_ms=.. setup_p99_ms=..
//         received=.. lost=.. raw_codec_us_per_call_s=..
// (raw_codec_us_per_call_s: libopus alone encoding and decoding one second
// of call audio at the worker's settings, timed here: the floor any
// implementation pays, for the ratio in docs/benchmarks.md.)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "audio/opus_packet.h"
#include "sim_caller.h"

ABSL_FLAG(std::string, whatsapp_sim, "", "whatsapp-sim host:port");
ABSL_FLAG(int, calls, 10, "Concurrent calls");
ABSL_FLAG(std::vector<std::string>, caller_ips, {"127.0.0.1"},
          "Addresses the callers' media uses (the worker's --media_ips must reach them)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(20), "How long each call talks once connected");

namespace {

using bridge::testing::SimCaller;

std::vector<int16_t> Talk(absl::Duration d) {
  const size_t n = static_cast<size_t>(16000 * absl::ToDoubleSeconds(d));
  std::vector<int16_t> pcm(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (i % 48000 < 16000) {
      pcm[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * 440 * static_cast<double>(i) / 16000));
    }
  }
  return pcm;
}

// libopus encoding and decoding one second of 16 kHz call audio, as the
// worker's media does per call-second (20 ms frames, complexity 5, FEC).
double RawCodecMicrosPerCallSecond() {
  auto enc = bridge::audio::OpusPacketEncoder::Create(16000, 24000, 5);
  auto dec = bridge::audio::OpusPacketDecoder::Create(16000);
  if (!enc.ok() || !dec.ok() || !(*enc)->EnableFec(10).ok()) return -1;
  const std::vector<int16_t> talk = Talk(absl::Seconds(3));
  std::vector<uint8_t> packet;
  std::vector<int16_t> pcm;
  constexpr int kSeconds = 30;
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < kSeconds; ++s) {
    for (int f = 0; f < 50; ++f) {
      const size_t at = static_cast<size_t>((s % 3) * 16000 + f * 320);
      (void)(*enc)->Encode(absl::MakeConstSpan(talk.data() + at, 320), &packet);
      pcm.clear();
      (void)(*dec)->Decode(packet, &pcm);
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / kSeconds;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_calls);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  // As many media threads as the worker has (one per core): the callers
  // must not be the bottleneck they measure.
  std::vector<std::unique_ptr<bridge::media_worker::MediaLoop>> loops;
  for (unsigned i = 0; i < std::max(1u, std::thread::hardware_concurrency()); ++i) {
    loops.push_back(std::make_unique<bridge::media_worker::MediaLoop>(absl::StrCat("callers-", i)));
  }
  std::vector<std::unique_ptr<SimCaller>> callers;
  for (int i = 0; i < n; ++i) {
    callers.push_back(std::make_unique<SimCaller>(
        loops[static_cast<size_t>(i) % loops.size()].get(),
        bridge::testing::SimCallerOptions{absl::GetFlag(FLAGS_whatsapp_sim),
                                          absl::StrCat("1555900", 10000 + i), /*ice_lite=*/true,
                                          absl::GetFlag(FLAGS_caller_ips)}));
  }
  // Setup in parallel, as calls arrive; one thread per caller only here, in
  // the load client, for its blocking HTTP long polls.
  std::vector<double> setup_ms(static_cast<size_t>(n), -1);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        const absl::Time t0 = absl::Now();
        SimCaller& c = *callers[static_cast<size_t>(i)];
        absl::Status s = c.Call().status();
        if (s.ok()) s = c.AwaitAnswer(absl::Seconds(60));
        if (s.ok()) s = c.AwaitConnected(absl::Seconds(60));
        if (!s.ok()) {
          std::cerr << "call " << i << " failed: " << s << "\n";
          return;
        }
        setup_ms[static_cast<size_t>(i)] = absl::ToDoubleMilliseconds(absl::Now() - t0);
        c.Say(Talk(duration));
      });
    }
    for (auto& t : threads) t.join();
  }
  std::vector<double> ok_setup;
  for (double v : setup_ms) if (v >= 0) ok_setup.push_back(v);
  std::cerr << "call_load: " << ok_setup.size() << " of " << n << " calls connected; talking for "
            << absl::FormatDuration(duration) << "\n";
  absl::SleepFor(duration);  // the load itself: calls talking in real time
  uint64_t received = 0, lost = 0;
  for (auto& c : callers) {
    const auto st = c->Stats();
    received += st.in.received;
    lost += st.in.lost;
    (void)c->Hangup();
  }
  std::cout << "CALLS n=" << n << " ok=" << ok_setup.size() << " failed=" << n - ok_setup.size()
            << " setup_p50_ms=" << Percentile(ok_setup, 0.5)
            << " setup_p99_ms=" << Percentile(ok_setup, 0.99) << " received=" << received
            << " lost=" << lost << " raw_codec_us_per_call_s=" << RawCodecMicrosPerCallSecond()
            << std::endl;
  return ok_setup.size() == static_cast<size_t>(n) ? 0 : 1;
}
