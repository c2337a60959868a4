// bridgectl: the operator CLI over the bridge's gRPC APIs, and the codec
// tools that run exactly the worker's audio path.
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

namespace {

constexpr char kUsage[] = R"(bridgectl: operate a whatsapp-elevenlabs-bridge cluster

  bridgectl sessions                 list active sessions
  bridgectl session ID               one session
  bridgectl end ID                   end a session
  bridgectl workers                  list workers
  bridgectl drain WORKER_ID          drain a worker
  bridgectl talk IN.ogg --out R.ogg [--realtime]
                                     a Media.Converse round trip with a worker
                                     (--worker, or one the --controller picks)
  bridgectl audio info FILE.ogg [--json]
  bridgectl audio decode IN.ogg OUT.s16le --rate R
  bridgectl audio encode IN.s16le OUT.ogg --rate R [--bitrate B] [--complexity C]

Flags: --controller HOST:PORT, --worker HOST:PORT, --json, --reveal_ids)";

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
  bridge::bridgectl::SessionsCommandOptions opts{absl::GetFlag(FLAGS_controller),
                                         absl::GetFlag(FLAGS_json),
                                         absl::GetFlag(FLAGS_reveal_ids)};
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
