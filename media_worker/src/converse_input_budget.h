// How far ahead of real time a Converse client may push audio to the agent.
//
// The agent socket's send buffer is not visible through AgentSession, and an
// agent takes audio at about real time, so the budget is a token bucket of
// audio time: `burst` to start with (a recorded note may go at once), refilled
// at one second per second. Audio beyond it is dropped and counted, which
// bounds what one stream can pile up in front of the agent.
#pragma once

#include <algorithm>

#include "absl/time/time.h"

namespace bridge::media_worker {

class InputBudget {
 public:
  explicit InputBudget(absl::Duration burst) : burst_(burst), tokens_(burst) {}

  // True (and the audio is paid for) when `audio` fits at time `now`.
  bool Take(absl::Duration audio, absl::Time now) {
    if (last_ != absl::InfinitePast()) tokens_ = std::min(burst_, tokens_ + (now - last_));
    last_ = now;
    if (audio > tokens_) return false;
    tokens_ -= audio;
    return true;
  }

 private:
  const absl::Duration burst_;
  absl::Duration tokens_;
  absl::Time last_ = absl::InfinitePast();
};

}  // namespace bridge::media_worker
