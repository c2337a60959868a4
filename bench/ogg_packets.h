// Demuxes an Ogg/Opus file into its audio packets with libogg, outside any
// timed loop, so raw-libopus baselines decode exactly the packets we do.
#pragma once

#include <ogg/ogg.h>

#include <cstring>
#include <string>
#include <vector>

namespace bench {

inline std::vector<std::string> OpusPackets(const std::string& file) {
  ogg_sync_state sync;
  ogg_sync_init(&sync);
  char* buf = ogg_sync_buffer(&sync, static_cast<long>(file.size()));
  std::memcpy(buf, file.data(), file.size());
  ogg_sync_wrote(&sync, static_cast<long>(file.size()));
  ogg_stream_state stream;
  bool started = false;
  std::vector<std::string> packets;
  ogg_page page;
  ogg_packet packet;
  int headers = 0;
  while (ogg_sync_pageout(&sync, &page) == 1) {
    if (!started) {
      ogg_stream_init(&stream, ogg_page_serialno(&page));
      started = true;
    }
    if (ogg_page_serialno(&page) != stream.serialno) continue;
    ogg_stream_pagein(&stream, &page);
    while (ogg_stream_packetout(&stream, &packet) == 1) {
      if (headers < 2) {  // OpusHead, OpusTags
        ++headers;
        continue;
      }
      packets.emplace_back(reinterpret_cast<const char*>(packet.packet), packet.bytes);
    }
  }
  if (started) ogg_stream_clear(&stream);
  ogg_sync_clear(&sync);
  return packets;
}

}  // namespace bench
