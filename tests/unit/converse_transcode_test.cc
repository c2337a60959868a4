// The pure pieces of Media.Converse on the worker: the transcoders between
// the client's formats and the agent's PCM, the outgoing queue's
// backpressure policy and the input budget.
#include <cmath>

#include "audio/ogg_opus_decoder.h"
#include "audio/opus_packet.h"
#include "converse_input_budget.h"
#include "converse_outbox.h"
#include "converse_transcode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bridge::media_worker {
namespace {

std::vector<int16_t> Tone(int rate, double seconds, double hz = 440) {
  std::vector<int16_t> pcm(static_cast<size_t>(rate * seconds));
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * hz * i / rate));
  }
  return pcm;
}

std::string Bytes(const std::vector<int16_t>& pcm) {
  return std::string(reinterpret_cast<const char*>(pcm.data()), pcm.size() * 2);
}

// Feeds `pcm` in agent-sized chunks (250 ms) and ends the reply.
std::vector<AudioChunk> Reply(OutputTranscoder* t, const std::vector<int16_t>& pcm, int rate) {
  std::vector<AudioChunk> out;
  const size_t chunk = rate / 4;
  for (size_t off = 0; off < pcm.size(); off += chunk) {
    const size_t n = std::min(chunk, pcm.size() - off);
    EXPECT_TRUE(t->Push(absl::MakeConstSpan(pcm).subspan(off, n), &out).ok());
  }
  EXPECT_TRUE(t->EndReply(&out).ok());
  return out;
}

TEST(ConverseFormatTest, FormatsAndRates) {
  EXPECT_EQ(PcmRateOf(v1::AUDIO_FORMAT_PCM_24000), 24000);
  EXPECT_EQ(PcmRateOf(v1::AUDIO_FORMAT_OPUS), 0);
  EXPECT_TRUE(IsConverseFormat(v1::AUDIO_FORMAT_OGG_OPUS));
  EXPECT_FALSE(IsConverseFormat(v1::AUDIO_FORMAT_UNSPECIFIED));
  EXPECT_FALSE(InputTranscoder::Create(v1::AUDIO_FORMAT_UNSPECIFIED, 16000).ok());
  EXPECT_FALSE(OutputTranscoder::Create(v1::AUDIO_FORMAT_UNSPECIFIED, 16000, 24000).ok());
}

TEST(InputTranscoderTest, PcmIsResampledAndOddBytesWaitForTheNextMessage) {
  auto t = InputTranscoder::Create(v1::AUDIO_FORMAT_PCM_48000, 16000);
  ASSERT_TRUE(t.ok());
  const std::string all = Bytes(Tone(48000, 1.0));
  std::vector<int16_t> pcm;
  for (size_t off = 0; off < all.size(); off += 999) {  // odd sizes split samples
    ASSERT_TRUE((*t)->Push(all.substr(off, 999), &pcm).ok());
  }
  ASSERT_TRUE((*t)->Finish(&pcm).ok());
  EXPECT_EQ(pcm.size(), 16000u);
}

TEST(InputTranscoderTest, OpusPacketsDecodeAtTheAgentRate) {
  auto enc = audio::OpusPacketEncoder::Create(48000, 32000, 5);
  ASSERT_TRUE(enc.ok());
  auto t = InputTranscoder::Create(v1::AUDIO_FORMAT_OPUS, 16000);
  ASSERT_TRUE(t.ok());
  const std::vector<int16_t> tone = Tone(48000, 1.0);
  std::vector<int16_t> pcm;
  std::vector<uint8_t> packet;
  for (size_t off = 0; off < tone.size(); off += 960) {
    ASSERT_TRUE((*enc)->Encode(absl::MakeConstSpan(tone).subspan(off, 960), &packet).ok());
    ASSERT_TRUE((*t)->Push(std::string(packet.begin(), packet.end()), &pcm).ok());
  }
  ASSERT_TRUE((*t)->Push("", &pcm).ok());  // a lost packet is concealed
  ASSERT_TRUE((*t)->Finish(&pcm).ok());
  EXPECT_EQ(pcm.size(), 16000u + 320u);
  EXPECT_TRUE(absl::IsInvalidArgument((*t)->Push(std::string("\x03\x00", 2), &pcm)));  // not Opus
}

TEST(InputTranscoderTest, OpusAtARateLibopusLacksIsResampled) {
  auto t = InputTranscoder::Create(v1::AUDIO_FORMAT_OPUS, 22050);
  ASSERT_TRUE(t.ok());
  auto enc = audio::OpusPacketEncoder::Create(48000, 32000, 5);
  std::vector<int16_t> pcm;
  std::vector<uint8_t> packet;
  const std::vector<int16_t> tone = Tone(48000, 0.5);
  for (size_t off = 0; off < tone.size(); off += 960) {
    ASSERT_TRUE((*enc)->Encode(absl::MakeConstSpan(tone).subspan(off, 960), &packet).ok());
    ASSERT_TRUE((*t)->Push(std::string(packet.begin(), packet.end()), &pcm).ok());
  }
  ASSERT_TRUE((*t)->Finish(&pcm).ok());
  EXPECT_EQ(pcm.size(), 11025u);
}

TEST(InputTranscoderTest, OggBytesDecodeInAnyChunkingAndGarbageIsRefused) {
  auto out = OutputTranscoder::Create(v1::AUDIO_FORMAT_OGG_OPUS, 16000, 24000);
  ASSERT_TRUE(out.ok());
  std::string ogg;
  for (const AudioChunk& c : Reply(out->get(), Tone(16000, 2.0), 16000)) ogg += c.bytes;

  auto t = InputTranscoder::Create(v1::AUDIO_FORMAT_OGG_OPUS, 24000);
  ASSERT_TRUE(t.ok());
  std::vector<int16_t> pcm;
  for (size_t off = 0; off < ogg.size(); off += 100) {
    ASSERT_TRUE((*t)->Push(ogg.substr(off, 100), &pcm).ok());
  }
  ASSERT_TRUE((*t)->Finish(&pcm).ok());
  EXPECT_EQ(pcm.size(), 48000u);

  auto bad = InputTranscoder::Create(v1::AUDIO_FORMAT_OGG_OPUS, 16000);
  std::string junk(70000, 'x');
  absl::Status s = (*bad)->Push(junk, &pcm);
  if (s.ok()) s = (*bad)->Finish(&pcm);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
}

TEST(OutputTranscoderTest, PcmReplyHasTheExactResampledLength) {
  auto t = OutputTranscoder::Create(v1::AUDIO_FORMAT_PCM_24000, 16000, 24000);
  ASSERT_TRUE(t.ok());
  size_t samples = 0;
  for (const AudioChunk& c : Reply(t->get(), Tone(16000, 1.3), 16000)) samples += c.bytes.size() / 2;
  EXPECT_EQ(samples, 31200u);
  // A second reply after the first one's end is exact as well.
  samples = 0;
  for (const AudioChunk& c : Reply(t->get(), Tone(16000, 0.5), 16000)) samples += c.bytes.size() / 2;
  EXPECT_EQ(samples, 12000u);
}

TEST(OutputTranscoderTest, OpusGives20msPacketsCarryingRemaindersAcrossChunks) {
  auto t = OutputTranscoder::Create(v1::AUDIO_FORMAT_OPUS, 16000, 24000);
  ASSERT_TRUE(t.ok());
  // 1.01 s in 101 ms chunks: no chunk is a whole number of packets.
  const std::vector<int16_t> tone = Tone(16000, 1.01);
  std::vector<AudioChunk> out;
  for (size_t off = 0; off < tone.size(); off += 1616) {
    const size_t n = std::min<size_t>(1616, tone.size() - off);
    ASSERT_TRUE((*t)->Push(absl::MakeConstSpan(tone).subspan(off, n), &out).ok());
  }
  ASSERT_TRUE((*t)->EndReply(&out).ok());
  ASSERT_EQ(out.size(), 51u);  // 50.5 packets, the last padded
  auto dec = audio::OpusPacketDecoder::Create(48000);
  std::vector<int16_t> pcm;
  for (const AudioChunk& c : out) {
    EXPECT_EQ(c.duration, absl::Milliseconds(20));
    auto n = (*dec)->Decode({reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size()},
                            &pcm);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 960);
  }
}

TEST(OutputTranscoderTest, OggRepliesAreWholeStreamsAndAnInterruptedOneStillEnds) {
  auto t = OutputTranscoder::Create(v1::AUDIO_FORMAT_OGG_OPUS, 16000, 24000);
  ASSERT_TRUE(t.ok());
  std::vector<AudioChunk> out;
  ASSERT_TRUE((*t)->Push(Tone(16000, 3.0), &out).ok());
  ASSERT_FALSE(out.empty());
  EXPECT_FALSE(out[0].droppable);  // the headers
  ASSERT_TRUE((*t)->Interrupt(&out).ok());
  EXPECT_FALSE(out.back().droppable);  // the end page
  std::string first;
  for (const AudioChunk& c : out) first += c.bytes;
  auto pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(first.data()), first.size()},
                                  16000);
  ASSERT_TRUE(pcm.ok()) << pcm.status();
  EXPECT_EQ(pcm->size(), 48000u);

  std::string second;
  for (const AudioChunk& c : Reply(t->get(), Tone(16000, 1.0), 16000)) second += c.bytes;
  pcm = audio::DecodeOggOpus({reinterpret_cast<const uint8_t*>(second.data()), second.size()},
                             16000);
  ASSERT_TRUE(pcm.ok()) << pcm.status();
  EXPECT_EQ(pcm->size(), 16000u);
}

// ---- backpressure ----

OutItem Audio(absl::Duration d) {
  OutItem item;
  item.msg.set_audio("x");
  item.audio = d;
  item.droppable = true;
  return item;
}

OutItem Text(const std::string& text) {
  OutItem item;
  item.msg.set_agent_text(text);
  return item;
}

TEST(OutboxTest, ABurstWithinTheCapIsKeptForAFastReader) {
  Outbox box(absl::Seconds(2), absl::Seconds(30));
  const absl::Time t0 = absl::Now();
  int dropped = 0;
  for (int i = 0; i < 24; ++i) dropped += box.Push(Audio(absl::Milliseconds(250)), t0);
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(box.queued_audio(), absl::Seconds(6));
  for (int i = 0; i < 24; ++i) ASSERT_TRUE(box.Pop(t0 + absl::Milliseconds(10), &dropped));
  EXPECT_EQ(dropped, 0);
  EXPECT_TRUE(box.empty());
}

TEST(OutboxTest, AudioASlowReaderLeftWaitingGoesOldestFirstButNeverText) {
  Outbox box(absl::Seconds(2), absl::Seconds(30));
  const absl::Time t0 = absl::Now();
  box.Push(Audio(absl::Milliseconds(250)), t0);
  box.Push(Text("hello"), t0);
  box.Push(Audio(absl::Milliseconds(250)), t0 + absl::Seconds(1));
  // Three seconds on, the first audio has waited too long; the text stays.
  EXPECT_EQ(box.Push(Audio(absl::Milliseconds(250)), t0 + absl::Seconds(3)), 1);
  int dropped = 0;
  auto first = box.Pop(t0 + absl::Seconds(3), &dropped);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->msg.agent_text(), "hello");
  EXPECT_EQ(box.size(), 2u);
  // The reader comes back later still: everything queued by then is stale.
  EXPECT_FALSE(box.Pop(t0 + absl::Seconds(10), &dropped));
  EXPECT_EQ(dropped, 2);
}

TEST(OutboxTest, TheCapDropsTheOldestAudio) {
  Outbox box(absl::Seconds(2), absl::Seconds(1));
  const absl::Time t0 = absl::Now();
  OutItem first = Audio(absl::Milliseconds(500));
  first.msg.set_audio("first");
  box.Push(std::move(first), t0);
  box.Push(Text("t"), t0);
  box.Push(Audio(absl::Milliseconds(500)), t0);
  EXPECT_EQ(box.Push(Audio(absl::Milliseconds(500)), t0), 1);
  EXPECT_EQ(box.queued_audio(), absl::Seconds(1));
  int dropped = 0;
  EXPECT_TRUE(box.Pop(t0, &dropped)->msg.has_agent_text());  // "first" went
}

TEST(OutboxTest, InterruptionDropsQueuedAudioOnly) {
  Outbox box(absl::Seconds(2), absl::Seconds(30));
  const absl::Time t0 = absl::Now();
  box.Push(Audio(absl::Milliseconds(250)), t0);
  OutItem header = Audio(absl::ZeroDuration());
  header.droppable = false;  // an Ogg header page
  box.Push(std::move(header), t0);
  box.Push(Text("t"), t0);
  box.Push(Audio(absl::Milliseconds(250)), t0);
  EXPECT_EQ(box.DropAudio(), 2);
  EXPECT_EQ(box.size(), 2u);
  EXPECT_EQ(box.queued_audio(), absl::ZeroDuration());
}

TEST(InputBudgetTest, ABurstThenRealTime) {
  InputBudget budget(absl::Seconds(10));
  const absl::Time t0 = absl::Now();
  EXPECT_TRUE(budget.Take(absl::Seconds(8), t0));      // a recorded note at once
  EXPECT_FALSE(budget.Take(absl::Seconds(3), t0));     // beyond the lead
  EXPECT_TRUE(budget.Take(absl::Seconds(2), t0));
  EXPECT_TRUE(budget.Take(absl::Seconds(1), t0 + absl::Seconds(1)));  // refilled in real time
  EXPECT_TRUE(budget.Take(absl::Seconds(10), t0 + absl::Seconds(60)));  // capped at the burst
  EXPECT_FALSE(budget.Take(absl::Milliseconds(100), t0 + absl::Seconds(60)));
}

}  // namespace
}  // namespace bridge::media_worker
