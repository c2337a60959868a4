// The worker's ElevenLabs agent client (media_worker/src/agent_session.cc) on
// arbitrary server messages, without a socket: a stand-in ws::ClientPool
// hands the real AgentSession a connection whose handler the fuzzer drives on
// this one thread, as the io thread would. The input is lines:
//   !timer      fire the oldest pending timer (quiet gap, settle, idle close)
//   !turn       BeginTurn() and a user text, as the worker starts a turn
//   !binary     a binary frame
//   !close N    the server closes with code N (ends the input)
//   anything else: one text frame (a JSON message, or not)
// The pure protocol helpers (agent_protocol.h) get the same bytes too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent_protocol.h"
#include "common/log.h"
#include "media_worker/agent_session.h"
#include "ws/websocket.h"

namespace {

namespace ai = bridge::media_worker::agent_internal;

class FakeConnection : public bridge::ws::Connection {
 public:
  void SendText(std::string text) override { sent_bytes += text.size(); }
  void Close(int code, const std::string& reason) override {
    if (reason.size() > 123) abort();  // a close frame cannot carry more
    closed = true;
  }
  uint64_t Schedule(absl::Duration, std::function<void()> fn) override {
    timers.emplace(++next_timer, std::move(fn));
    return next_timer;
  }
  void Cancel(uint64_t id) override { timers.erase(id); }
  bool open() const override { return !closed; }
  size_t buffered_bytes() const override { return 0; }
  std::string remote() const override { return "127.0.0.1:1"; }

  size_t sent_bytes = 0;
  bool closed = false;
  uint64_t next_timer = 0;
  std::map<uint64_t, std::function<void()>> timers;  // by id: oldest first
};

class FakePool : public bridge::ws::ClientPool {
 public:
  absl::StatusOr<std::shared_ptr<bridge::ws::Connection>> Connect(
      const bridge::ws::ClientOptions&,
      std::shared_ptr<bridge::ws::ConnectionHandler> h) override {
    handler = std::move(h);
    conn = std::make_shared<FakeConnection>();
    return conn;
  }
  void Stop() override {}

  std::shared_ptr<bridge::ws::ConnectionHandler> handler;
  std::shared_ptr<FakeConnection> conn;
};

void FuzzHelpers(absl::string_view line) {
  const std::string s(line);
  (void)ai::ParseAudioFormat(s);
  (void)ai::NormalizeBaseUrl(s);
  for (bool ulaw : {false, true}) {
    std::optional<std::vector<int16_t>> pcm = ai::DecodeAudio(s, ulaw);
    if (pcm && pcm->size() > s.size()) abort();  // base64 shrinks what it carries
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  bridge::InitLogging("fuzz_agent_messages", bridge::LogLevel::kError,
                      bridge::LogFormat::kText);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  FakePool pool;
  bridge::media_worker::AgentOptions options;
  options.base_url = "http://127.0.0.1:1";
  options.agent_id = "fuzz-agent";
  options.user_id = "fuzz-user";
  int64_t audio_samples = 0;
  bool closed_reported = false;
  bridge::media_worker::AgentEvents events;
  events.on_audio = [&](std::vector<int16_t> pcm, int64_t) { audio_samples += pcm.size(); };
  events.on_closed = [&](int, const std::string&, bool) {
    if (closed_reported) abort();  // once
    closed_reported = true;
  };
  events.on_reply_end = [](bridge::media_worker::ReplyEnd) {};
  auto session = bridge::media_worker::AgentSession::Start(options, std::move(events), &pool);
  if (!session.ok() || !pool.handler) abort();
  bridge::ws::ConnectionHandler& h = *pool.handler;
  h.OnOpen();
  for (absl::string_view line : absl::StrSplit(input, '\n')) {
    if (line == "!timer") {
      auto& timers = pool.conn->timers;
      if (timers.empty()) continue;
      std::function<void()> fn = std::move(timers.begin()->second);
      timers.erase(timers.begin());
      fn();
    } else if (line == "!turn") {
      (*session)->BeginTurn();
      (*session)->SendText("hello");
    } else if (line == "!binary") {
      h.OnBinary("\x01\x02");
    } else if (absl::ConsumePrefix(&line, "!close ")) {
      int code = 0;
      (void)absl::SimpleAtoi(line, &code);
      h.OnClose(code, "server closed", /*remote=*/true);
      break;
    } else {
      FuzzHelpers(line);
      h.OnText(std::string(line));
    }
  }
  (*session)->Close();
  return 0;
}
