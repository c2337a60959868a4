// Helpers shared by the audio tests: fixtures, temp files, signal measures,
// an independent Ogg page reader/writer (plain libogg), external tools.
#ifndef BRIDGE_TESTS_AUDIO_AUDIO_TEST_UTIL_H_
#define BRIDGE_TESTS_AUDIO_AUDIO_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "audio/ogg_opus_decoder.h"

namespace bridge::audio::testing {

// Voice notes that decode cleanly.
inline const std::vector<std::string>& GoodNotes() {
  static const auto* notes = new std::vector<std::string>{
      "voice_note_hello.ogg", "voice_note_long.ogg",
      "voice_note_tone_440hz.ogg", "voice_note_stereo_48k.ogg",
      "voice_note_silence.ogg"};
  return *notes;
}
inline const std::vector<int>& AllRates() {
  static const auto* rates =
      new std::vector<int>{8000, 16000, 22050, 24000, 44100, 48000};
  return *rates;
}

std::string FixturePath(const std::string& name);  // under fixtures/audio
std::vector<uint8_t> ReadBytes(const std::string& path);
std::vector<uint8_t> Fixture(const std::string& name);
std::vector<int16_t> ReadPcm(const std::string& path);  // s16le
std::vector<int16_t> BytesToPcm(absl::Span<const uint8_t> bytes);
std::vector<uint8_t> ToBytes(const std::string& s);

// A file under ::testing::TempDir() with a unique name, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& suffix = "");
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};
void WriteBytes(const std::string& path, absl::Span<const uint8_t> bytes);

// Signal measures.
double Rms(absl::Span<const int16_t> pcm);
double RmsDbfs(absl::Span<const int16_t> pcm);
// Power of one frequency (Goertzel), normalised so a full-scale sine gives 1.
double ToneLevel(absl::Span<const int16_t> pcm, int rate, double freq);
// Frequency from rising zero crossings: fine for one pure tone.
double ZeroCrossingFrequency(absl::Span<const int16_t> pcm, int rate);
// 10 log10(signal / (signal - test)) over the common length.
double SnrDb(absl::Span<const int16_t> reference,
             absl::Span<const int16_t> test);
std::vector<int16_t> Sine(int rate, double freq, double seconds,
                          double amplitude);
std::vector<int16_t> Middle(absl::Span<const int16_t> pcm);  // middle half

// Ogg as libogg sees it (no code of the library under test).
struct PageInfo {
  int64_t granule;
  uint32_t serial;
  bool bos, eos, continued;
  int packets;  // packets completed on the page
  std::vector<std::string> packet_data;
  std::string raw;  // the page's bytes
};
std::vector<PageInfo> ReadPages(absl::Span<const uint8_t> file);
std::vector<uint8_t> JoinPages(const std::vector<PageInfo>& pages);
// Recomputes the CRC of a raw page after its bytes were edited.
void FixCrc(std::string* raw_page);

// Writes an Ogg stream packet by packet (for hand-made test streams).
class OggWriter {
 public:
  explicit OggWriter(uint32_t serial);
  ~OggWriter();
  void Packet(const std::string& data, int64_t granule, bool bos = false,
              bool eos = false);
  void FlushPage();
  std::vector<uint8_t> bytes() const { return bytes_; }

 private:
  struct State;
  State* state_;
  int64_t packetno_ = 0;
  std::vector<uint8_t> bytes_;
};
std::string OpusHeadPacket(int channels, int pre_skip, int gain_q8 = 0,
                           int family = 0);
std::string OpusTagsPacket();

// Runs the library's streaming decoder: chunk 0 pushes the file at once,
// chunk > 0 in chunks of that size, chunk < 0 in random sizes 1..-chunk
// (seeded), pulling at random moments.
struct DecodeResult {
  std::vector<int16_t> pcm;
  absl::Status status;  // of Push/Finish
  std::vector<std::string> warnings;
  std::optional<StreamInfo> info;
  uint64_t pages = 0;
};
DecodeResult DecodeWith(absl::Span<const uint8_t> file, int rate, int chunk = 0,
                        uint32_t seed = 1);
// round((EOS granule - pre-skip) * rate / 48000), read with plain libogg.
int64_t ExpectedLength(absl::Span<const uint8_t> file, int rate);

// External tools (opus-tools).
bool HaveProgram(const std::string& name);
struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr
};
CommandResult RunCommand(const std::string& command);

}  // namespace bridge::audio::testing

#endif  // BRIDGE_TESTS_AUDIO_AUDIO_TEST_UTIL_H_
