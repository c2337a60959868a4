#include "opus_header.h"

#include <array>
#include <cstring>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace bridge::audio {
namespace {

constexpr absl::string_view kProblemPayloadUrl = "bridge.audio/DecodeProblem";

constexpr std::array<std::pair<DecodeProblem, absl::string_view>, 7> kNames = {{
    {DecodeProblem::kNone, "none"},
    {DecodeProblem::kNotOgg, "not_ogg"},
    {DecodeProblem::kNotOpus, "not_opus"},
    {DecodeProblem::kBadHeader, "bad_header"},
    {DecodeProblem::kTruncated, "truncated"},
    {DecodeProblem::kCorrupt, "corrupt"},
    {DecodeProblem::kUnsupported, "unsupported"},
}};

uint16_t Le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t Le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
         uint32_t(p[3]) << 24;
}
void PutLe16(std::string* s, uint16_t v) {
  s->push_back(char(v & 0xff));
  s->push_back(char(v >> 8));
}
void PutLe32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(char((v >> (8 * i)) & 0xff));
}

absl::Status BadHeader(absl::string_view what) {
  return internal::ProblemStatus(DecodeProblem::kBadHeader,
                                 absl::StrCat("bad Opus header: ", what));
}

}  // namespace

absl::string_view DecodeProblemName(DecodeProblem problem) {
  for (const auto& [p, name] : kNames) {
    if (p == problem) return name;
  }
  return "unknown";
}

DecodeProblem ProblemOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kProblemPayloadUrl);
  if (status.ok() || !payload) return DecodeProblem::kNone;
  for (const auto& [p, name] : kNames) {
    if (*payload == name) return p;
  }
  return DecodeProblem::kNone;
}

namespace internal {

absl::Status ProblemStatus(DecodeProblem problem, absl::string_view message) {
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
  if (problem == DecodeProblem::kTruncated ||
      problem == DecodeProblem::kCorrupt) {
    code = absl::StatusCode::kDataLoss;
  } else if (problem == DecodeProblem::kUnsupported) {
    code = absl::StatusCode::kUnimplemented;
  }
  absl::Status status(code, message);
  status.SetPayload(kProblemPayloadUrl, absl::Cord(DecodeProblemName(problem)));
  return status;
}

bool HasPrefix(absl::Span<const uint8_t> data, absl::string_view prefix) {
  return data.size() >= prefix.size() &&
         std::memcmp(data.data(), prefix.data(), prefix.size()) == 0;
}

absl::string_view CodecName(absl::Span<const uint8_t> first_packet) {
  static constexpr std::pair<absl::string_view, absl::string_view> kMagic[] = {
      {"OpusHead", "Opus"},
      {"\x01vorbis", "Vorbis"},
      {"Speex   ", "Speex"},
      {"\x7f"
       "FLAC",
       "FLAC"},
      {"fLaC", "FLAC"},
      {"\x80theora", "Theora"},
      {"fishead", "Skeleton"},
      {"\x80kate", "Kate"},
  };
  for (const auto& [magic, name] : kMagic) {
    if (HasPrefix(first_packet, magic)) return name;
  }
  return "unknown";
}

absl::StatusOr<StreamInfo> ParseOpusHead(absl::Span<const uint8_t> p) {
  if (!HasPrefix(p, "OpusHead")) return BadHeader("OpusHead missing");
  if (p.size() < 19) return BadHeader("OpusHead shorter than 19 bytes");
  // Minor versions (0..15) stay compatible; a new major version may not be.
  if (p[8] > 15) {
    return ProblemStatus(DecodeProblem::kUnsupported,
                         absl::StrCat("OpusHead version ", p[8]));
  }
  StreamInfo info;
  info.channels = p[9];
  info.pre_skip = Le16(&p[10]);
  info.input_rate = Le32(&p[12]);
  info.output_gain_q8 = int16_t(Le16(&p[16]));
  info.mapping_family = p[18];
  if (info.channels == 0) return BadHeader("OpusHead has 0 channels");
  if (info.mapping_family != 0) {
    // Families 1 and 255 need the multistream decoder and a channel map;
    // voice notes are never coded that way.
    return ProblemStatus(
        DecodeProblem::kUnsupported,
        absl::StrCat("Opus channel mapping family ", info.mapping_family, " (",
                     info.channels, " channels) is not supported"));
  }
  if (info.channels > 2) {
    return BadHeader(absl::StrCat("channel mapping family 0 with ",
                                  info.channels, " channels"));
  }
  return info;
}

absl::StatusOr<std::string> ParseOpusTagsVendor(absl::Span<const uint8_t> p) {
  if (!HasPrefix(p, "OpusTags")) return BadHeader("OpusTags missing");
  if (p.size() < 16) return BadHeader("OpusTags shorter than 16 bytes");
  const uint32_t vendor_len = Le32(&p[8]);
  if (vendor_len > p.size() - 16) {
    return BadHeader("OpusTags vendor string overruns the packet");
  }
  return std::string(reinterpret_cast<const char*>(&p[12]), vendor_len);
}

std::string BuildOpusHead(const StreamInfo& info) {
  std::string s = "OpusHead";
  s.push_back(1);  // version
  s.push_back(char(info.channels));
  PutLe16(&s, info.pre_skip);
  PutLe32(&s, info.input_rate);
  PutLe16(&s, uint16_t(info.output_gain_q8));
  s.push_back(char(info.mapping_family));
  return s;
}

std::string BuildOpusTags(absl::string_view vendor) {
  std::string s = "OpusTags";
  PutLe32(&s, uint32_t(vendor.size()));
  s.append(vendor.data(), vendor.size());
  PutLe32(&s, 0);  // no user comments
  return s;
}

}  // namespace internal
}  // namespace bridge::audio
