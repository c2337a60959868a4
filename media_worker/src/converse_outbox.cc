#include "converse_outbox.h"

namespace bridge::media_worker {

void Outbox::Erase(size_t index) {
  if (items_[index].droppable) audio_ -= items_[index].audio;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(index));
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
  int dropped = 0;
  for (size_t i = 0; i < items_.size() && now - items_[i].queued_at > max_lag_;) {
    if (items_[i].droppable) {
      Erase(i);
      ++dropped;
    } else {
      ++i;
    }
  }
  return dropped;
}

int Outbox::DropOverCap() {
  int dropped = 0;
  for (size_t i = 0; audio_ > max_audio_ && i < items_.size();) {
    if (items_[i].droppable) {
      Erase(i);
      ++dropped;
    } else {
      ++i;
    }
  }
  return dropped;
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
  int dropped = 0;
  for (size_t i = 0; i < items_.size();) {
    if (items_[i].droppable) {
      Erase(i);
      ++dropped;
    } else {
      ++i;
    }
  }
  return dropped;
}

}  // namespace bridge::media_worker
