// `bridgectl audio ...`: runs a file through exactly the codec path the media
// worker uses (the audio library, fed in 4 KiB chunks like a download).
//
//   audio info FILE.ogg [--json]      channels, input rate, duration, pages,
//                                      pre-skip, output gain, problems found
//   audio decode IN.ogg OUT.s16le [--rate R]          (default 48000)
//   audio encode IN.s16le OUT.ogg --rate R [--bitrate B] [--complexity C]
//
// R is one of 8000 16000 22050 24000 44100 48000.
#ifndef BRIDGE_TOOLS_BRIDGECTL_AUDIO_COMMAND_H_
#define BRIDGE_TOOLS_BRIDGECTL_AUDIO_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

namespace bridge::bridgectl {

// `args` are the words after "audio" (e.g. {"info", "note.ogg", "--json"}).
// Results go to `out`, warnings and errors to `err`. Returns the exit code:
// 0 done, 1 bad or unreadable file (one-line reason on `err`; a truncated
// note still gets its audio decoded), 2 bad usage.
int RunAudioCommand(const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err);

}  // namespace bridge::bridgectl

#endif  // BRIDGE_TOOLS_BRIDGECTL_AUDIO_COMMAND_H_
