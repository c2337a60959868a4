#include "rtp_packet.h"

namespace bridge::media_worker {
namespace {

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void Put32(uint8_t* p, uint32_t v) {
  Put16(p, static_cast<uint16_t>(v >> 16));
  Put16(p + 2, static_cast<uint16_t>(v));
}

}  // namespace

std::optional<RtpPacket> ParseRtp(absl::Span<const uint8_t> p) {
  if (p.size() < 12 || (p[0] >> 6) != 2) return std::nullopt;
  const bool padding = p[0] & 0x20, extension = p[0] & 0x10;
  size_t offset = 12 + 4 * size_t{p[0] & 0x0Fu};
  if (extension) {
    if (p.size() < offset + 4) return std::nullopt;
    offset += 4 + 4 * size_t{Be16(&p[offset + 2])};
  }
  size_t end = p.size();
  if (padding) {
    const size_t pad = p[end - 1];
    if (pad == 0 || pad > end) return std::nullopt;
    end -= pad;
  }
  if (offset > end) return std::nullopt;
  RtpPacket r;
  r.marker = p[1] & 0x80;
  r.payload_type = p[1] & 0x7F;
  r.sequence = Be16(&p[2]);
  r.timestamp = Be32(&p[4]);
  r.ssrc = Be32(&p[8]);
  r.payload = p.subspan(offset, end - offset);
  return r;
}

std::vector<uint8_t> BuildRtp(const RtpPacket& h, absl::Span<const uint8_t> payload) {
  std::vector<uint8_t> out(12 + payload.size());
  out[0] = 0x80;  // version 2, no padding, extension or CSRCs
  out[1] = static_cast<uint8_t>((h.marker ? 0x80 : 0) | (h.payload_type & 0x7F));
  Put16(&out[2], h.sequence);
  Put32(&out[4], h.timestamp);
  Put32(&out[8], h.ssrc);
  std::copy(payload.begin(), payload.end(), out.begin() + 12);
  return out;
}

}  // namespace bridge::media_worker
