// Private to agent_session: the evidence that an agent reply is complete
// (PROTOCOLS.md B4). ElevenLabs sends no end-of-reply marker, so the session
// weighs, strongest first: the socket closed, an `end_call` tool response,
// the audio's `alignment` characters covering the whole `agent_response`
// text, and only then a quiet gap. This class holds the text and alignment
// side of that judgement, free of sockets and timers so it is easy to test.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "media_worker/agent_session.h"

namespace bridge::media_worker::agent_internal {

// Lower-case ASCII letters and digits plus every non-ASCII byte (UTF-8
// letters): what alignment and text agree on once whitespace, punctuation and
// case are set aside.
std::string NormalizeSpoken(absl::string_view text);

class ReplyEvidence {
 public:
  // An agent_response: one user turn may bring several; they add up.
  void AddText(absl::string_view agent_response);
  // agent_response_correction: the reply was cut; the text is what was said.
  void Correct(absl::string_view original, absl::string_view corrected);
  // The characters of one audio chunk's alignment, concatenated.
  void AddAligned(absl::string_view chars);
  void ToolRequested() { ++tools_running_; }
  void ToolResponded() {
    if (tools_running_ > 0) --tools_running_;
  }
  void Reset() { *this = ReplyEvidence(); }

  // Every character of the text so far has been spoken. False until some
  // text is known (agent_response may come after the audio).
  bool Covered() const;
  bool alignment_seen() const { return alignment_seen_; }
  bool tool_running() const { return tools_running_ > 0; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;     // as received, responses joined by a space
  std::string spoken_;   // text_ normalized: kept, not recomputed per audio chunk
  std::string aligned_;  // normalized
  bool alignment_seen_ = false;
  int tools_running_ = 0;
};

}  // namespace bridge::media_worker::agent_internal
