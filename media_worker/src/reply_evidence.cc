#include "reply_evidence.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bridge::media_worker {

const char* ReplyEndName(ReplyEnd end) {
  switch (end) {
    case ReplyEnd::kClosed: return "closed";
    case ReplyEnd::kEndCall: return "end_call";
    case ReplyEnd::kAligned: return "aligned";
    case ReplyEnd::kMarker: return "marker";
    case ReplyEnd::kQuietGap: return "quiet_gap";
  }
  return "unknown";
}

namespace agent_internal {
namespace {

// How many trailing characters of the text the alignment must end with: long
// enough that a repeated word mid-reply does not pass for the end.
constexpr size_t kTailChars = 16;
// Characters the alignment may lack overall (a dropped symbol the voice does
// not speak, such as an emoji or a markdown mark that survived normalizing).
constexpr size_t kSlackChars = 2;

}  // namespace

std::string NormalizeSpoken(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      if (absl::ascii_isalnum(lead)) out.push_back(absl::ascii_tolower(text[i]));
      ++i;
      continue;
    }
    const size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    // Not spoken: emoji and other supplementary-plane symbols (F0..F4) and
    // U+2000..U+2FFF (dashes, quotes, ellipsis, arrows, dingbats: E2 ..).
    const bool symbol = lead >= 0xF0 || lead == 0xE2;
    if (!symbol) out.append(text.data() + i, std::min(len, text.size() - i));
    i += len;
  }
  return out;
}

void ReplyEvidence::AddText(absl::string_view agent_response) {
  if (agent_response.empty()) return;
  absl::StrAppend(&text_, text_.empty() ? "" : " ", agent_response);
  spoken_ += NormalizeSpoken(agent_response);
}

void ReplyEvidence::Correct(absl::string_view original, absl::string_view corrected) {
  const size_t at =
      original.empty() ? std::string::npos : text_.rfind(original.data(), std::string::npos, original.size());
  if (at == std::string::npos) {
    text_ = std::string(corrected);  // the correction names the whole reply
  } else {
    text_.replace(at, original.size(), corrected.data(), corrected.size());
  }
  spoken_ = NormalizeSpoken(text_);
}

void ReplyEvidence::AddAligned(absl::string_view chars) {
  alignment_seen_ = true;
  aligned_ += NormalizeSpoken(chars);
}

bool ReplyEvidence::Covered() const {
  const std::string& text = spoken_;
  if (text.empty() || aligned_.size() + kSlackChars < text.size()) return false;
  // Text-to-speech may spell out what the text abbreviates, so the alignment
  // can be longer; its end must still be the text's end.
  const absl::string_view tail =
      absl::string_view(text).substr(text.size() - std::min(kTailChars, text.size()));
  return absl::EndsWith(aligned_, tail);
}

}  // namespace agent_internal
}  // namespace bridge::media_worker
