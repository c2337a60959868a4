#include "turn_lines.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace bridge::media_worker {
namespace {

namespace v1 = ::bridge::v1;

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t micros = absl::ToUnixMicros(t);
  out->set_seconds(micros / 1000000);
  out->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
}

}  // namespace

std::string ContentTypeOf(const v1::InboundMessage& m) {
  if (!m.type_name().empty()) return m.type_name();
  if (m.type() == v1::MESSAGE_TYPE_UNSPECIFIED) return "";
  // MESSAGE_TYPE_REQUEST_WELCOME -> "request_welcome", as WhatsApp spells them.
  return absl::AsciiStrToLower(absl::StripPrefix(v1::MessageType_Name(m.type()), "MESSAGE_TYPE_"));
}

v1::TranscriptLine UserLine(const v1::InboundMessage& m, const std::string& text) {
  v1::TranscriptLine line;
  line.set_speaker(v1::SPEAKER_USER);
  line.set_text(text);
  line.set_message_id(m.message_id());
  line.set_content_type(ContentTypeOf(m));
  SetTime(m.timestamp() > 0 ? absl::FromUnixSeconds(m.timestamp()) : absl::Now(),
          line.mutable_at());
  return line;
}

v1::TranscriptLine SentLine(v1::Speaker speaker, const std::string& text,
                            const std::string& message_id, const std::string& content_type) {
  v1::TranscriptLine line;
  line.set_speaker(speaker);
  line.set_text(text);
  line.set_message_id(message_id);
  line.set_content_type(content_type);
  SetTime(absl::Now(), line.mutable_at());
  return line;
}

std::string ContextLine(const v1::TranscriptLine& line) {
  if (line.text().empty()) return "";
  switch (line.speaker()) {
    case v1::SPEAKER_USER:
      return absl::StrCat("user: ", line.text());
    case v1::SPEAKER_AGENT:
      return absl::StrCat("agent: ", line.text());
    case v1::SPEAKER_OPERATOR:
      return absl::StrCat("operator: ", line.text());
    default:
      return "";
  }
}

}  // namespace bridge::media_worker
