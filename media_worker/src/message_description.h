// What the agent hears about WhatsApp content that is neither text nor a
// voice note (PROTOCOLS.md A2): images, documents, stickers, locations,
// contacts, button replies are described as text instead of refused, and
// reactions, edits and revokes become context. The agent decides what to say;
// the bridge only makes sure it knows what the user did.
#pragma once

#include <string>

#include "bridge/v1/events.pb.h"

namespace bridge::media_worker {

// The user_message for content the agent should answer: the button or list
// title as the user's words, else a bracketed description ("[The user sent
// an image with the caption: "…"]"). Empty for types that cannot be
// represented (unsupported, unknown): those get the polite fixed answer.
std::string DescribeForAgent(const ::bridge::v1::InboundMessage& m);

// The contextual_update for what is not a turn: a reaction, an edit or a
// revoke of a message that was already answered, a number change.
std::string ContextForAgent(const ::bridge::v1::InboundMessage& m);

}  // namespace bridge::media_worker
