// bridge-worker: the media plane (see media_worker/worker_server.h).
#include "absl/flags/flag.h"
#include "common/config.h"
#include "common/log.h"
#include "common/process.h"
#include "common/service.h"
#include "media_worker/worker_server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7100", "gRPC listen address (port 0 picks one)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9101", "Prometheus /metrics listen address");
ABSL_FLAG(std::string, controller, "127.0.0.1:7000", "Controller gRPC target(s)");
ABSL_FLAG(std::string, advertise, "", "Address others use to reach this worker's gRPC");
ABSL_FLAG(std::string, worker_id, "", "Worker id (default: hostname-pid)");
ABSL_FLAG(int, capacity, 100, "Sessions this worker holds at once");
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

int main(int argc, char** argv) {
  bridge::BlockShutdownSignals();
  bridge::LoadConfig(argc, argv, "bridge-worker",
                     {{"ELEVENLABS_API_KEY", "elevenlabs_api_key", true},
                      {"ELEVENLABS_AGENT_ID", "elevenlabs_agent_id"},
                      {"ELEVENLABS_BASE_URL", "elevenlabs_base_url"},
                      {"WHATSAPP_ACCESS_TOKEN", "whatsapp_access_token", true},
                      {"WHATSAPP_PHONE_NUMBER_ID", "whatsapp_phone_number_id"},
                      {"WHATSAPP_GRAPH_BASE_URL", "whatsapp_graph_base_url"},
                      {"WHATSAPP_GRAPH_API_VERSION", "whatsapp_graph_api_version"}});
  bridge::media_worker::WorkerOptions opts;
  opts.listen = absl::GetFlag(FLAGS_listen);
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
  if (opts.capacity < 1) {
    bridge::LogError("--capacity must be at least 1");
    return 2;
  }
  return bridge::RunUntilSignal("bridge-worker", bridge::media_worker::WorkerServer::Start(opts));
}
