#include "audio_test_util.h"

#include <ogg/ogg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "gtest/gtest.h"

namespace bridge::audio::testing {

std::string FixturePath(const std::string& name) {
  return std::string(BRIDGE_FIXTURES_DIR) + "/audio/" + name;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> Fixture(const std::string& name) {
  return ReadBytes(FixturePath(name));
}

std::vector<int16_t> BytesToPcm(absl::Span<const uint8_t> bytes) {
  std::vector<int16_t> pcm(bytes.size() / 2);
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = int16_t(bytes[2 * i] | bytes[2 * i + 1] << 8);
  }
  return pcm;
}

std::vector<int16_t> ReadPcm(const std::string& path) {
  return BytesToPcm(ReadBytes(path));
}

std::vector<uint8_t> ToBytes(const std::string& s) {
  return {s.begin(), s.end()};
}

TempFile::TempFile(const std::string& suffix) {
  std::string pattern = ::testing::TempDir() + "/audio_test_XXXXXX" + suffix;
  const int fd = mkstemps(pattern.data(), int(suffix.size()));
  EXPECT_GE(fd, 0) << "mkstemps " << pattern;
  if (fd >= 0) close(fd);
  path_ = pattern;
}

TempFile::~TempFile() { std::remove(path_.c_str()); }

void WriteBytes(const std::string& path, absl::Span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            std::streamsize(bytes.size()));
}

double Rms(absl::Span<const int16_t> pcm) {
  double sum = 0;
  for (int16_t s : pcm) sum += double(s) * s;
  return pcm.empty() ? 0 : std::sqrt(sum / double(pcm.size()));
}

double RmsDbfs(absl::Span<const int16_t> pcm) {
  return 20 * std::log10(Rms(pcm) / 32768.0 + 1e-12);
}

double ToneLevel(absl::Span<const int16_t> pcm, int rate, double freq) {
  const double w = 2 * M_PI * freq / rate;
  const double coeff = 2 * std::cos(w);
  double s1 = 0, s2 = 0;
  for (int16_t x : pcm) {
    const double s0 = x / 32768.0 + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const double power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  const double n = double(pcm.size());
  return power / (n * n / 4);  // full-scale sine -> 1
}

double ZeroCrossingFrequency(absl::Span<const int16_t> pcm, int rate) {
  double first = -1, last = -1;
  int crossings = 0;
  for (size_t i = 1; i < pcm.size(); ++i) {
    if (pcm[i - 1] < 0 && pcm[i] >= 0) {
      // Interpolate the crossing instant between the two samples.
      const double t =
          double(i - 1) + double(-pcm[i - 1]) / (pcm[i] - pcm[i - 1]);
      if (first < 0) first = t;
      last = t;
      ++crossings;
    }
  }
  return crossings < 2 ? 0 : (crossings - 1) * rate / (last - first);
}

double SnrDb(absl::Span<const int16_t> reference,
             absl::Span<const int16_t> test) {
  const size_t n = std::min(reference.size(), test.size());
  double signal = 0, noise = 0;
  for (size_t i = 0; i < n; ++i) {
    signal += double(reference[i]) * reference[i];
    const double d = double(reference[i]) - test[i];
    noise += d * d;
  }
  return 10 * std::log10((signal + 1e-9) / (noise + 1e-9));
}

std::vector<int16_t> Sine(int rate, double freq, double seconds,
                          double amplitude) {
  std::vector<int16_t> pcm(size_t(seconds * rate));
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = int16_t(std::lround(amplitude * 32767 *
                                 std::sin(2 * M_PI * freq * double(i) / rate)));
  }
  return pcm;
}

std::vector<int16_t> Middle(absl::Span<const int16_t> pcm) {
  return {pcm.begin() + pcm.size() / 4, pcm.begin() + 3 * pcm.size() / 4};
}

std::vector<PageInfo> ReadPages(absl::Span<const uint8_t> file) {
  ogg_sync_state sync;
  ogg_sync_init(&sync);
  char* buffer = ogg_sync_buffer(&sync, long(file.size()));
  if (!file.empty()) std::memcpy(buffer, file.data(), file.size());
  ogg_sync_wrote(&sync, long(file.size()));
  std::vector<PageInfo> pages;
  ogg_page page;
  while (ogg_sync_pageout(&sync, &page) != 0) {
    PageInfo info;
    info.granule = ogg_page_granulepos(&page);
    info.serial = uint32_t(ogg_page_serialno(&page));
    info.bos = ogg_page_bos(&page);
    info.eos = ogg_page_eos(&page);
    info.continued = ogg_page_continued(&page);
    info.packets = ogg_page_packets(&page);
    info.raw.assign(reinterpret_cast<const char*>(page.header),
                    size_t(page.header_len));
    info.raw.append(reinterpret_cast<const char*>(page.body),
                    size_t(page.body_len));
    // Packets of this page alone (fine for pages without continuations).
    ogg_stream_state stream;
    ogg_stream_init(&stream, ogg_page_serialno(&page));
    ogg_stream_pagein(&stream, &page);
    ogg_packet packet;
    // A fresh stream state reports a "hole" before a page that is not the
    // first: skip it (-1), stop at 0.
    for (int r; (r = ogg_stream_packetout(&stream, &packet)) != 0;) {
      if (r < 0) continue;
      info.packet_data.emplace_back(
          reinterpret_cast<const char*>(packet.packet), size_t(packet.bytes));
    }
    ogg_stream_clear(&stream);
    pages.push_back(std::move(info));
  }
  ogg_sync_clear(&sync);
  return pages;
}

std::vector<uint8_t> JoinPages(const std::vector<PageInfo>& pages) {
  std::vector<uint8_t> out;
  for (const PageInfo& p : pages)
    out.insert(out.end(), p.raw.begin(), p.raw.end());
  return out;
}

void FixCrc(std::string* raw) {
  ogg_page page;
  page.header = reinterpret_cast<unsigned char*>(raw->data());
  page.header_len = 27 + static_cast<unsigned char>((*raw)[26]);
  page.body = page.header + page.header_len;
  page.body_len = long(raw->size()) - page.header_len;
  ogg_page_checksum_set(&page);
}

struct OggWriter::State {
  ogg_stream_state stream;
};

OggWriter::OggWriter(uint32_t serial) : state_(new State) {
  ogg_stream_init(&state_->stream, int(serial));
}

OggWriter::~OggWriter() {
  ogg_stream_clear(&state_->stream);
  delete state_;
}

void OggWriter::Packet(const std::string& data, int64_t granule, bool bos,
                       bool eos) {
  ogg_packet p = {};
  p.packet = reinterpret_cast<unsigned char*>(const_cast<char*>(data.data()));
  p.bytes = long(data.size());
  p.b_o_s = bos;
  p.e_o_s = eos;
  p.granulepos = granule;
  p.packetno = packetno_++;
  ogg_stream_packetin(&state_->stream, &p);
}

void OggWriter::FlushPage() {
  ogg_page page;
  while (ogg_stream_flush(&state_->stream, &page)) {
    bytes_.insert(bytes_.end(), page.header, page.header + page.header_len);
    bytes_.insert(bytes_.end(), page.body, page.body + page.body_len);
  }
}

std::string OpusHeadPacket(int channels, int pre_skip, int gain_q8,
                           int family) {
  std::string s = "OpusHead";
  s += char(1);
  s += char(channels);
  s += char(pre_skip & 0xff);
  s += char(pre_skip >> 8);
  s += std::string("\x80\xbb\0\0", 4);  // 48000 Hz
  s += char(gain_q8 & 0xff);
  s += char((gain_q8 >> 8) & 0xff);
  s += char(family);
  if (family != 0) s += std::string("\x01\x00\x00", 3);  // 1 stream, map 0
  return s;
}

std::string OpusTagsPacket() {
  return std::string("OpusTags\x04\0\0\0test\0\0\0\0", 20);
}

DecodeResult DecodeWith(absl::Span<const uint8_t> file, int rate, int chunk,
                        uint32_t seed) {
  DecodeResult result;
  auto decoder = OggOpusDecoder::Create(rate);
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  if (!decoder.ok()) return result;
  OggOpusDecoder& d = **decoder;
  std::mt19937 rng(seed);
  size_t pos = 0;
  do {
    size_t n = file.size() - pos;
    if (chunk > 0) n = std::min<size_t>(n, size_t(chunk));
    if (chunk < 0) n = std::min<size_t>(n, 1 + rng() % size_t(-chunk));
    result.status = d.Push(file.subspan(pos, n));
    pos += n;
    if (rng() % 4 == 0) d.Pull(&result.pcm);
  } while (pos < file.size() && result.status.ok());
  if (result.status.ok()) result.status = d.Finish();
  d.Pull(&result.pcm);
  EXPECT_EQ(result.pcm.size(), d.samples());
  result.warnings = d.warnings();
  result.info = d.info();
  result.pages = d.pages();
  EXPECT_EQ(d.problem(), ProblemOf(result.status));
  return result;
}

int64_t ExpectedLength(absl::Span<const uint8_t> file, int rate) {
  const std::vector<PageInfo> pages = ReadPages(file);
  EXPECT_FALSE(pages.empty());
  if (pages.empty()) return -1;
  const std::string& head = pages[0].packet_data.at(0);
  const int64_t pre_skip = uint8_t(head[10]) | uint8_t(head[11]) << 8;
  int64_t eos_granule = -1;
  for (const PageInfo& p : pages) {
    if (p.serial == pages[0].serial) eos_granule = p.granule;
  }
  return ((eos_granule - pre_skip) * rate + 24000) / 48000;
}

bool HaveProgram(const std::string& name) {
  return RunCommand("command -v " + name).exit_code == 0;
}

CommandResult RunCommand(const std::string& command) {
  CommandResult result{-1, ""};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) {
    result.output.append(buffer, n);
  }
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace bridge::audio::testing
