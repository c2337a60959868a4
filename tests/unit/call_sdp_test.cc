// A call's SDP (media_worker/src/call_sdp.h) with a real Chromium offer and
// one shaped as PROTOCOLS.md A6 says Meta's are (tests/fixtures/sdp/README.md):
// what is read from them, the answer written back, and each refusal's reason.
#include "call_sdp.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bridge::media_worker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string Fixture(const std::string& name) {
  std::ifstream in(absl::StrCat(BRIDGE_SDP_FIXTURES_DIR, "/", name), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

SdpAnswerParams Ours() {
  SdpAnswerParams p;
  p.ice_ufrag = "Wk3d";
  p.ice_pwd = "b8c1e0f4a2d94c7e9f3a1b2c";
  p.fingerprint_sha256 =
      "11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00";
  p.candidates = {"candidate:1 1 udp 2130706431 203.0.113.7 40002 typ host",
                  "candidate:2 1 udp 1694498815 198.51.100.9 40002 typ srflx raddr 203.0.113.7 rport 40002"};
  p.origin_address = "203.0.113.7";
  return p;
}

TEST(CallSdpTest, ReadsChromiumsOffer) {
  auto offer = ParseSdpOffer(Fixture("chromium_156_offer.sdp"));
  ASSERT_TRUE(offer.ok()) << offer.status();
  EXPECT_FALSE(offer->ice_lite);  // full ICE: both sides check, we still control
  EXPECT_EQ(offer->ice_ufrag, "uNj5");
  EXPECT_EQ(offer->ice_pwd, "JUUwSf6Kx2FhAnWuDwDXN1j8");
  EXPECT_EQ(offer->mid, "0");
  EXPECT_EQ(offer->opus_payload_type, 111);
  EXPECT_EQ(offer->opus_fmtp, "minptime=10;useinbandfec=1");
  EXPECT_EQ(offer->telephone_event_payload_type, 126);  // the 8 kHz one, not 110 (48 kHz)
  EXPECT_EQ(offer->setup, DtlsSetup::kActpass);
  EXPECT_THAT(offer->fingerprint_sha256, StartsWith("2D:A2:9A:42"));
  ASSERT_EQ(offer->candidates.size(), 2u);
  EXPECT_THAT(offer->candidates[0], StartsWith("candidate:4186701226 1 udp"));
}

TEST(CallSdpTest, ReadsMetasOfferShape) {
  auto offer = ParseSdpOffer(Fixture("meta_shaped_offer.sdp"));
  ASSERT_TRUE(offer.ok()) << offer.status();
  EXPECT_TRUE(offer->ice_lite);  // we must be the controlling agent
  EXPECT_EQ(offer->mid, "audio");
  EXPECT_EQ(offer->opus_fmtp, "minptime=20;useinbandfec=1;maxplaybackrate=16000");
  // The SHA-1 fingerprint beside it is ignored (PROTOCOLS.md A6: SHA-256 only).
  EXPECT_THAT(offer->fingerprint_sha256, StartsWith("8E:2C:51"));
  EXPECT_EQ(offer->candidates.size(), 2u);
}

TEST(CallSdpTest, TheAnswerIsOpusOnlyWithEveryCandidateAndTheActiveRole) {
  auto offer = ParseSdpOffer(Fixture("chromium_156_offer.sdp"));
  ASSERT_TRUE(offer.ok());
  const std::string answer = BuildSdpAnswer(*offer, Ours());
  EXPECT_THAT(answer, HasSubstr("m=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=group:BUNDLE 0\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=mid:0\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=setup:active\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=rtcp-mux\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
  EXPECT_THAT(answer, HasSubstr("a=ice-ufrag:Wk3d\r\n"));
  EXPECT_THAT(answer, HasSubstr("typ srflx raddr 203.0.113.7"));
  EXPECT_THAT(answer, HasSubstr("a=end-of-candidates\r\n"));
  EXPECT_THAT(answer, Not(HasSubstr("ice-options:trickle")));  // every candidate is in it
  EXPECT_THAT(answer, Not(HasSubstr("G722")));
  // Chromium itself would accept it: it parses as an offer would.
  auto back = ParseSdpOffer(answer);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->setup, DtlsSetup::kActive);
  EXPECT_EQ(back->fingerprint_sha256, Ours().fingerprint_sha256);
}

TEST(CallSdpTest, FecIsAskedForWhenTheOfferDidNot) {
  std::string sdp = absl::StrReplaceAll(Fixture("meta_shaped_offer.sdp"),
                                        {{"minptime=20;useinbandfec=1;", "minptime=20;"}});
  auto offer = ParseSdpOffer(sdp);
  ASSERT_TRUE(offer.ok());
  EXPECT_THAT(BuildSdpAnswer(*offer, Ours()),
              HasSubstr("a=fmtp:111 minptime=20;maxplaybackrate=16000;useinbandfec=1\r\n"));
}

TEST(CallSdpTest, TheDtlsRoleFollowsTheOffer) {
  EXPECT_EQ(AnswerSetup(DtlsSetup::kActpass), DtlsSetup::kActive);
  EXPECT_EQ(AnswerSetup(DtlsSetup::kPassive), DtlsSetup::kActive);
  EXPECT_EQ(AnswerSetup(DtlsSetup::kActive), DtlsSetup::kPassive);
  std::string sdp = absl::StrReplaceAll(Fixture("meta_shaped_offer.sdp"),
                                        {{"a=setup:actpass", "a=setup:active"}});
  auto offer = ParseSdpOffer(sdp);
  ASSERT_TRUE(offer.ok());
  EXPECT_THAT(BuildSdpAnswer(*offer, Ours()), HasSubstr("a=setup:passive\r\n"));
}

// Each offer we cannot take is refused with the reason the reject carries.
TEST(CallSdpTest, OffersThatCannotBeAnsweredAreRefusedWithTheReason) {
  const std::string meta = Fixture("meta_shaped_offer.sdp");
  struct Case {
    std::string sdp;
    std::string reason;
  } cases[] = {
      {"", "v=0"},
      {"hello", "v=0"},
      {absl::StrReplaceAll(meta, {{"m=audio", "m=video"}}), "no audio section"},
      {absl::StrReplaceAll(meta, {{"UDP/TLS/RTP/SAVPF", "RTP/AVP"}}), "RTP/AVP"},
      {absl::StrReplaceAll(meta, {{"opus/48000/2", "PCMU/8000"}}), "no Opus"},
      {absl::StrReplaceAll(meta, {{"a=ice-ufrag:Q7Xk\r\n", ""}}), "ice-ufrag"},
      {absl::StrReplaceAll(meta, {{"a=fingerprint:sha-256", "a=fingerprint:sha-512"}}), "sha-256"},
      {absl::StrReplaceAll(meta, {{"8E:2C:51", "8E:2C"}}), "32 hex bytes"},
      {absl::StrReplaceAll(meta, {{"a=rtcp-mux\r\n", ""}}), "rtcp-mux"},
      {absl::StrReplaceAll(meta, {{"a=setup:actpass", "a=setup:holdconn"}}), "holdconn"},
      {absl::StrReplaceAll(meta, {{"a=rtpmap:126 telephone", "a=rtpmap:x telephone"}}), "rtpmap"},
      {"v=0\r\n" + std::string(70000, 'a'), "larger than"},
  };
  for (const Case& c : cases) {
    auto offer = ParseSdpOffer(c.sdp);
    ASSERT_FALSE(offer.ok()) << c.reason;
    EXPECT_TRUE(absl::IsInvalidArgument(offer.status()));
    EXPECT_THAT(offer.status().message(), HasSubstr(c.reason));
  }
}

}  // namespace
}  // namespace bridge::media_worker
