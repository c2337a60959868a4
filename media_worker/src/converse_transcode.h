// Media.Converse audio formats to and from the agent's PCM (s16le mono at the
// rates the agent's metadata names). Not thread-safe: each stream runs its
// input and its output transcoder on its own serial work queue.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bridge/v1/media.pb.h"

namespace bridge::media_worker {

namespace v1 = ::bridge::v1;

// 16000, 24000, 48000 for the PCM formats; 0 for the others.
int PcmRateOf(v1::AudioFormat format);
// The formats a stream may ask for (everything but UNSPECIFIED).
bool IsConverseFormat(v1::AudioFormat format);

// Client audio -> agent PCM. PCM is resampled (an odd trailing byte waits for
// the next message); OPUS is one raw packet per message, decoded at the
// agent rate when libopus can (else at 48 kHz, then resampled), an empty
// packet counting as lost (concealed); OGG_OPUS is a byte stream of any
// chunking, decoded as it arrives.
class InputTranscoder {
 public:
  static absl::StatusOr<std::unique_ptr<InputTranscoder>> Create(v1::AudioFormat format,
                                                                 int agent_rate);
  virtual ~InputTranscoder() = default;
  // One `audio` message; appends agent PCM. InvalidArgument when the bytes
  // are not in the format (the stream cannot go on sensibly).
  virtual absl::Status Push(const std::string& bytes, std::vector<int16_t>* pcm) = 0;
  // End of input: appends what the resampler/decoder still holds. Once.
  virtual absl::Status Finish(std::vector<int16_t>* pcm) = 0;
};

// One `audio` response's payload.
struct AudioChunk {
  std::string bytes;
  absl::Duration duration;  // audio it carries (zero for Ogg header pages)
  // False for Ogg header and end pages: dropping those breaks the stream,
  // while a dropped data page is only a gap (decoders conceal it).
  bool droppable = true;
};

// Agent PCM -> the client's output format, forwarded as it comes: PCM is
// resampled per agent chunk; OPUS is resampled to 48 kHz and cut into 20 ms
// packets (the remainder carried to the next chunk); OGG_OPUS gives pages as
// the encoder fills them, one Ogg stream per reply (ended at the reply's
// end, so consecutive replies form a chained Ogg file).
class OutputTranscoder {
 public:
  static absl::StatusOr<std::unique_ptr<OutputTranscoder>> Create(v1::AudioFormat format,
                                                                  int agent_rate,
                                                                  int bitrate_bps);
  virtual ~OutputTranscoder() = default;
  virtual absl::Status Push(absl::Span<const int16_t> pcm, std::vector<AudioChunk>* out) = 0;
  // The reply ended: emits everything held (resampler tail, the last Opus
  // frame padded with silence, the Ogg end-of-stream page).
  virtual absl::Status EndReply(std::vector<AudioChunk>* out) = 0;
  // The user cut in: forgets held audio. Emits only what keeps the stream
  // well-formed (the Ogg end page, which the client then drops with the
  // rest of the cut reply on the `interruption` that follows it).
  virtual absl::Status Interrupt(std::vector<AudioChunk>* out) = 0;
};

}  // namespace bridge::media_worker
