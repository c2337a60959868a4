#include "jitter_buffer.h"

#include <vector>

#include "gtest/gtest.h"
#include "rtp_packet.h"

namespace bridge::media_worker {
namespace {

using Kind = JitterFrame::Kind;
const absl::Time t0 = absl::FromUnixSeconds(1000);
const absl::Duration kWait = absl::Milliseconds(40);

void Push(JitterBuffer& jb, uint16_t seq, absl::Time at) {
  const uint8_t payload[] = {static_cast<uint8_t>(seq)};
  jb.Push(seq, static_cast<uint32_t>(seq) * 960, payload, at);
}

std::vector<Kind> PopAll(JitterBuffer& jb, absl::Time now) {
  std::vector<Kind> out;
  while (auto f = jb.Pop(now)) out.push_back(f->kind);
  return out;
}

TEST(JitterBufferTest, AnInOrderPacketGoesOutTheMomentItArrives) {
  JitterBuffer jb(kWait);
  Push(jb, 10, t0);
  auto f = jb.Pop(t0);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->kind, Kind::kPacket);
  EXPECT_EQ(f->payload, std::vector<uint8_t>{10});
  EXPECT_EQ(f->arrival, t0);
  EXPECT_FALSE(jb.Pop(t0).has_value());
}

TEST(JitterBufferTest, AReorderedPacketIsWaitedForThenPlayedInOrder) {
  JitterBuffer jb(kWait);
  Push(jb, 1, t0);
  ASSERT_EQ(PopAll(jb, t0).size(), 1u);
  Push(jb, 3, t0 + absl::Milliseconds(20));
  EXPECT_TRUE(PopAll(jb, t0 + absl::Milliseconds(30)).empty()) << "2 may still come";
  Push(jb, 2, t0 + absl::Milliseconds(35));
  EXPECT_EQ(PopAll(jb, t0 + absl::Milliseconds(35)), (std::vector<Kind>{Kind::kPacket, Kind::kPacket}));
  EXPECT_EQ(jb.stats().lost, 0u);
}

TEST(JitterBufferTest, OneLostPacketIsRebuiltFromTheNextOnesFec) {
  JitterBuffer jb(kWait);
  Push(jb, 1, t0);
  PopAll(jb, t0);
  Push(jb, 3, t0 + absl::Milliseconds(40));
  EXPECT_EQ(PopAll(jb, t0 + absl::Milliseconds(80)), (std::vector<Kind>{Kind::kFec, Kind::kPacket}));
  EXPECT_EQ(jb.stats().lost, 1u);
  EXPECT_EQ(jb.stats().recovered, 1u);
  Push(jb, 2, t0 + absl::Milliseconds(90));
  EXPECT_EQ(jb.stats().late, 1u) << "given up on, then arrived";
}

TEST(JitterBufferTest, TwoLostPacketsAreConcealedThenRebuilt) {
  JitterBuffer jb(kWait);
  Push(jb, 1, t0);
  PopAll(jb, t0);
  Push(jb, 4, t0 + absl::Milliseconds(60));
  EXPECT_EQ(PopAll(jb, t0 + absl::Milliseconds(100)),
            (std::vector<Kind>{Kind::kConceal, Kind::kFec, Kind::kPacket}));
  EXPECT_EQ(jb.stats().lost, 2u);
}

TEST(JitterBufferTest, DuplicatesAreDroppedAndCounted) {
  JitterBuffer jb(kWait);
  Push(jb, 7, t0);
  Push(jb, 7, t0);
  EXPECT_EQ(PopAll(jb, t0).size(), 1u);
  EXPECT_EQ(jb.stats().duplicate, 1u);
  EXPECT_EQ(jb.stats().received, 1u);
}

TEST(JitterBufferTest, SequenceNumbersWrapAround) {
  JitterBuffer jb(kWait);
  for (uint16_t s : {uint16_t{65534}, uint16_t{65535}, uint16_t{0}, uint16_t{1}}) Push(jb, s, t0);
  EXPECT_EQ(PopAll(jb, t0).size(), 4u);
  EXPECT_EQ(jb.stats().lost, 0u);
}

TEST(JitterBufferTest, ALongGapIsSkippedNotConcealedFrameByFrame) {
  JitterBuffer jb(kWait);
  Push(jb, 1, t0);
  PopAll(jb, t0);
  Push(jb, 500, t0 + absl::Seconds(10));
  EXPECT_EQ(PopAll(jb, t0 + absl::Seconds(10)), (std::vector<Kind>{Kind::kPacket}));
  EXPECT_EQ(jb.stats().lost, 498u);
}

TEST(JitterBufferTest, JitterFollowsUnevenArrival) {
  JitterBuffer even(kWait), uneven(kWait);
  for (uint16_t s = 0; s < 50; ++s) {
    Push(even, s, t0 + absl::Milliseconds(20 * s));
    Push(uneven, s, t0 + absl::Milliseconds(20 * s + (s % 2 ? 15 : 0)));
  }
  EXPECT_LT(even.stats().jitter_seconds, 0.001);
  EXPECT_GT(uneven.stats().jitter_seconds, 0.010);
}

TEST(RtpPacketTest, HeaderExtensionsCsrcsAndPaddingAreSkipped) {
  RtpPacket h;
  h.payload_type = 111;
  h.sequence = 4242;
  h.timestamp = 123456;
  h.ssrc = 0xdeadbeef;
  const uint8_t payload[] = {1, 2, 3};
  std::vector<uint8_t> p = BuildRtp(h, payload);
  auto r = ParseRtp(p);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->sequence, 4242);
  EXPECT_EQ(r->timestamp, 123456u);
  EXPECT_EQ(r->ssrc, 0xdeadbeefu);
  EXPECT_EQ(std::vector<uint8_t>(r->payload.begin(), r->payload.end()), std::vector<uint8_t>({1, 2, 3}));
  // One CSRC, a one-word extension, two bytes of padding.
  std::vector<uint8_t> q = {0xB1, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7,
                            0xBE, 0xDE, 0, 1, 0x10, 0xff, 0, 0, 5, 6, 0, 2};
  r = ParseRtp(q);
  ASSERT_TRUE(r);
  EXPECT_EQ(std::vector<uint8_t>(r->payload.begin(), r->payload.end()), std::vector<uint8_t>({5, 6}));
  q.back() = 40;  // padding longer than the packet
  EXPECT_FALSE(ParseRtp(q));
  EXPECT_FALSE(ParseRtp(std::vector<uint8_t>(11, 0x80)));
}

}  // namespace
}  // namespace bridge::media_worker
