// OpusHead / OpusTags packets (RFC 7845 section 5) and the problem statuses
// the decoder returns. Private to the audio library.
#ifndef BRIDGE_AUDIO_SRC_OPUS_HEADER_H_
#define BRIDGE_AUDIO_SRC_OPUS_HEADER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "audio/ogg_opus_decoder.h"

namespace bridge::audio::internal {

// An error status that ProblemOf() maps back to `problem`.
absl::Status ProblemStatus(DecodeProblem problem, absl::string_view message);

bool HasPrefix(absl::Span<const uint8_t> data, absl::string_view prefix);

// Names the codec of an Ogg stream from its first packet ("Opus", "Vorbis",
// ...; "unknown" otherwise).
absl::string_view CodecName(absl::Span<const uint8_t> first_packet);

// Parses OpusHead into everything but StreamInfo::vendor.
absl::StatusOr<StreamInfo> ParseOpusHead(absl::Span<const uint8_t> packet);
// Checks OpusTags and returns its vendor string.
absl::StatusOr<std::string> ParseOpusTagsVendor(
    absl::Span<const uint8_t> packet);

std::string BuildOpusHead(const StreamInfo& info);
std::string BuildOpusTags(absl::string_view vendor);

}  // namespace bridge::audio::internal

#endif  // BRIDGE_AUDIO_SRC_OPUS_HEADER_H_
