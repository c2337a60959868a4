// `bridgectl talk IN.ogg --out REPLY.ogg [--realtime]`: one Media.Converse
// round trip from a voice note. The note is checked with the worker's own
// decoder first, streamed as OGG_OPUS (at real-time pace with --realtime,
// judged from its decoded duration), then end_of_input; the reply comes back
// as OGG_OPUS and is written to REPLY.ogg as it arrives. The user transcript
// and the agent's text are printed.
#pragma once

#include <ostream>
#include <string>

#include "absl/time/time.h"

namespace bridge::bridgectl {

struct TalkOptions {
  std::string in_path;
  std::string out_path;
  bool realtime = false;
  std::string worker;      // gRPC target; empty: a serving worker from the controller
  std::string controller;  // gRPC target for Sessions.ListWorkers
  absl::Duration reply_timeout = absl::Minutes(2);  // on top of the note's own length
};

// Returns the exit code: 0 a reply was written, 1 a one-line reason on `err`
// (bad input file, no worker, worker unreachable, agent refused, no reply).
int RunTalkCommand(const TalkOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace bridge::bridgectl
