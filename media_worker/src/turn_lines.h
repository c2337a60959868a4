// The lines a turn adds to a conversation (TurnResult.lines: the transcript
// the controller keeps) and the "user: …" form in which the next agent
// conversation hears them (SessionAssignment.recent_transcript).
#pragma once

#include <string>

#include "absl/time/time.h"
#include "bridge/v1/events.pb.h"
#include "bridge/v1/types.pb.h"

namespace bridge::media_worker {

// WhatsApp's name for a message's type ("text", "audio", "image", …): the
// webhook's own when it carried one, so types this build does not know keep
// their name.
std::string ContentTypeOf(const ::bridge::v1::InboundMessage& m);

// The user's line for `m`, saying `text`, at the message's time (now when it
// has none).
::bridge::v1::TranscriptLine UserLine(const ::bridge::v1::InboundMessage& m,
                                      const std::string& text);

// A line for what was sent (or said) now.
::bridge::v1::TranscriptLine SentLine(::bridge::v1::Speaker speaker, const std::string& text,
                                      const std::string& message_id,
                                      const std::string& content_type);

// "user: …", "agent: …", "operator: …"; empty for SYSTEM lines (the bridge's
// own notes are not the conversation) and for lines without text.
std::string ContextLine(const ::bridge::v1::TranscriptLine& line);

}  // namespace bridge::media_worker
