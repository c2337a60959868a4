// libFuzzer target: a call's receive path after SRTP (media_worker/src/
// rtp_packet.h, jitter_buffer.h, Opus decode with FEC and concealment). The
// packets come from the caller's phone: any order, any sequence numbers and
// timestamps, any payload. The input is a run of packets, each a 1-byte
// arrival delay (ms), a 2-byte length and that many bytes. Whatever arrives,
// frames come out in order, the buffer stays bounded, and recovered <= lost.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "audio/opus_packet.h"
#include "jitter_buffer.h"
#include "rtp_packet.h"

using bridge::media_worker::JitterBuffer;
using bridge::media_worker::JitterFrame;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  JitterBuffer jb(absl::Milliseconds(40));
  auto decoder = bridge::audio::OpusPacketDecoder::Create(16000);
  if (!decoder.ok()) abort();
  std::vector<int16_t> pcm;
  absl::Time now = absl::FromUnixSeconds(1);
  size_t at = 0;
  while (at + 3 <= size) {
    now += absl::Milliseconds(data[at]);
    const size_t len = static_cast<size_t>(data[at + 1]) << 8 | data[at + 2];
    at += 3;
    if (at + len > size) break;
    auto rtp = bridge::media_worker::ParseRtp(absl::MakeConstSpan(data + at, len));
    at += len;
    if (!rtp) continue;
    if (rtp->payload.size() > len) abort();
    jb.Push(rtp->sequence, rtp->timestamp, rtp->payload, now);
    while (auto f = jb.Pop(now)) {
      pcm.clear();
      switch (f->kind) {
        case JitterFrame::Kind::kPacket:
          (void)(*decoder)->Decode(f->payload, &pcm);
          break;
        case JitterFrame::Kind::kFec:
          (void)(*decoder)->DecodeFec(f->payload, f->samples_48k / 3, &pcm);
          break;
        case JitterFrame::Kind::kConceal:
          (void)(*decoder)->Conceal(f->samples_48k / 3, &pcm);
          break;
      }
    }
    if (jb.buffered() > 101) abort();
  }
  if (jb.stats().recovered > jb.stats().lost) abort();
  return 0;
}
