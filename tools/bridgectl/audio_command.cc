#include "bridgectl/audio_command.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "audio/ogg_opus_decoder.h"
#include "audio/ogg_opus_encoder.h"

namespace bridge::bridgectl {
namespace {

using audio::DecodeProblem;
using audio::OggOpusDecoder;

// The worker feeds the decoder as bytes arrive; 4 KiB chunks mimic that.
constexpr size_t kChunkBytes = 4096;

constexpr absl::string_view kUsage =
    "usage: bridgectl audio info FILE.ogg [--json]\n"
    "       bridgectl audio decode IN.ogg OUT.s16le [--rate R]\n"
    "       bridgectl audio encode IN.s16le OUT.ogg --rate R [--bitrate B] "
    "[--complexity C]\n"
    "R: 8000 16000 22050 24000 44100 48000 (decode default 48000)\n";

struct Command {
  std::string name;
  std::vector<std::string> files;
  std::map<std::string, std::string, std::less<>> flags;
};

int Usage(std::ostream& err, absl::string_view reason) {
  err << "bridgectl audio: " << reason << "\n" << kUsage;
  return 2;
}

int Failure(std::ostream& err, absl::string_view file, absl::string_view why) {
  err << "bridgectl audio: " << file << ": " << why << "\n";
  return 1;
}

// Splits args into positional files and --flag[=value] / --flag value pairs.
std::optional<std::string> Parse(const std::vector<std::string>& args,
                                 Command* cmd) {
  if (args.empty()) return "missing subcommand";
  cmd->name = args[0];
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) {
      cmd->files.push_back(a);
      continue;
    }
    const size_t eq = a.find('=');
    std::string name = a.substr(2, eq == std::string::npos ? eq : eq - 2);
    if (eq != std::string::npos) {
      cmd->flags[name] = a.substr(eq + 1);
    } else if (name == "json") {
      cmd->flags[name] = "true";
    } else if (i + 1 < args.size()) {
      cmd->flags[name] = args[++i];
    } else {
      return absl::StrCat("--", name, " needs a value");
    }
  }
  return std::nullopt;
}

// Reads --name as an int; `fallback` when absent, nullopt when malformed.
std::optional<int> IntFlag(const Command& cmd, absl::string_view name,
                           std::optional<int> fallback) {
  auto it = cmd.flags.find(name);
  if (it == cmd.flags.end()) return fallback;
  int v = 0;
  if (!absl::SimpleAtoi(it->second, &v)) return std::nullopt;
  return v;
}

std::optional<std::string> CheckFlags(
    const Command& cmd, std::initializer_list<absl::string_view> ok,
    size_t files) {
  for (const auto& [name, value] : cmd.flags) {
    if (std::find(ok.begin(), ok.end(), name) == ok.end()) {
      return absl::StrCat("unknown flag --", name, " for ", cmd.name);
    }
  }
  if (cmd.files.size() != files) {
    return absl::StrCat(cmd.name, " takes ", files, " file argument",
                        files == 1 ? "" : "s");
  }
  return std::nullopt;
}

void WritePcm(std::ostream& file, const std::vector<int16_t>& pcm) {
  for (int16_t s : pcm) {  // s16le whatever the host's byte order
    const uint16_t u = uint16_t(s);
    const char b[2] = {char(u & 0xff), char(u >> 8)};
    file.write(b, 2);
  }
}

// Streams `path` through `decoder` chunk by chunk; `sink` gets the PCM.
absl::Status DecodeFile(
    const std::string& path, OggOpusDecoder& decoder,
    const std::function<void(std::vector<int16_t>&)>& sink) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open: ", std::strerror(errno)));
  }
  std::vector<uint8_t> chunk(kChunkBytes);
  std::vector<int16_t> pcm;
  absl::Status status;
  while (status.ok() && in) {
    in.read(reinterpret_cast<char*>(chunk.data()),
            std::streamsize(chunk.size()));
    status =
        decoder.Push(absl::MakeConstSpan(chunk.data(), size_t(in.gcount())));
    pcm.clear();
    decoder.Pull(&pcm);
    sink(pcm);
  }
  if (status.ok()) status = decoder.Finish();
  pcm.clear();
  decoder.Pull(&pcm);
  sink(pcm);
  return status;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\u%04x", c);
    } else if (c < 0x80) {
      out += char(c);
    } else {
      // Keep valid UTF-8 sequences; anything else (vendor strings are raw
      // bytes) becomes U+FFFD so the output is always valid JSON.
      const int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      bool valid = len > 0 && c < 0xf5 && i + len <= s.size();
      for (int k = 1; valid && k < len; ++k) {
        valid = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
      }
      if (valid) {
        out.append(s.data() + i, size_t(len));
        i += size_t(len - 1);
      } else {
        out += "\\ufffd";
      }
    }
  }
  return out + "\"";
}

void PrintInfoJson(std::ostream& out, const std::string& path,
                   const OggOpusDecoder& d, const absl::Status& status) {
  const auto info = d.info();
  auto field = [&](absl::string_view name, const std::string& value) {
    out << ",\"" << name << "\":" << value;
  };
  out << "{\"file\":" << JsonString(path);
  field("ok", status.ok() ? "true" : "false");
  field("problem", JsonString(audio::DecodeProblemName(d.problem())));
  field("error", JsonString(status.message()));
  field("channels", info ? absl::StrCat(info->channels) : "null");
  field("input_rate", info ? absl::StrCat(info->input_rate) : "null");
  field("duration_s", absl::StrFormat("%.3f", d.samples() / 48000.0));
  field("samples_48k", absl::StrCat(d.samples()));
  field("pages", absl::StrCat(d.pages()));
  field("pre_skip", info ? absl::StrCat(info->pre_skip) : "null");
  field("output_gain_db",
        info ? absl::StrFormat("%.2f", info->output_gain_q8 / 256.0) : "null");
  field("mapping_family", info ? absl::StrCat(info->mapping_family) : "null");
  field("vendor", info ? JsonString(info->vendor) : "null");
  std::string warnings = "[";
  for (const std::string& w : d.warnings()) {
    absl::StrAppend(&warnings, warnings.size() > 1 ? "," : "", JsonString(w));
  }
  field("warnings", warnings + "]");
  out << "}\n";
}

void PrintInfoText(std::ostream& out, const std::string& path,
                   const OggOpusDecoder& d, const absl::Status& status) {
  out << "file:         " << path << "\n";
  if (const auto info = d.info()) {
    out << "channels:     " << info->channels
        << (info->channels > 1 ? " (decoded as mono)" : "") << "\n"
        << "input rate:   " << info->input_rate << " Hz\n"
        << "pre-skip:     " << info->pre_skip << " samples at 48 kHz\n"
        << absl::StrFormat("output gain:  %.2f dB\n",
                           info->output_gain_q8 / 256.0)
        << "vendor:       " << info->vendor << "\n";
  }
  out << absl::StrFormat("duration:     %.3f s (%d samples at 48 kHz)\n",
                         d.samples() / 48000.0, d.samples())
      << "pages:        " << d.pages() << "\n";
  if (status.ok() && d.warnings().empty()) out << "problems:     none\n";
  if (!status.ok()) {
    out << "problem:      " << status.message() << "\n";
  }
  for (const std::string& w : d.warnings())
    out << "warning:      " << w << "\n";
}

int Info(const Command& cmd, std::ostream& out, std::ostream& err) {
  if (auto bad = CheckFlags(cmd, {"json"}, 1)) return Usage(err, *bad);
  const std::string& path = cmd.files[0];
  auto decoder = OggOpusDecoder::Create(48000);
  if (!decoder.ok()) return Failure(err, path, decoder.status().message());
  const absl::Status status =
      DecodeFile(path, **decoder, [](std::vector<int16_t>&) {});
  if (absl::IsNotFound(status)) return Failure(err, path, status.message());
  if (cmd.flags.count("json")) {
    PrintInfoJson(out, path, **decoder, status);
  } else {
    PrintInfoText(out, path, **decoder, status);
  }
  return status.ok() ? 0 : Failure(err, path, status.message());
}

int Decode(const Command& cmd, std::ostream& out, std::ostream& err) {
  if (auto bad = CheckFlags(cmd, {"rate"}, 2)) return Usage(err, *bad);
  const std::optional<int> rate = IntFlag(cmd, "rate", 48000);
  if (!rate || !audio::IsSupportedPcmRate(*rate)) {
    return Usage(err,
                 "--rate must be 8000, 16000, 22050, 24000, 44100 or 48000");
  }
  const std::string& in_path = cmd.files[0];
  const std::string& out_path = cmd.files[1];
  std::ofstream file(out_path, std::ios::binary | std::ios::trunc);
  if (!file) return Failure(err, out_path, std::strerror(errno));
  auto decoder = OggOpusDecoder::Create(*rate);
  if (!decoder.ok()) return Failure(err, in_path, decoder.status().message());
  const absl::Status status =
      DecodeFile(in_path, **decoder,
                 [&](std::vector<int16_t>& pcm) { WritePcm(file, pcm); });
  file.close();
  for (const std::string& w : (*decoder)->warnings()) {
    err << "warning: " << in_path << ": " << w << "\n";
  }
  if (!file) return Failure(err, out_path, "write failed");
  const uint64_t n = (*decoder)->samples();
  if (!status.ok()) {
    if (n == 0) std::remove(out_path.c_str());
    return Failure(err, in_path, status.message());
  }
  out << absl::StrFormat("decoded %s: %.3f s, %d samples at %d Hz -> %s\n",
                         in_path, double(n) / *rate, n, *rate, out_path);
  return 0;
}

// Feeds `in` to the encoder in 4 KiB chunks; s16le bytes, odd ones carried.
absl::Status EncodeStream(std::istream& in, audio::OggOpusEncoder& encoder,
                          std::ostream& file) {
  std::vector<char> chunk(kChunkBytes + 1);
  std::vector<int16_t> pcm;
  size_t carried = 0;
  while (in) {
    in.read(chunk.data() + carried, std::streamsize(kChunkBytes));
    const size_t bytes = carried + size_t(in.gcount());
    pcm.resize(bytes / 2);
    for (size_t i = 0; i < pcm.size(); ++i) {
      pcm[i] = int16_t(uint8_t(chunk[2 * i]) | uint8_t(chunk[2 * i + 1]) << 8);
    }
    carried = bytes % 2;
    if (carried) chunk[0] = chunk[bytes - 1];
    if (absl::Status s = encoder.Write(pcm); !s.ok()) return s;
    const std::string bytes_out = encoder.TakeBytes();
    file.write(bytes_out.data(), std::streamsize(bytes_out.size()));
  }
  if (carried) {
    return absl::InvalidArgumentError("odd byte count: not s16le PCM");
  }
  if (absl::Status s = encoder.Finish(); !s.ok()) return s;
  const std::string tail = encoder.TakeBytes();
  file.write(tail.data(), std::streamsize(tail.size()));
  return absl::OkStatus();
}

int Encode(const Command& cmd, std::ostream& out, std::ostream& err) {
  if (auto bad = CheckFlags(cmd, {"rate", "bitrate", "complexity"}, 2)) {
    return Usage(err, *bad);
  }
  audio::EncoderOptions options;
  const std::optional<int> rate = IntFlag(cmd, "rate", -1);
  const std::optional<int> bitrate =
      IntFlag(cmd, "bitrate", options.bitrate_bps);
  const std::optional<int> complexity =
      IntFlag(cmd, "complexity", options.complexity);
  if (!rate || !audio::IsSupportedPcmRate(*rate)) {
    return Usage(err,
                 "--rate must be 8000, 16000, 22050, 24000, 44100 or 48000");
  }
  if (!bitrate || *bitrate < 6000 || *bitrate > 510000) {
    return Usage(err, "--bitrate must be 6000..510000 (b/s)");
  }
  if (!complexity || *complexity < 0 || *complexity > 10) {
    return Usage(err, "--complexity must be 0..10");
  }
  options.input_rate = *rate;
  options.bitrate_bps = *bitrate;
  options.complexity = *complexity;
  const std::string& in_path = cmd.files[0];
  const std::string& out_path = cmd.files[1];
  std::ifstream in(in_path, std::ios::binary);
  if (!in) return Failure(err, in_path, std::strerror(errno));
  std::ofstream file(out_path, std::ios::binary | std::ios::trunc);
  if (!file) return Failure(err, out_path, std::strerror(errno));
  auto encoder = audio::OggOpusEncoder::Create(options);
  if (!encoder.ok()) return Failure(err, in_path, encoder.status().message());
  const absl::Status status = EncodeStream(in, **encoder, file);
  file.close();
  if (!status.ok()) {
    std::remove(out_path.c_str());
    return Failure(err, in_path, status.message());
  }
  if (!file) return Failure(err, out_path, "write failed");
  const uint64_t n = (*encoder)->samples_written();
  out << absl::StrFormat("encoded %s: %.3f s at %d Hz -> %s\n", in_path,
                         double(n) / *rate, *rate, out_path);
  return 0;
}

}  // namespace

int RunAudioCommand(const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err) {
  Command cmd;
  if (auto bad = Parse(args, &cmd)) return Usage(err, *bad);
  if (cmd.name == "info") return Info(cmd, out, err);
  if (cmd.name == "decode") return Decode(cmd, out, err);
  if (cmd.name == "encode") return Encode(cmd, out, err);
  return Usage(err, absl::StrCat("unknown subcommand \"", cmd.name, "\""));
}

}  // namespace bridge::bridgectl
