#include "elevenlabs_sim/elevenlabs_sim.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "audio/resampler.h"
#include "common/log.h"
#include "conversation.h"
#include "sim_state.h"
#include "speech_to_text.h"
#include "ws/websocket.h"

namespace bridge::elevenlabs_sim {
namespace {

using nlohmann::json;

constexpr char kConversationPath[] = "/v1/convai/conversation";
constexpr char kSignedUrlPath[] = "/v1/convai/conversation/get-signed-url";
constexpr char kSpeechToTextPath[] = "/v1/speech-to-text";
constexpr char kConversationsPrefix[] = "/v1/convai/conversations/";

ws::HttpResponse JsonResponse(int status, const json& body) {
  return ws::HttpResponse{status, "application/json", body.dump(), {}};
}

// ElevenLabs answers API errors as {"detail": {"status", "message"}}.
ws::HttpResponse Detail(int status, const std::string& code, const std::string& message) {
  return JsonResponse(status, {{"detail", {{"status", code}, {"message", message}}}});
}

absl::StatusOr<int> PcmFormatRate(const std::string& format) {
  if (IsUlaw(format)) return 8000;
  absl::string_view f = format;
  int rate = 0;
  if (!absl::ConsumePrefix(&f, "pcm_") || !absl::SimpleAtoi(f, &rate) ||
      (rate != 8000 && rate != 16000 && rate != 22050 && rate != 24000 && rate != 44100 &&
       rate != 48000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio format '", format, "': the simulator speaks pcm_8000 ... pcm_48000 and ulaw_8000"));
  }
  return rate;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The reply voice at `rate`: --reply_pcm as given, else the fixture recorded
// at that rate, else the 16 kHz fixture resampled.
absl::StatusOr<ReplyVoice> LoadVoice(const SimOptions& o, int rate) {
  std::string path = o.reply_pcm;
  int file_rate = rate;
  if (path.empty()) {
    const char* name = rate == 24000 ? "agent_reply_24k.s16le"
                       : rate == 44100 ? "agent_reply_44k1.s16le"
                                       : "agent_reply_16k.s16le";
    file_rate = (rate == 24000 || rate == 44100) ? rate : 16000;
    path = absl::StrCat(o.fixtures_dir, "/", name);
  }
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  std::vector<int16_t> pcm(bytes->size() / 2);
  std::memcpy(pcm.data(), bytes->data(), pcm.size() * 2);
  ReplyVoice voice{rate, {}};
  auto resampler = audio::Resampler::Create(file_rate, rate);
  if (!resampler.ok()) return resampler.status();
  (*resampler)->Process(pcm, &voice.pcm);
  (*resampler)->Flush(&voice.pcm);
  if (voice.pcm.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  return voice;
}

class SimImpl final : public ElevenLabsSim {
 public:
  explicit SimImpl(const SimOptions& o) : options_(o), state_(o.max_conversations) {}
  ~SimImpl() override { Shutdown(); }

  absl::Status Init() {
    auto in_rate = PcmFormatRate(options_.input_format);
    if (!in_rate.ok()) return in_rate.status();
    auto out_rate = PcmFormatRate(options_.output_format);
    if (!out_rate.ok()) return out_rate.status();
    input_rate_ = *in_rate;
    auto voice = LoadVoice(options_, *out_rate);
    if (!voice.ok()) return voice.status();
    voice_ = *std::move(voice);

    ws::ServerOptions so;
    so.listen = options_.listen;
    if (!options_.tls_cert.empty()) so.tls = ws::TlsFiles{options_.tls_cert, options_.tls_key};
    ws::ServerCallbacks cb;
    cb.on_http_deferred = [this](const ws::HttpRequest& req,
                                 std::function<void(ws::HttpResponse)> respond) {
      Http(req, std::move(respond));
    };
    cb.on_upgrade = [this](const ws::HttpRequest& req, std::shared_ptr<ws::Connection> conn) {
      return Upgrade(req, std::move(conn));
    };
    auto server = ws::Server::Start(so, std::move(cb));
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    LogInfo("elevenlabs-sim serving",
            {{"http", server_->address()}, {"tls", so.tls ? "on" : "off"},
             {"input_format", options_.input_format}, {"output_format", options_.output_format}});
    return absl::OkStatus();
  }

  std::string address() const override { return server_->address(); }
  std::string ws_base_url() const override {
    return absl::StrCat(options_.tls_cert.empty() ? "ws://" : "wss://", address());
  }
  std::string http_base_url() const override {
    return absl::StrCat(options_.tls_cert.empty() ? "http://" : "https://", address());
  }
  std::vector<std::pair<std::string, std::string>> endpoints() const override {
    return {{"http", address()}};
  }
  void Shutdown() override {
    state_.Stop();  // wakes long polls
    if (server_) server_->Stop();
    for (auto& w : waiters_) w.thread.join();
    waiters_.clear();
  }

 private:
  void Http(const ws::HttpRequest& req, std::function<void(ws::HttpResponse)> respond) {
    const std::string path = req.Path();
    try {
      if (path == kSignedUrlPath && req.method == "GET") return respond(SignedUrl(req));
      if (path == kSpeechToTextPath && req.method == "POST") return respond(SpeechToText(req));
      if (absl::StartsWith(path, kConversationsPrefix) && req.method == "DELETE") {
        return respond(DeleteConversation(req));
      }
      if (path == "/sim/transcriptions" && req.method == "GET") {
        return respond(JsonResponse(200, state_.Transcriptions()));
      }
      if (path == "/sim/conversations" && req.method == "GET") return Conversations(req, respond);
      if (path == "/sim/faults" && req.method == "POST") {
        std::string err = state_.SetFaults(json::parse(req.body));
        return respond(err.empty() ? JsonResponse(200, {{"ok", true}})
                                   : JsonResponse(400, {{"error", err}}));
      }
      if (path == "/sim/faults" && req.method == "DELETE") {
        state_.ClearFaults();
        return respond(JsonResponse(200, {{"ok", true}}));
      }
    } catch (const json::exception& e) {
      return respond(JsonResponse(400, {{"error", e.what()}}));
    }
    respond(Detail(404, "not_found", absl::StrCat("No route for ", req.method, " ", path)));
  }

  // GET /sim/conversations?min_count=N&ended=true&wait_ms=T: a long poll, so
  // it waits on its own thread and never blocks the io thread.
  void Conversations(const ws::HttpRequest& req, std::function<void(ws::HttpResponse)> respond) {
    int min_count = 0, wait_ms = 0;
    (void)absl::SimpleAtoi(req.Query("min_count").value_or("0"), &min_count);
    (void)absl::SimpleAtoi(req.Query("wait_ms").value_or("0"), &wait_ms);
    const bool ended = req.Query("ended").value_or("") == "true";
    // Finished waiters are joined here so a long-running simulator keeps none.
    std::erase_if(waiters_, [](Waiter& w) {
      if (!*w.done) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    waiters_.push_back(Waiter{std::thread([this, min_count, wait_ms, ended, done,
                                           respond = std::move(respond)] {
                                respond(JsonResponse(200, state_.Snapshot(min_count, ended,
                                                                          absl::Milliseconds(wait_ms))));
                                *done = true;
                              }),
                              done});
  }

  ws::HttpResponse SignedUrl(const ws::HttpRequest& req) {
    if (auto [status, retry_after] = state_.TakeSignedUrlFault(); status != 0) {
      ws::HttpResponse r = Detail(status, "injected_fault", "Injected by /sim/faults");
      if (retry_after > 0) r.headers.emplace_back("Retry-After", absl::StrCat(retry_after));
      return r;
    }
    if (!options_.api_key.empty() && req.Header("xi-api-key").value_or("") != options_.api_key) {
      return Detail(401, "invalid_api_key", "Invalid API key");
    }
    std::string agent = req.Query("agent_id").value_or("");
    if (agent.empty()) return Detail(422, "missing_agent_id", "agent_id is required");
    if (!options_.agent_id.empty() && agent != options_.agent_id) {
      return Detail(404, "agent_not_found", "Agent not found");
    }
    std::string token = state_.IssueSignedToken(absl::Seconds(options_.signed_url_ttl_s));
    return JsonResponse(200, {{"signed_url", absl::StrCat(ws_base_url(), kConversationPath,
                                                          "?agent_id=", agent,
                                                          "&conversation_signature=", token)}});
  }

  ws::HttpResponse SpeechToText(const ws::HttpRequest& req) {
    if (!options_.api_key.empty() && req.Header("xi-api-key").value_or("") != options_.api_key) {
      return Detail(401, "invalid_api_key", "Invalid API key");
    }
    json record;
    auto [status, body] =
        Transcribe({req.Header("content-type").value_or(""), req.body}, &record);
    record["status"] = status;
    state_.RecordTranscription(std::move(record));
    return JsonResponse(status, body);
  }

  // DELETE /v1/convai/conversations/{id}. The published schema of the 200
  // body is an untyped JSON value; the simulator answers {} and the record
  // stays listed (deleted: true) so tests can see the erasure.
  ws::HttpResponse DeleteConversation(const ws::HttpRequest& req) {
    if (!options_.api_key.empty() && req.Header("xi-api-key").value_or("") != options_.api_key) {
      return Detail(401, "invalid_api_key", "Invalid API key");
    }
    const std::string path = req.Path();
    const std::string id = path.substr(std::strlen(kConversationsPrefix));
    if (id.empty() || absl::StrContains(id, '/') || !state_.DeleteConversation(id)) {
      return Detail(404, "conversation_not_found", "Conversation not found");
    }
    LogInfo("conversation deleted", {{"conversation_id", id}});
    return JsonResponse(200, json::object());
  }

  std::variant<std::shared_ptr<ws::ConnectionHandler>, ws::HttpResponse> Upgrade(
      const ws::HttpRequest& req, std::shared_ptr<ws::Connection> conn) {
    if (req.Path() != kConversationPath) return Detail(404, "not_found", "Unknown path");
    std::string agent = req.Query("agent_id").value_or("");
    if (agent.empty() || (!options_.agent_id.empty() && agent != options_.agent_id)) {
      return Detail(404, "agent_not_found", "Agent not found");
    }
    if (!options_.api_key.empty()) {
      auto sig = req.Query("conversation_signature");
      bool by_key = req.Header("xi-api-key").value_or("") == options_.api_key;
      if (!by_key && !(sig && state_.RedeemSignedToken(*sig))) {
        return Detail(403, "invalid_signature", "Missing, expired or reused conversation signature");
      }
    }
    if (!state_.TryAdmit()) {
      return Detail(429, "concurrency_limit_exceeded",
                    "Too many concurrent conversations for this workspace");
    }
    auto record = state_.NewConversation(agent);
    return std::make_shared<Conversation>(options_, input_rate_, &voice_, &state_,
                                          std::move(conn), std::move(record),
                                          state_.TakeConversationFaults());
  }

  const SimOptions options_;
  SimState state_;
  int input_rate_ = 16000;
  ReplyVoice voice_;
  std::unique_ptr<ws::Server> server_;
  struct Waiter {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Waiter> waiters_;  // touched on the io thread only (and Shutdown)
};

}  // namespace

absl::StatusOr<std::unique_ptr<ElevenLabsSim>> ElevenLabsSim::Start(const SimOptions& options) {
  auto sim = std::make_unique<SimImpl>(options);
  if (auto s = sim->Init(); !s.ok()) return s;
  return sim;
}

}  // namespace bridge::elevenlabs_sim
