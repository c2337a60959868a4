// The media plane: attaches to the controller over WorkerLink, runs the turns
// of the sessions assigned to it (Graph API media, Ogg/Opus codec, the
// ElevenLabs agent WebSocket) and serves bridge.v1.Media/Converse.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/service.h"

namespace bridge::media_worker {

struct WorkerOptions {
  std::string listen = "127.0.0.1:7100";
  std::string cluster_token;  // BRIDGE_CLUSTER_TOKEN: the controller link and Media callers
  std::string metrics_listen = "0.0.0.0:9101";
  std::string controller = "127.0.0.1:7000";
  std::string advertise;  // defaults to the bound gRPC address
  std::string worker_id;  // defaults to hostname-pid
  int capacity = 100;
  // Media.Converse streams it takes at most (0: half the capacity): the rest
  // of the capacity stays for WhatsApp users.
  int max_streams = 0;
  absl::Duration converse_start_timeout = absl::Seconds(10);
  // Calls (docs/calls.md).
  bool calls = true;
  int max_calls = 0;                 // 0: half of capacity
  absl::Duration call_max_duration = absl::Hours(1);
  std::string stun_server;           // STUN_SERVER: [stun:]host[:port]
  std::string media_public_ip;
  int media_port_min = 0, media_port_max = 0;
  std::vector<std::string> media_local_ips;  // empty: every interface but loopback
  std::string elevenlabs_api_key;
  std::string elevenlabs_agent_id;
  std::string elevenlabs_base_url = "https://api.elevenlabs.io";
  std::string whatsapp_access_token;
  std::string whatsapp_phone_number_id;
  std::string whatsapp_graph_base_url = "https://graph.facebook.com";
  std::string whatsapp_graph_api_version = "v23.0";
  // Hosts besides the Graph API's that media is fetched from with the token.
  std::vector<std::string> media_hosts = {"*.fbsbx.com", "*.fbcdn.net", "*.whatsapp.net"};
  std::string session_secret;  // SESSION_SECRET: salts derived agent user ids
  std::string ca_file;         // PEM bundle for outbound TLS; empty: system store
  bool transcribe_voice = true;  // --voice_input=transcribe (else stream)
  std::string stt_model = "scribe_v2";
  double agent_input_pace = 1;  // stream: 1 = real time, 0 = as fast as the agent takes it
  absl::Duration silence_tail_max = absl::Seconds(5);
  absl::Duration reply_timeout = absl::Seconds(60);
  absl::Duration reply_quiet_gap = absl::Seconds(3);
  absl::Duration reply_settle = absl::Seconds(1);
  absl::Duration agent_linger = absl::Seconds(5);
  absl::Duration delivery_budget = absl::Minutes(2);
  bool read_receipts = true;
  int turn_threads = 16;
  bool deliver_greeting = false;  // --agent_greeting=deliver
  absl::Duration greeting_wait = absl::Seconds(2);
};

// Endpoints: grpc=, metrics=.
class WorkerServer : public Service {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& opts);

  virtual std::string grpc_address() const = 0;
  virtual std::string metrics_address() const = 0;
};

}  // namespace bridge::media_worker
