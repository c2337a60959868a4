// libFuzzer target: a call's SDP offer (media_worker/src/call_sdp.h) comes
// from the caller's phone through Meta, so it is input we do not control. An
// offer parses or is refused with a reason; one that parses can be answered,
// and our answer parses again as an offer would, with the same codec.
#include <cstdint>
#include <cstdlib>

#include "call_sdp.h"

using bridge::media_worker::BuildSdpAnswer;
using bridge::media_worker::ParseSdpOffer;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto offer = ParseSdpOffer(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!offer.ok()) return 0;
  bridge::media_worker::SdpAnswerParams ours;
  ours.ice_ufrag = "abcd";
  ours.ice_pwd = "0123456789abcdefghijkl";
  ours.fingerprint_sha256 =
      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";
  ours.candidates = {"candidate:1 1 udp 2122260223 192.0.2.1 40000 typ host"};
  auto again = ParseSdpOffer(BuildSdpAnswer(*offer, ours));
  if (!again.ok() || again->opus_payload_type != offer->opus_payload_type) abort();
  return 0;
}
