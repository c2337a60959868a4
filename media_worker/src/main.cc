// bridge-worker: the media plane (see media_worker/worker_server.h).
#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/service.h"
#include "media_worker/worker_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7100",
          "gRPC listen address (port 0 picks one); off loopback it needs the cluster token");
ABSL_FLAG(std::string, cluster_token, "",
          "Token for the controller link and for Media.Converse callers (env "
          "BRIDGE_CLUSTER_TOKEN)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9101", "Prometheus /metrics listen address");
ABSL_FLAG(std::string, controller, "127.0.0.1:7000",
          "Controller gRPC target, or a comma list of them (cluster mode: the leader is found)");
ABSL_FLAG(std::string, advertise, "", "Address others use to reach this worker's gRPC");
ABSL_FLAG(std::string, worker_id, "", "Worker id (default: hostname-pid)");
ABSL_FLAG(int, capacity, 100,
          "Sessions this worker holds at once: WhatsApp sessions and Media.Converse streams");
ABSL_FLAG(int, max_streams, 0,
          "Media.Converse streams it takes at most (0: half of --capacity), so that streams "
          "never take the slots WhatsApp users need; more are refused RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, converse_start_timeout, absl::Seconds(10),
          "A Converse stream that has not sent start by then ends DEADLINE_EXCEEDED");
ABSL_FLAG(std::string, elevenlabs_api_key, "", "ElevenLabs API key (env ELEVENLABS_API_KEY)");
ABSL_FLAG(std::string, elevenlabs_agent_id, "", "ElevenLabs agent id (env ELEVENLABS_AGENT_ID)");
ABSL_FLAG(std::string, elevenlabs_base_url, "https://api.elevenlabs.io",
          "ElevenLabs API base URL (env ELEVENLABS_BASE_URL)");
ABSL_FLAG(std::string, whatsapp_access_token, "",
          "Graph API access token (env WHATSAPP_ACCESS_TOKEN)");
ABSL_FLAG(std::string, whatsapp_phone_number_id, "",
          "Business phone number id (env WHATSAPP_PHONE_NUMBER_ID)");
ABSL_FLAG(std::string, whatsapp_graph_base_url, "https://graph.facebook.com",
          "Graph API base URL (env WHATSAPP_GRAPH_BASE_URL)");
ABSL_FLAG(std::string, whatsapp_graph_api_version, "v23.0",
          "Graph API version (env WHATSAPP_GRAPH_API_VERSION)");

ABSL_FLAG(std::vector<std::string>, media_hosts,
          std::vector<std::string>({"*.fbsbx.com", "*.fbcdn.net", "*.whatsapp.net"}),
          "Hosts (besides the Graph API's) media may be downloaded from with the access token, "
          "over HTTPS; a webhook media URL elsewhere is ignored and the media resolved by id");
ABSL_FLAG(std::string, session_secret, "", "Salt for agent user ids derived from WhatsApp ids (env SESSION_SECRET)");
ABSL_FLAG(std::string, ca_file, "", "PEM CA bundle for outbound TLS (default: the system store)");
ABSL_FLAG(std::string, voice_input, "transcribe",
          "Voice notes to the agent: transcribe (speech-to-text, then user_message) or stream "
          "(decoded audio at --agent_input_pace, then real-time silence until it answers)");
ABSL_FLAG(std::string, stt_model, "scribe_v2", "Speech-to-text model_id (--voice_input=transcribe)");
ABSL_FLAG(double, agent_input_pace, 1,
          "--voice_input=stream: 1 = real time, 4 = four times faster, 0 = unpaced (risks a "
          "missed end of turn)");
ABSL_FLAG(absl::Duration, silence_tail_max, absl::Seconds(5),
          "--voice_input=stream: most real-time silence streamed after a note");
ABSL_FLAG(absl::Duration, reply_timeout, absl::Seconds(60), "Longest wait for the agent's reply");
ABSL_FLAG(absl::Duration, reply_quiet_gap, absl::Seconds(3),
          "No agent audio this long ends a reply when nothing stronger tells (weakest evidence)");
ABSL_FLAG(absl::Duration, reply_settle, absl::Seconds(1),
          "Once the audio's alignment covers the reply text, this long without more ends it");
ABSL_FLAG(absl::Duration, agent_linger, absl::Seconds(5),
          "Keep the agent conversation open this long after a reply (0: close at once)");
ABSL_FLAG(absl::Duration, delivery_budget, absl::Minutes(2),
          "A reply the Graph API keeps refusing with a transient error is sent again until "
          "this long after the first try (a late reply is still in the 24-hour window)");
ABSL_FLAG(bool, read_receipts, true, "Mark messages read and show the typing indicator");
ABSL_FLAG(int, turn_threads, 16, "Threads running turns (downloads, codec, uploads)");
ABSL_FLAG(std::string, agent_greeting, "skip",
          "The agent's first_message: skip (the user's note interrupts it) or deliver (sent "
          "before the first answer of a conversation)");
ABSL_FLAG(absl::Duration, greeting_wait, absl::Seconds(2),
          "With --agent_greeting=deliver: how long a new conversation waits for the greeting");

ABSL_FLAG(std::string, calls, "on",
          "Answer WhatsApp calls with the agent (on), or refuse each at once with a reason (off)");
ABSL_FLAG(int, max_calls, 0,
          "Calls this worker carries at once (0: half of --capacity); more are rejected with a "
          "reason. docs/benchmarks.md has the CPU and memory per call to size it");
ABSL_FLAG(absl::Duration, call_max_duration, absl::Hours(1),
          "A call still going after this long is ended with terminate");
ABSL_FLAG(std::string, stun_server, "",
          "STUN server for a server-reflexive candidate, [stun:]host[:port] (env STUN_SERVER); "
          "empty: none (Meta's side is ICE-lite on public addresses)");
ABSL_FLAG(std::string, media_public_ip, "",
          "The public IPv4 address of this worker's media behind a 1:1 NAT: host candidates "
          "are announced with it");
ABSL_FLAG(std::string, media_port_range, "",
          "UDP ports for call media, MIN-MAX (one port per call); empty: any");
ABSL_FLAG(std::vector<std::string>, media_ips, {},
          "Local addresses media is gathered on (comma list); empty: every interface but "
          "loopback");

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  bridge::LoadConfig(argc, argv, "bridge-worker",
                     {{"ELEVENLABS_API_KEY", "elevenlabs_api_key", true},
                      {"ELEVENLABS_AGENT_ID", "elevenlabs_agent_id"},
                      {"ELEVENLABS_BASE_URL", "elevenlabs_base_url"},
                      {"WHATSAPP_ACCESS_TOKEN", "whatsapp_access_token", true},
                      {"WHATSAPP_PHONE_NUMBER_ID", "whatsapp_phone_number_id"},
                      {"WHATSAPP_GRAPH_BASE_URL", "whatsapp_graph_base_url"},
                      {"WHATSAPP_GRAPH_API_VERSION", "whatsapp_graph_api_version"},
                      {"SESSION_SECRET", "session_secret", true},
                      {"STUN_SERVER", "stun_server"},
                      {"BRIDGE_CLUSTER_TOKEN", "cluster_token", true}});
  bridge::media_worker::WorkerOptions opts;
  opts.listen = absl::GetFlag(FLAGS_listen);
  opts.cluster_token = absl::GetFlag(FLAGS_cluster_token);
  opts.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  opts.controller = absl::GetFlag(FLAGS_controller);
  opts.advertise = absl::GetFlag(FLAGS_advertise);
  opts.worker_id = absl::GetFlag(FLAGS_worker_id);
  opts.capacity = absl::GetFlag(FLAGS_capacity);
  opts.elevenlabs_api_key = absl::GetFlag(FLAGS_elevenlabs_api_key);
  opts.elevenlabs_agent_id = absl::GetFlag(FLAGS_elevenlabs_agent_id);
  opts.elevenlabs_base_url = absl::GetFlag(FLAGS_elevenlabs_base_url);
  opts.whatsapp_access_token = absl::GetFlag(FLAGS_whatsapp_access_token);
  opts.whatsapp_phone_number_id = absl::GetFlag(FLAGS_whatsapp_phone_number_id);
  opts.whatsapp_graph_base_url = absl::GetFlag(FLAGS_whatsapp_graph_base_url);
  opts.whatsapp_graph_api_version = absl::GetFlag(FLAGS_whatsapp_graph_api_version);
  opts.session_secret = absl::GetFlag(FLAGS_session_secret);
  opts.media_hosts = absl::GetFlag(FLAGS_media_hosts);
  opts.ca_file = absl::GetFlag(FLAGS_ca_file);
  const std::string voice_input = absl::GetFlag(FLAGS_voice_input);
  if (voice_input != "transcribe" && voice_input != "stream") {
    bridge::LogError("--voice_input must be transcribe or stream", {{"value", voice_input}});
    return 2;
  }
  opts.transcribe_voice = voice_input == "transcribe";
  if (opts.transcribe_voice && opts.elevenlabs_api_key.empty()) {
    bridge::LogError(
        "--voice_input=transcribe needs ELEVENLABS_API_KEY (speech-to-text); set it or use "
        "--voice_input=stream for a public agent");
    return 2;
  }
  opts.stt_model = absl::GetFlag(FLAGS_stt_model);
  opts.agent_input_pace = absl::GetFlag(FLAGS_agent_input_pace);
  opts.silence_tail_max = absl::GetFlag(FLAGS_silence_tail_max);
  opts.reply_timeout = absl::GetFlag(FLAGS_reply_timeout);
  opts.reply_quiet_gap = absl::GetFlag(FLAGS_reply_quiet_gap);
  opts.reply_settle = absl::GetFlag(FLAGS_reply_settle);
  opts.agent_linger = absl::GetFlag(FLAGS_agent_linger);
  opts.delivery_budget = absl::GetFlag(FLAGS_delivery_budget);
  if (opts.reply_quiet_gap <= absl::ZeroDuration() || opts.reply_settle <= absl::ZeroDuration()) {
    bridge::LogError("--reply_quiet_gap and --reply_settle must be positive");
    return 2;
  }
  opts.read_receipts = absl::GetFlag(FLAGS_read_receipts);
  opts.turn_threads = absl::GetFlag(FLAGS_turn_threads);
  const std::string greeting = absl::GetFlag(FLAGS_agent_greeting);
  if (greeting != "skip" && greeting != "deliver") {
    bridge::LogError("--agent_greeting must be skip or deliver", {{"value", greeting}});
    return 2;
  }
  opts.deliver_greeting = greeting == "deliver";
  opts.greeting_wait = absl::GetFlag(FLAGS_greeting_wait);
  if (opts.capacity < 1) {
    bridge::LogError("--capacity must be at least 1");
    return 2;
  }
  opts.max_streams = absl::GetFlag(FLAGS_max_streams);
  if (opts.max_streams == 0) opts.max_streams = std::max(1, opts.capacity / 2);
  if (opts.max_streams < 0 || opts.max_streams > opts.capacity) {
    bridge::LogError("--max_streams must be between 0 and --capacity",
                     {{"max_streams", opts.max_streams}, {"capacity", opts.capacity}});
    return 2;
  }
  opts.converse_start_timeout = absl::GetFlag(FLAGS_converse_start_timeout);
  const std::string calls = absl::GetFlag(FLAGS_calls);
  if (calls != "on" && calls != "off") {
    bridge::LogError("--calls must be on or off", {{"value", calls}});
    return 2;
  }
  opts.calls = calls == "on";
  opts.max_calls = absl::GetFlag(FLAGS_max_calls);
  opts.call_max_duration = absl::GetFlag(FLAGS_call_max_duration);
  opts.stun_server = absl::GetFlag(FLAGS_stun_server);
  opts.media_public_ip = absl::GetFlag(FLAGS_media_public_ip);
  opts.media_local_ips = absl::GetFlag(FLAGS_media_ips);
  if (const std::string range = absl::GetFlag(FLAGS_media_port_range); !range.empty()) {
    std::vector<std::string> p = absl::StrSplit(range, '-');
    if (p.size() != 2 || !absl::SimpleAtoi(p[0], &opts.media_port_min) ||
        !absl::SimpleAtoi(p[1], &opts.media_port_max) || opts.media_port_min < 1 ||
        opts.media_port_max > 65535 || opts.media_port_min > opts.media_port_max) {
      bridge::LogError("--media_port_range must be MIN-MAX, 1..65535", {{"value", range}});
      return 2;
    }
  }
  if (opts.max_calls < 0 || opts.call_max_duration <= absl::ZeroDuration()) {
    bridge::LogError("--max_calls must be >= 0 and --call_max_duration positive");
    return 2;
  }
  return bridge::RunUntilSignal("bridge-worker", bridge::media_worker::WorkerServer::Start(opts));
}
