// Codec benchmarks: our streaming Ogg/Opus decoder and encoder against raw
// libopus on the same packets and the same PCM (the floor: what is left is
// Ogg demux/mux, resampling and our bookkeeping).
//
// Counter `rtf` is the real-time factor: seconds of audio per second of CPU.
#include <opus/opus.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"
#include "benchmark/benchmark.h"
#include "ogg_packets.h"

namespace {

using bridge::audio::EncoderOptions;
using bridge::audio::OggOpusDecoder;
using bridge::audio::OggOpusEncoder;

std::string ReadFixture(const std::string& name) {
  std::ifstream in(std::string(BRIDGE_FIXTURES_DIR) + "/audio/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int16_t> ReadPcm(const std::string& name) {
  std::string bytes = ReadFixture(name);
  std::vector<int16_t> pcm(bytes.size() / 2);
  std::memcpy(pcm.data(), bytes.data(), pcm.size() * 2);
  return pcm;
}

const char* kNotes[] = {"voice_note_hello.ogg", "voice_note_long.ogg",
                        "voice_note_tone_440hz.ogg", "voice_note_stereo_48k.ogg"};

// The worker's path: push the file in 4 KiB pieces as a download would
// deliver it, pull PCM at the agent's rate.
void BM_DecodeOurs(benchmark::State& state) {
  const std::string file = ReadFixture(kNotes[state.range(0)]);
  const int rate = static_cast<int>(state.range(1));
  double seconds = 0;
  for (auto _ : state) {
    auto dec = *OggOpusDecoder::Create(rate);
    std::vector<int16_t> pcm;
    const auto* p = reinterpret_cast<const uint8_t*>(file.data());
    for (size_t off = 0; off < file.size(); off += 4096) {
      (void)dec->Push({p + off, std::min<size_t>(4096, file.size() - off)});
      dec->Pull(&pcm);
    }
    (void)dec->Finish();
    dec->Pull(&pcm);
    benchmark::DoNotOptimize(pcm.data());
    seconds = static_cast<double>(pcm.size()) / rate;
  }
  state.SetLabel(kNotes[state.range(0)]);
  state.counters["rtf"] =
      benchmark::Counter(seconds, benchmark::Counter::kIsIterationInvariantRate);
}

// The floor: opus_decode over the same packets, already demuxed, at the same
// rate when libopus has it natively (48 kHz otherwise: no resampling).
void BM_DecodeRawLibopus(benchmark::State& state) {
  const std::string file = ReadFixture(kNotes[state.range(0)]);
  const int rate = static_cast<int>(state.range(1));
  const int native = (rate == 22050 || rate == 44100) ? 48000 : rate;
  const std::vector<std::string> packets = bench::OpusPackets(file);
  std::vector<int16_t> pcm(static_cast<size_t>(native) * 120 / 1000);
  double seconds = 0;
  for (auto _ : state) {
    int err = 0;
    OpusDecoder* dec = opus_decoder_create(native, 1, &err);
    int64_t total = 0;
    for (const auto& pkt : packets) {
      total += opus_decode(dec, reinterpret_cast<const unsigned char*>(pkt.data()),
                           static_cast<opus_int32>(pkt.size()), pcm.data(),
                           static_cast<int>(pcm.size()), 0);
    }
    opus_decoder_destroy(dec);
    benchmark::DoNotOptimize(total);
    seconds = static_cast<double>(total) / native;
  }
  state.SetLabel(kNotes[state.range(0)]);
  state.counters["rtf"] =
      benchmark::Counter(seconds, benchmark::Counter::kIsIterationInvariantRate);
}

const char* PcmFixture(int rate) {
  switch (rate) {
    case 24000: return "agent_reply_24k.s16le";
    case 44100: return "agent_reply_44k1.s16le";
    default: return "agent_reply_16k.s16le";
  }
}

// The agent's reply as it streams in: 100 ms chunks into the encoder.
void BM_EncodeOurs(benchmark::State& state) {
  const int rate = static_cast<int>(state.range(0));
  const std::vector<int16_t> pcm = ReadPcm(PcmFixture(rate));
  const size_t chunk = static_cast<size_t>(rate) / 10;
  size_t bytes = 0;
  for (auto _ : state) {
    EncoderOptions opts;
    opts.input_rate = rate;
    opts.serial = 1;
    auto enc = *OggOpusEncoder::Create(opts);
    std::string out;
    for (size_t off = 0; off < pcm.size(); off += chunk) {
      (void)enc->Write({pcm.data() + off, std::min(chunk, pcm.size() - off)});
      out += enc->TakeBytes();
    }
    (void)enc->Finish();
    out += enc->TakeBytes();
    bytes = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["rtf"] = benchmark::Counter(static_cast<double>(pcm.size()) / rate,
                                             benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = static_cast<double>(bytes);
}

// The floor: opus_encode of 20 ms frames of the same PCM, same settings, at
// the rate the encoder runs at (44.1 kHz input is encoded at 48 kHz by ours).
void BM_EncodeRawLibopus(benchmark::State& state) {
  const int rate = static_cast<int>(state.range(0));
  const std::vector<int16_t> pcm = ReadPcm(PcmFixture(rate));
  const int native = rate == 44100 ? 48000 : rate == 22050 ? 24000 : rate;
  const int frame = native / 50;
  std::vector<unsigned char> packet(4000);
  for (auto _ : state) {
    int err = 0;
    OpusEncoder* enc = opus_encoder_create(native, 1, OPUS_APPLICATION_VOIP, &err);
    opus_encoder_ctl(enc, OPUS_SET_BITRATE(24000));
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(10));
    opus_encoder_ctl(enc, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
    size_t total = 0;
    // Frame count as if the input were at the native rate; same audio length.
    const size_t frames = pcm.size() * native / rate / frame;
    std::vector<int16_t> buf(frame);
    for (size_t i = 0; i < frames; ++i) {
      size_t src = i * frame * rate / native;
      std::copy_n(pcm.begin() + std::min(src, pcm.size() - frame), frame, buf.begin());
      total += opus_encode(enc, buf.data(), frame, packet.data(),
                           static_cast<opus_int32>(packet.size()));
    }
    opus_encoder_destroy(enc);
    benchmark::DoNotOptimize(total);
  }
  state.counters["rtf"] = benchmark::Counter(static_cast<double>(pcm.size()) / rate,
                                             benchmark::Counter::kIsIterationInvariantRate);
}

void DecodeArgs(benchmark::internal::Benchmark* b) {
  for (int note = 0; note < 4; ++note) {
    for (int rate : {16000, 48000}) b->Args({note, rate});
  }
  b->Args({0, 24000})->Args({0, 44100});
}

BENCHMARK(BM_DecodeOurs)->Apply(DecodeArgs)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DecodeRawLibopus)->Apply(DecodeArgs)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeOurs)->Arg(16000)->Arg(24000)->Arg(44100)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeRawLibopus)->Arg(16000)->Arg(24000)->Arg(44100)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
