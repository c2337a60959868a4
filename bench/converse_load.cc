// Load client for bridge.v1.Media/Converse (issue #6): N concurrent streams
// to one worker, all on gRPC's callback API (one ClientBidiReactor per
// stream, no thread per stream) and one shared timer thread that paces every
// stream's input at real time.
//
// Each stream: start{PCM_16000 in, PCM_16000 out}, the 440 Hz tone fixture
// decoded at 16 kHz in 100 ms messages at real-time pace, end_of_input, then
// it reads every response until the worker finishes the stream. Stream
// starts are staggered evenly over --stagger.
//
// Prints one machine-readable line on stdout:
//   CONVERSE streams=N ok=.. failed=.. responses=.. audio_responses=..
//            audio_bytes=.. audio_seconds=.. error_responses=.. started=..
//            wall_s=..
// and the first few failure statuses on stderr.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <queue>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "audio/ogg_opus_decoder.h"
#include "bridge/v1/media.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, worker, "127.0.0.1:7100", "Worker gRPC address");
ABSL_FLAG(int, streams, 50, "Concurrent Converse streams");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(120), "Give up (cancel what is left) after this");
ABSL_FLAG(absl::Duration, stagger, absl::Seconds(2), "Spread stream starts over this long");
ABSL_FLAG(int, channels, 8, "gRPC channels (HTTP/2 connections) the streams are spread over");
ABSL_FLAG(std::string, fixture,
          std::string(BRIDGE_FIXTURES_DIR) + "/audio/voice_note_tone_440hz.ogg",
          "Ogg/Opus note every stream sends");
ABSL_FLAG(std::string, phone_number_id, "106540352242922", "ConverseStart.phone_number_id");

namespace {

namespace v1 = ::bridge::v1;
using Clock = std::chrono::steady_clock;

constexpr int kRate = 16000;
constexpr int kChunkSamples = kRate / 10;  // 100 ms
constexpr auto kChunkPeriod = std::chrono::milliseconds(100);

struct Totals {
  std::atomic<int64_t> responses{0}, audio_responses{0}, audio_bytes{0}, error_responses{0},
      started{0}, ok{0}, failed{0}, turn_ends{0}, interruptions{0};
};

// Counts streams still running; main waits on it.
class Remaining {
 public:
  explicit Remaining(int n) : n_(n) {}
  void Done() {
    absl::MutexLock lock(&mu_);
    --n_;
  }
  bool Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto zero = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return n_ == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&zero), timeout);
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_);
};

class Stream : public grpc::ClientBidiReactor<v1::ConverseRequest, v1::ConverseResponse> {
 public:
  Stream(Totals* totals, Remaining* remaining) : totals_(totals), remaining_(remaining) {}

  // On the timer thread: opens the call and queues the start message.
  void Begin(v1::Media::Stub* stub, const std::string& phone_number_id, absl::Time deadline) {
    begun_ = true;
    ctx_.set_deadline(absl::ToChronoTime(deadline));
    stub->async()->Converse(&ctx_, this);
    // Writes come from the timer thread, outside any reaction: the hold keeps
    // OnDone from running while one may still be started.
    AddHold();
    StartRead(&resp_);
    v1::ConverseRequest req;
    req.mutable_start()->set_phone_number_id(phone_number_id);
    req.mutable_start()->set_input_format(v1::AUDIO_FORMAT_PCM_16000);
    req.mutable_start()->set_output_format(v1::AUDIO_FORMAT_PCM_16000);
    Enqueue(std::move(req), false);
    StartCall();
  }

  // Queues one message; `last` closes the writing side after it.
  void Enqueue(v1::ConverseRequest req, bool last) {
    absl::MutexLock lock(&mu_);
    if (writes_closed_) return;
    pending_.push_back(std::move(req));
    if (last) last_queued_ = true;
    if (!writing_) StartNextLocked();
  }

  void Cancel() { ctx_.TryCancel(); }
  bool begun() const { return begun_; }
  int64_t audio_bytes() const { return audio_bytes_; }  // read after OnDone
  bool failed() const { return failed_; }
  const std::string& status() const { return status_; }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    pending_.pop_front();
    writing_ = false;
    if (!ok) {  // the stream is over on the server's side
      CloseWritesLocked(false);
      return;
    }
    StartNextLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    totals_->responses++;
    switch (resp_.msg_case()) {
      case v1::ConverseResponse::kAudio:
        audio_bytes_ += resp_.audio().size();
        totals_->audio_responses++;
        totals_->audio_bytes += resp_.audio().size();
        break;
      case v1::ConverseResponse::kError:
        totals_->error_responses++;
        break;
      case v1::ConverseResponse::kStarted:
        totals_->started++;
        break;
      case v1::ConverseResponse::kTurnEnd:
        totals_->turn_ends++;
        break;
      case v1::ConverseResponse::kInterruption:
        totals_->interruptions++;
        break;
      default:
        break;
    }
    StartRead(&resp_);
  }

  void OnDone(const grpc::Status& s) override {
    failed_ = !s.ok();
    if (failed_) {
      status_ = absl::StrCat(s.error_code(), ": ", s.error_message());
      totals_->failed++;
    } else {
      totals_->ok++;
    }
    remaining_->Done();
  }

 private:
  void StartNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!pending_.empty()) {
      writing_ = true;
      StartWrite(&pending_.front());
    } else if (last_queued_) {
      CloseWritesLocked(true);
    }
  }
  void CloseWritesLocked(bool half_close) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writes_closed_) return;
    writes_closed_ = true;
    if (half_close) StartWritesDone();
    RemoveHold();
  }

  Totals* totals_;
  Remaining* remaining_;
  grpc::ClientContext ctx_;
  v1::ConverseResponse resp_;
  absl::Mutex mu_;
  std::deque<v1::ConverseRequest> pending_ ABSL_GUARDED_BY(mu_);  // front: in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool last_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t audio_bytes_ = 0;  // reactions only
  bool begun_ = false;  // timer thread only, read after it is joined
  bool failed_ = false;
  std::string status_;
};

std::vector<std::string> Chunks(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string ogg = ss.str();
  auto pcm = bridge::audio::DecodeOggOpus(
      {reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()}, kRate);
  if (!pcm.ok() || pcm->empty()) {
    std::cerr << "converse_load: cannot decode " << path << ": " << pcm.status() << "\n";
    std::exit(2);
  }
  std::vector<std::string> chunks;
  for (size_t off = 0; off < pcm->size(); off += kChunkSamples) {
    const size_t n = std::min<size_t>(kChunkSamples, pcm->size() - off);
    chunks.emplace_back(reinterpret_cast<const char*>(pcm->data() + off), n * 2);
  }
  return chunks;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = std::max(1, absl::GetFlag(FLAGS_streams));
  const std::vector<std::string> chunks = Chunks(absl::GetFlag(FLAGS_fixture));
  const std::string phone = absl::GetFlag(FLAGS_phone_number_id);

  // Separate channels are separate connections (a distinct channel arg keeps
  // gRPC from sharing one subchannel between them).
  std::vector<std::unique_ptr<v1::Media::Stub>> stubs;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_channels)); ++i) {
    grpc::ChannelArguments args;
    args.SetInt("bridge.bench.channel", i);
    stubs.push_back(v1::Media::NewStub(grpc::CreateCustomChannel(
        absl::GetFlag(FLAGS_worker), grpc::InsecureChannelCredentials(), args)));
  }

  Totals totals;
  Remaining remaining(n);
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < n; ++i) streams.push_back(std::make_unique<Stream>(&totals, &remaining));

  // The one timer thread: a min-heap of (due, stream, step). Step 0 opens the
  // stream; step k >= 1 sends chunk k-1 (the last one with end_of_input).
  struct Event {
    Clock::time_point due;
    int stream;
    size_t step;
    bool operator>(const Event& o) const { return due > o.due; }
  };
  const absl::Time wall_start = absl::Now();
  const absl::Time deadline = wall_start + absl::GetFlag(FLAGS_timeout);
  const Clock::time_point t0 = Clock::now();
  const auto stagger = absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_stagger));
  std::atomic<bool> stop_timer{false};
  std::thread timer([&] {
    std::priority_queue<Event, std::vector<Event>, std::greater<>> heap;
    for (int i = 0; i < n; ++i) heap.push({t0 + stagger * i / n, i, 0});
    while (!heap.empty() && !stop_timer) {
      Event e = heap.top();
      if (Clock::now() < e.due) {
        std::this_thread::sleep_until(std::min(e.due, Clock::now() + std::chrono::milliseconds(50)));
        continue;
      }
      heap.pop();
      Stream& s = *streams[e.stream];
      if (e.step == 0) {
        s.Begin(stubs[e.stream % stubs.size()].get(), phone, deadline);
      } else {
        v1::ConverseRequest req;
        req.set_audio(chunks[e.step - 1]);
        const bool last = e.step == chunks.size();
        s.Enqueue(std::move(req), false);
        if (last) {
          v1::ConverseRequest end;
          end.set_end_of_input(true);
          s.Enqueue(std::move(end), true);
        }
      }
      if (e.step < chunks.size()) heap.push({e.due + (e.step == 0 ? Clock::duration(0) : kChunkPeriod),
                                             e.stream, e.step + 1});
    }
  });

  bool finished = remaining.Wait(absl::GetFlag(FLAGS_timeout) + absl::Seconds(5));
  if (!finished) {
    std::cerr << "converse_load: timeout; cancelling the streams still open\n";
    stop_timer = true;
  }
  timer.join();
  if (!finished) {
    for (auto& s : streams) {
      if (s->begun()) {
        s->Cancel();
      } else {
        remaining.Done();  // never opened: counted as failed below
      }
    }
    remaining.Wait(absl::Seconds(30));
  }
  const double wall_s = absl::ToDoubleSeconds(absl::Now() - wall_start);

  // Agent audio per stream: every stream should hear the whole reply.
  int64_t min_bytes = INT64_MAX, max_bytes = 0;
  for (auto& s : streams) {
    if (!s->begun() || s->failed()) continue;
    min_bytes = std::min(min_bytes, s->audio_bytes());
    max_bytes = std::max(max_bytes, s->audio_bytes());
  }
  if (min_bytes == INT64_MAX) min_bytes = 0;
  int shown = 0;
  for (auto& s : streams) {
    if (s->failed() && shown++ < 5) std::cerr << "converse_load: stream failed: " << s->status() << "\n";
  }
  const int64_t ok = totals.ok, failed = n - ok;
  std::printf(
      "CONVERSE streams=%d ok=%lld failed=%lld responses=%lld audio_responses=%lld "
      "audio_bytes=%lld audio_seconds=%.2f error_responses=%lld started=%lld "
      "input_seconds_per_stream=%.2f min_stream_audio_s=%.2f max_stream_audio_s=%.2f "
      "turn_ends=%lld interruptions=%lld wall_s=%.2f\n",
      n, static_cast<long long>(ok), static_cast<long long>(failed),
      static_cast<long long>(totals.responses.load()),
      static_cast<long long>(totals.audio_responses.load()),
      static_cast<long long>(totals.audio_bytes.load()), totals.audio_bytes / 2.0 / kRate,
      static_cast<long long>(totals.error_responses.load()),
      static_cast<long long>(totals.started.load()), chunks.size() * 0.1, min_bytes / 2.0 / kRate,
      max_bytes / 2.0 / kRate, static_cast<long long>(totals.turn_ends.load()),
      static_cast<long long>(totals.interruptions.load()), wall_s);
  std::fflush(stdout);
  // A quick exit: no teardown of gRPC under calls that may still be ending.
  std::_Exit(failed == 0 ? 0 : 1);
}
