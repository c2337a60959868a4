// The caller's RTP packets back in order for a machine listener (the agent's
// speech recognition, not an ear): a packet that is next in sequence goes
// out the moment it arrives, so an in-order stream waits for nothing. Only a
// gap waits, up to `max_wait` for the missing packet (reordering); then the
// frame is rebuilt from the next packet's in-band FEC when that packet is
// here, else concealed (Opus PLC). Counts what RTCP receiver reports count:
// received, lost, late and duplicate packets, and interarrival jitter
// (RFC 3550 A.8). Not thread-safe: one call's media thread drives it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace bridge::media_worker {

struct JitterFrame {
  enum class Kind { kPacket, kFec, kConceal };
  Kind kind = Kind::kPacket;
  // kPacket: the packet; kFec: the packet after the lost one.
  std::vector<uint8_t> payload;
  int samples_48k = 960;  // kFec/kConceal: the lost frame's length
  absl::Time arrival;     // kPacket: when it arrived
};

struct JitterStats {
  uint64_t received = 0;
  uint64_t lost = 0;       // never arrived in time (rebuilt or concealed)
  uint64_t recovered = 0;  // of those, rebuilt from FEC
  uint64_t late = 0;       // arrived after their frame was given up
  uint64_t duplicate = 0;
  double jitter_seconds = 0;
};

class JitterBuffer {
 public:
  explicit JitterBuffer(absl::Duration max_wait) : max_wait_(max_wait) {}

  void Push(uint16_t sequence, uint32_t timestamp, absl::Span<const uint8_t> payload,
            absl::Time arrival);
  // The next frame in order, if one is due at `now`.
  std::optional<JitterFrame> Pop(absl::Time now);
  const JitterStats& stats() const { return stats_; }
  size_t buffered() const { return packets_.size(); }

 private:
  struct Held {
    uint32_t timestamp;
    std::vector<uint8_t> payload;
    absl::Time arrival;
  };
  int64_t Extend(uint16_t sequence);

  const absl::Duration max_wait_;
  std::map<int64_t, Held> packets_;  // by extended sequence number
  bool started_ = false;
  int64_t next_ = 0;            // the extended sequence number due next
  int64_t highest_ = -1;        // highest extended sequence number seen
  uint32_t last_timestamp_ = 0; // of the last frame given out
  int last_samples_ = 960;      // its length on the 48 kHz clock
  bool have_transit_ = false;
  absl::Time first_arrival_;
  int64_t last_transit_ = 0;
  JitterStats stats_;
};

}  // namespace bridge::media_worker
