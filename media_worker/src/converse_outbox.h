// The outgoing side of one Converse stream: messages waiting for the client,
// with the backpressure policy (bounded memory, never a blocked producer).
//
// Policy: agent audio is produced at the agent's pace, which is often faster
// than real time (a burst of a whole reply), so the queue may briefly hold
// more than a client plays at once; a fast reader drains such a burst at
// once. A client is slow when audio waits for it: audio queued longer than
// `max_lag` is dropped, oldest first, and so is the oldest audio while more
// than `max_audio` is queued (a hard cap for bursts). Only droppable audio
// goes: agent_text, transcripts, turn_end, interruption, error and the Ogg
// pages a stream cannot do without always stay. Dropping the oldest keeps
// the client closest to live. Not thread-safe: the stream's lock guards it.
#pragma once

#include <deque>
#include <functional>
#include <optional>

#include "absl/time/time.h"
#include "bridge/v1/media.pb.h"

namespace bridge::media_worker {

struct OutItem {
  ::bridge::v1::ConverseResponse msg;
  absl::Duration audio;                         // zero: not audio
  bool droppable = false;                       // only audio is ever droppable
  absl::Time queued_at;                         // for the lag bound
  absl::Time arrived_at = absl::InfinitePast(); // agent audio arrival (latency metric)
};

class Outbox {
 public:
  Outbox(absl::Duration max_lag, absl::Duration max_audio)
      : max_lag_(max_lag), max_audio_(max_audio) {}

  // Queues `item` (its queued_at is set to `now`); returns how many audio
  // items the policy dropped.
  int Push(OutItem item, absl::Time now);
  // The next item to write, after dropping audio that waited too long
  // (counted into *dropped).
  std::optional<OutItem> Pop(absl::Time now, int* dropped);
  // Drops every droppable item (an interruption makes queued audio stale).
  int DropAudio();

  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  absl::Duration queued_audio() const { return audio_; }

 private:
  int DropExpired(absl::Time now);
  int DropOverCap();
  // Scans from the oldest item while `scan(item)` holds, dropping the
  // droppable ones; returns how many it dropped.
  int DropWhile(const std::function<bool(const OutItem&)>& scan);

  const absl::Duration max_lag_, max_audio_;
  std::deque<OutItem> items_;
  absl::Duration audio_;  // of droppable items
};

}  // namespace bridge::media_worker
