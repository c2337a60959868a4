#include "jitter_buffer.h"

#include <cmath>
#include <cstdlib>

namespace bridge::media_worker {
namespace {

constexpr int kClockRate = 48000;  // Opus's RTP clock, whatever the audio's rate
// A gap this long is not concealed frame by frame: the stream restarted or
// paused (a phone on hold), and we resume at what arrived.
constexpr int64_t kMaxConcealed = 25;  // 500 ms of 20 ms frames
// More held than this means the next packet is not coming: move on.
constexpr size_t kMaxHeld = 100;

}  // namespace

int64_t JitterBuffer::Extend(uint16_t sequence) {
  if (highest_ < 0) return sequence;
  const int16_t delta = static_cast<int16_t>(sequence - static_cast<uint16_t>(highest_));
  return highest_ + delta;
}

void JitterBuffer::Push(uint16_t sequence, uint32_t timestamp, absl::Span<const uint8_t> payload,
                        absl::Time arrival) {
  const int64_t ext = Extend(sequence);
  if (ext > highest_) highest_ = ext;
  // RFC 3550 A.8: transit time in clock units, smoothed |difference| / 16.
  // Arrival on the RTP clock, from the first packet (from the Unix epoch,
  // microseconds times 48000 would overflow).
  if (!have_transit_) first_arrival_ = arrival;
  const int64_t now_units = absl::ToInt64Microseconds(arrival - first_arrival_) * kClockRate / 1000000;
  const int64_t transit = now_units - static_cast<int64_t>(timestamp);
  if (have_transit_) {
    const double d = std::fabs(static_cast<double>(transit - last_transit_));
    stats_.jitter_seconds += (d / kClockRate - stats_.jitter_seconds) / 16.0;
  }
  have_transit_ = true;
  last_transit_ = transit;

  if (started_ && ext < next_) {
    ++stats_.late;
    return;
  }
  auto [it, fresh] = packets_.try_emplace(ext);
  if (!fresh) {
    ++stats_.duplicate;
    return;
  }
  ++stats_.received;
  it->second = Held{timestamp, std::vector<uint8_t>(payload.begin(), payload.end()), arrival};
}

std::optional<JitterFrame> JitterBuffer::Pop(absl::Time now) {
  if (packets_.empty()) return std::nullopt;
  auto first = packets_.begin();
  if (!started_) {
    started_ = true;
    next_ = first->first;
  }
  const int64_t gap = first->first - next_;
  if (gap > kMaxConcealed || packets_.size() > kMaxHeld) {
    stats_.lost += static_cast<uint64_t>(gap);
    next_ = first->first;
  } else if (gap > 0) {
    if (now < first->second.arrival + max_wait_) return std::nullopt;  // may still come
    JitterFrame lost;
    const uint32_t span = first->second.timestamp - last_timestamp_;
    lost.samples_48k = span > 0 && span / static_cast<uint32_t>(gap + 1) <= 5760
                           ? static_cast<int>(span / static_cast<uint32_t>(gap + 1))
                           : last_samples_;
    ++stats_.lost;
    if (gap == 1) {
      lost.kind = JitterFrame::Kind::kFec;
      lost.payload = first->second.payload;  // copied: the packet itself is still due
      ++stats_.recovered;
    } else {
      lost.kind = JitterFrame::Kind::kConceal;
    }
    last_timestamp_ += static_cast<uint32_t>(lost.samples_48k);
    ++next_;
    return lost;
  }
  JitterFrame frame;
  frame.kind = JitterFrame::Kind::kPacket;
  frame.payload = std::move(first->second.payload);
  frame.arrival = first->second.arrival;
  const uint32_t ts = first->second.timestamp;
  if (ts != last_timestamp_ && ts - last_timestamp_ <= 5760) {
    last_samples_ = static_cast<int>(ts - last_timestamp_);
  }
  last_timestamp_ = ts;
  packets_.erase(first);
  ++next_;
  return frame;
}

}  // namespace bridge::media_worker
