#include "message_description.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace bridge::media_worker {
namespace {

namespace v1 = ::bridge::v1;

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

std::string Media(const char* what, const v1::InboundMessage& m) {
  std::string out = absl::StrCat("[The user sent ", what);
  if (!m.media().filename().empty()) absl::StrAppend(&out, " named ", Quoted(m.media().filename()));
  const std::string& caption = !m.media().caption().empty() ? m.media().caption() : m.text();
  if (!caption.empty()) {
    absl::StrAppend(&out, " with the caption: ", Quoted(caption));
  } else {
    absl::StrAppend(&out, " without a caption");
  }
  return absl::StrCat(out, ". You cannot see it.]");
}

std::string Location(const v1::Location& l) {
  std::string place = l.name();
  if (!l.address().empty()) place = place.empty() ? l.address() : absl::StrCat(place, ", ", l.address());
  return absl::StrFormat("[The user shared a location: %s(%.5f, %.5f).]",
                         place.empty() ? "" : place + " ", l.latitude(), l.longitude());
}

}  // namespace

std::string DescribeForAgent(const v1::InboundMessage& m) {
  switch (m.type()) {
    case v1::MESSAGE_TYPE_TEXT:
    case v1::MESSAGE_TYPE_INTERACTIVE:
    case v1::MESSAGE_TYPE_BUTTON:
      return m.text();  // what the user typed or tapped
    case v1::MESSAGE_TYPE_IMAGE:
      return Media("an image", m);
    case v1::MESSAGE_TYPE_VIDEO:
      return Media("a video", m);
    case v1::MESSAGE_TYPE_DOCUMENT:
      return Media("a document", m);
    case v1::MESSAGE_TYPE_AUDIO:
      return Media("an audio file", m);
    case v1::MESSAGE_TYPE_STICKER:
      return "[The user sent a sticker.]";
    case v1::MESSAGE_TYPE_LOCATION:
      return Location(m.location());
    case v1::MESSAGE_TYPE_CONTACTS:
      return absl::StrCat("[The user shared contact cards: ",
                          m.contact_names().empty() ? "unnamed"
                                                    : absl::StrJoin(m.contact_names(), ", "),
                          ".]");
    case v1::MESSAGE_TYPE_ORDER:
      return "[The user sent an order from the catalog.]";
    default:
      return "";
  }
}

std::string ContextForAgent(const v1::InboundMessage& m) {
  switch (m.type()) {
    case v1::MESSAGE_TYPE_REACTION:
      return m.text().empty()
                 ? "The user removed their reaction to one of your messages."
                 : absl::StrCat("The user reacted with ", m.text(), " to one of your messages.");
    case v1::MESSAGE_TYPE_EDIT:
      return absl::StrCat("The user edited an earlier message; it now reads: ", Quoted(m.text()),
                          ". Take the correction into account.");
    case v1::MESSAGE_TYPE_REVOKE:
      return "The user deleted one of their earlier messages; disregard it.";
    case v1::MESSAGE_TYPE_SYSTEM:
      return absl::StrCat("WhatsApp notice: ", m.text());
    default: {
      std::string d = DescribeForAgent(m);
      return d.empty() ? absl::StrCat("The user sent a ", m.type_name(), " message.") : d;
    }
  }
}

}  // namespace bridge::media_worker
