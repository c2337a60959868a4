// RTP packets (RFC 3550) as a call carries them: read with CSRCs, header
// extensions and padding skipped; written with the fixed 12-byte header.
// No Debian library does just this (oRTP and GStreamer bring sessions and
// scheduling of their own); it is twelve bytes of layout.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"

namespace bridge::media_worker {

struct RtpPacket {
  uint8_t payload_type = 0;
  bool marker = false;
  uint16_t sequence = 0;
  uint32_t timestamp = 0;
  uint32_t ssrc = 0;
  absl::Span<const uint8_t> payload;  // into the parsed buffer
};

// nullopt: not RTP version 2, or lengths that do not add up.
std::optional<RtpPacket> ParseRtp(absl::Span<const uint8_t> packet);

// Header + payload, ready for SRTP.
std::vector<uint8_t> BuildRtp(const RtpPacket& header, absl::Span<const uint8_t> payload);

}  // namespace bridge::media_worker
