// bridgectl: the operator CLI over the bridge's gRPC APIs, and the codec
// tools that run exactly the worker's audio path.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "bridgectl/audio_command.h"
#include "bridgectl/sessions_command.h"
#include "bridgectl/talk_command.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:7000",
          "Controller gRPC target, or a comma list of them (whichever leads answers)");
ABSL_FLAG(std::string, worker, "", "Worker gRPC target (talk)");
ABSL_FLAG(bool, json, false, "Print JSON instead of tables");
ABSL_FLAG(bool, reveal_ids, false, "Show WhatsApp ids unmasked");
ABSL_FLAG(std::string, out, "", "talk: where to write the agent's reply (Ogg/Opus)");
ABSL_FLAG(bool, realtime, false, "talk: send the note at real-time pace");
ABSL_FLAG(std::string, phone_number_id, "",
          "transcript USER, forget USER: the business number the user wrote to");
ABSL_FLAG(std::string, operator_name, "",
          "takeover: who takes the conversation over (default: $USER)");

namespace {

constexpr char kUsage[] = R"(bridgectl: operate a whatsapp-elevenlabs-bridge cluster

  bridgectl sessions                 list active sessions
  bridgectl session ID               one session
  bridgectl end ID                   end a session
  bridgectl workers                  list workers
  bridgectl drain WORKER_ID          drain a worker
  bridgectl transcript ID            what was said in a session, with per-turn latency
  bridgectl transcript USER --phone_number_id P
                                     a user's exchanges across sessions (phone or BSUID)
  bridgectl takeover ID [--operator_name NAME]
                                     a person takes the conversation (the agent stops)
  bridgectl say ID TEXT              the person writes to the user as the business
  bridgectl handback ID              the agent takes the conversation again
  bridgectl forget USER --phone_number_id P
                                     erase a user: session, transcript, memory, queued
                                     turns, id links, their ElevenLabs conversations
  bridgectl talk IN.ogg --out R.ogg [--realtime]
                                     a Media.Converse round trip with a worker
                                     (--worker, or one the --controller picks)
  bridgectl audio info FILE.ogg [--json]
  bridgectl audio decode IN.ogg OUT.s16le --rate R
  bridgectl audio encode IN.s16le OUT.ogg --rate R [--bitrate B] [--complexity C]

Flags: --controller HOST:PORT, --worker HOST:PORT, --json, --reveal_ids,
       --phone_number_id P, --operator_name NAME)";

}  // namespace

int main(int argc, char** argv) {
  // `audio` takes its own options (--rate, --json...) that absl must not see.
  if (argc >= 2 && std::string(argv[1]) == "audio") {
    std::vector<std::string> args(argv + 2, argv + argc);
    return bridge::bridgectl::RunAudioCommand(args, std::cout, std::cerr);
  }
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cerr << kUsage << std::endl;
    return 2;
  }
  bridge::bridgectl::SessionsCommandOptions opts;
  opts.controller = absl::GetFlag(FLAGS_controller);
  opts.json = absl::GetFlag(FLAGS_json);
  opts.reveal_ids = absl::GetFlag(FLAGS_reveal_ids);
  opts.phone_number_id = absl::GetFlag(FLAGS_phone_number_id);
  opts.operator_name = absl::GetFlag(FLAGS_operator_name);
  if (opts.operator_name.empty()) {
    const char* user = std::getenv("USER");
    opts.operator_name = user != nullptr && *user != '\0' ? user : "operator";
  }
  if (args[0] == "talk") {
    if (args.size() != 2 || absl::GetFlag(FLAGS_out).empty()) {
      std::cerr << kUsage << std::endl;
      return 2;
    }
    bridge::bridgectl::TalkOptions talk;
    talk.in_path = args[1];
    talk.out_path = absl::GetFlag(FLAGS_out);
    talk.realtime = absl::GetFlag(FLAGS_realtime);
    talk.worker = absl::GetFlag(FLAGS_worker);
    talk.controller = absl::GetFlag(FLAGS_controller);
    return bridge::bridgectl::RunTalkCommand(talk, std::cout, std::cerr);
  }
  int rc = bridge::bridgectl::RunSessionsCommand(args, opts, std::cout, std::cerr);
  if (rc == 2) std::cerr << kUsage << std::endl;
  return rc;
}
