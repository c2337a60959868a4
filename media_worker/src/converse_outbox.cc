#include "converse_outbox.h"

namespace bridge::media_worker {

int Outbox::DropWhile(const std::function<bool(const OutItem&)>& scan) {
  int dropped = 0;
  for (size_t i = 0; i < items_.size() && scan(items_[i]);) {
    if (!items_[i].droppable) {
      ++i;
      continue;
    }
    audio_ -= items_[i].audio;
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
    ++dropped;
  }
  return dropped;
}

int Outbox::Push(OutItem item, absl::Time now) {
  item.queued_at = now;
  if (item.droppable) audio_ += item.audio;
  items_.push_back(std::move(item));
  return DropExpired(now) + DropOverCap();
}

// Items are queued in time order, so the expired ones are a prefix; the
// droppable ones among them usually lead it, which makes erasing cheap.
int Outbox::DropExpired(absl::Time now) {
  return DropWhile([&](const OutItem& item) { return now - item.queued_at > max_lag_; });
}

int Outbox::DropOverCap() {
  return DropWhile([this](const OutItem&) { return audio_ > max_audio_; });
}

std::optional<OutItem> Outbox::Pop(absl::Time now, int* dropped) {
  *dropped += DropExpired(now);
  if (items_.empty()) return std::nullopt;
  OutItem item = std::move(items_.front());
  items_.pop_front();
  if (item.droppable) audio_ -= item.audio;
  return item;
}

int Outbox::DropAudio() {
  return DropWhile([](const OutItem&) { return true; });
}

}  // namespace bridge::media_worker
