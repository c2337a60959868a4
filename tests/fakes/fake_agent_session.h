// A scripted ElevenLabs agent behind the AgentSession interface, for unit
// tests of the turn pipeline: events come on the fake's own thread, one at a
// time, as the real session's io thread delivers them, and never after
// Close() returned. What the agent does with each user text is the script.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "media_worker/agent_session.h"

namespace bridge::media_worker::testing {

struct FakeAgentScript {
  int connect_failures = 0;    // Start() answers Unavailable this many times first
  bool refuse = false;         // Start() answers FailedPrecondition (bad key, unknown agent)
  int close_before_reply = 0;  // a close code (1011, 1006, 1008) instead of any answer
  bool close_mid_reply = false;  // half the reply, then 1006
  bool with_audio = true;      // the reply is spoken (100 ms of PCM) as well as written
  std::string reply_prefix = "You said: ";
  // After the reply (or instead of it, with tool_call_only) the agent calls
  // this client tool with these parameters (JSON), as the real session
  // hands a client_tool_call to AgentEvents::on_client_tool_call.
  std::string tool_call;
  std::string tool_parameters = "{}";
  bool tool_call_only = false;
  // Streamed audio (--voice_input=stream): at its first chunk in a turn the
  // agent "hears" this (user_transcript) and answers it like a text.
  std::string audio_transcript;
};

// A client_tool_result the session sent, as the real one would.
struct FakeToolResult {
  std::string tool_call_id;
  std::string result;
  bool is_error = false;
};

// The agent "service": counts conversations and what it heard.
class FakeAgent {
 public:
  explicit FakeAgent(FakeAgentScript script) : script_(std::move(script)) {}

  AgentStarter Starter();

  int starts() {
    absl::MutexLock l(&mu_);
    return starts_;
  }
  std::vector<std::string> heard() {
    absl::MutexLock l(&mu_);
    return heard_;
  }
  void Heard(const std::string& text) {
    absl::MutexLock l(&mu_);
    heard_.push_back(text);
  }
  // Contextual updates, in order.
  std::vector<std::string> context() {
    absl::MutexLock l(&mu_);
    return context_;
  }
  void Context(const std::string& text) {
    absl::MutexLock l(&mu_);
    context_.push_back(text);
  }
  std::vector<FakeToolResult> tool_results() {
    absl::MutexLock l(&mu_);
    return tool_results_;
  }
  void ToolResult(FakeToolResult r) {
    absl::MutexLock l(&mu_);
    tool_results_.push_back(std::move(r));
  }
  // Conversations closed by the client (Close(), or destroyed).
  int closes() {
    absl::MutexLock l(&mu_);
    return closes_;
  }
  void Closed() {
    absl::MutexLock l(&mu_);
    ++closes_;
  }
  const FakeAgentScript& script() const { return script_; }

 private:
  const FakeAgentScript script_;
  absl::Mutex mu_;
  int starts_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_left_ ABSL_GUARDED_BY(mu_) = -1;
  std::vector<std::string> heard_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> context_ ABSL_GUARDED_BY(mu_);
  std::vector<FakeToolResult> tool_results_ ABSL_GUARDED_BY(mu_);
  int closes_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakeAgentSession final : public AgentSession {
 public:
  FakeAgentSession(FakeAgent* agent, AgentEvents events, int n)
      : agent_(agent), events_(std::move(events)), id_(absl::StrCat("conv_fake_", n)) {
    thread_ = std::thread([loop = loop_] { Run(*loop); });
    Post([this] { events_.on_started(id_, 16000, 16000); });
  }
  ~FakeAgentSession() override { Close(); }

  void SendAudio(absl::Span<const int16_t>) override {
    const FakeAgentScript& s = agent_->script();
    if (s.audio_transcript.empty() || answered_audio_) return;
    answered_audio_ = true;
    agent_->Heard(s.audio_transcript);
    Post([this, s] {
      if (events_.on_user_transcript) events_.on_user_transcript(s.audio_transcript);
      if (s.with_audio) events_.on_audio(std::vector<int16_t>(1600, 1000), 1);
      events_.on_agent_response(s.reply_prefix + s.audio_transcript);
      events_.on_reply_end(ReplyEnd::kAligned);
    });
  }
  void SendText(const std::string& text) override {
    agent_->Heard(text);
    const FakeAgentScript& s = agent_->script();
    const std::string reply = s.reply_prefix + text;
    if (s.close_before_reply != 0) {
      Post([this, code = s.close_before_reply] { events_.on_closed(code, "scripted", code != 1008); });
      return;
    }
    if (s.close_mid_reply) {
      Post([this, half = reply.substr(0, reply.size() / 2)] {
        events_.on_audio(std::vector<int16_t>(1600, 1000), 1);
        events_.on_agent_response(half);
        events_.on_closed(1006, "scripted", true);
      });
      return;
    }
    Post([this, reply, s] {
      if (!s.tool_call_only) {
        if (s.with_audio) events_.on_audio(std::vector<int16_t>(1600, 1000), 1);
        events_.on_agent_response(reply);
      }
      if (!s.tool_call.empty()) CallTool(s.tool_call, s.tool_parameters);
      if (!s.tool_call_only) events_.on_reply_end(ReplyEnd::kAligned);
    });
  }
  void SendContextualUpdate(const std::string& text) override { agent_->Context(text); }
  void SendUserActivity() override {}
  void BeginTurn() override { answered_audio_ = false; }
  void CloseWhenIdle(absl::Duration) override {}
  void Close() override {
    {
      absl::MutexLock l(&loop_->mu);
      if (loop_->closed) return;
      loop_->closed = true;
    }
    agent_->Closed();
    if (std::this_thread::get_id() == thread_.get_id()) {
      // From a callback, which may go on to destroy this session (as the
      // real one allows): the loop owns its state and ends on its own.
      thread_.detach();
    } else if (thread_.joinable()) {
      thread_.join();
    }
  }
  std::string conversation_id() const override { return id_; }
  int input_rate() const override { return 16000; }
  int output_rate() const override { return 16000; }

 private:
  // Answered as the real session answers: what the owner says, else unsupported.
  void CallTool(const std::string& name, const std::string& parameters) {
    const std::string id = absl::StrCat("call_", ++tool_calls_);
    std::optional<ClientToolResult> answer;
    if (events_.on_client_tool_call) answer = events_.on_client_tool_call({name, id, parameters});
    if (!answer) answer = ClientToolResult{absl::StrCat("Client tool '", name, "' is not supported"), true};
    agent_->ToolResult({id, answer->result, answer->is_error});
  }

  // The event thread's state, shared so that it outlives a session
  // destroyed from one of its own callbacks.
  struct Loop {
    absl::Mutex mu;
    std::deque<std::function<void()>> queue ABSL_GUARDED_BY(mu);
    bool closed ABSL_GUARDED_BY(mu) = false;
  };

  void Post(std::function<void()> fn) {
    absl::MutexLock l(&loop_->mu);
    if (!loop_->closed) loop_->queue.push_back(std::move(fn));
  }
  static void Run(Loop& loop) {
    for (;;) {
      std::function<void()> fn;
      {
        absl::MutexLock l(&loop.mu);
        loop.mu.Await(absl::Condition(
            +[](Loop* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
              return s->closed || !s->queue.empty();
            },
            &loop));
        if (loop.closed) return;
        fn = std::move(loop.queue.front());
        loop.queue.pop_front();
      }
      fn();  // one at a time, like the io thread
    }
  }

  FakeAgent* agent_;
  AgentEvents events_;
  const std::string id_;
  int tool_calls_ = 0;           // event thread only
  bool answered_audio_ = false;  // the caller's thread only
  const std::shared_ptr<Loop> loop_ = std::make_shared<Loop>();
  std::thread thread_;  // after loop_: it starts with it
};

inline AgentStarter FakeAgent::Starter() {
  return [this](const AgentOptions&, AgentEvents events)
             -> absl::StatusOr<std::unique_ptr<AgentSession>> {
    int n;
    {
      absl::MutexLock l(&mu_);
      if (failures_left_ < 0) failures_left_ = script_.connect_failures;
      n = ++starts_;
      if (script_.refuse) return absl::FailedPreconditionError("agent refused: 404 unknown agent");
      if (failures_left_ > 0) {
        --failures_left_;
        return absl::UnavailableError("signed URL: 503");
      }
    }
    return std::make_unique<FakeAgentSession>(this, std::move(events), n);
  };
}

}  // namespace bridge::media_worker::testing
