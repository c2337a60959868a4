// One call's media endpoint: ICE (libnice) on the worker's media loop,
// DTLS-SRTP on the selected pair, RTP with rtcp-mux, Opus both ways. The
// caller's audio comes out as PCM frames, in order, the moment each packet
// is next in sequence (a gap waits briefly, then FEC or concealment: see
// jitter_buffer.h); PCM to play is queued and sent paced, one 20 ms packet
// per tick, silence when nothing is queued. Used by the worker to answer
// calls and by the load caller and tests to place them (the other side of
// the same code: offerer, passive DTLS, optionally ICE-lite as Meta is).
//
// Threads: create anywhere; everything else, and every event, on the media
// loop's thread. Close() (or the last reference going) on that thread too.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "call_sdp.h"
#include "dtls_srtp.h"
#include "jitter_buffer.h"
#include "media_loop.h"

typedef struct _NiceAgent NiceAgent;

namespace bridge::audio {
class OpusPacketDecoder;
class OpusPacketEncoder;
}  // namespace bridge::audio

namespace bridge::media_worker {

// Where the worker's media is reachable (flags, shared by every call).
struct MediaNetwork {
  std::string stun_ip;   // STUN_SERVER resolved; empty: no server-reflexive candidate
  int stun_port = 3478;
  std::string public_ip;  // --media_public_ip: host candidates are announced with it (1:1 NAT)
  int port_min = 0;       // --media_port_range; 0: any port
  int port_max = 0;
  // Addresses to gather on; empty: every interface but loopback (libnice's
  // default). Tests on one machine use 127.0.0.1.
  std::vector<std::string> local_ips;
};

struct CallMediaOptions {
  MediaNetwork network;
  // ICE roles (RFC 8445): the answerer controls when the offerer is lite
  // (Meta); against a full-ICE offerer (a browser) it is controlled.
  bool controlling = true;
  bool lite = false;  // we are ICE-lite (only the load caller, playing Meta)
  DtlsRole dtls_role = DtlsRole::kClient;
  int opus_payload_type = 111;
  int pcm_rate = 16000;  // of the PCM in and out; Meta asks for <= 16 kHz
  int bitrate_bps = 24000;
  int fec_loss_percent = 10;
  absl::Duration reorder_wait = absl::Milliseconds(40);
  absl::Duration connect_timeout = absl::Seconds(20);
};

// Our side, for the SDP.
struct LocalDescription {
  std::string ice_ufrag;
  std::string ice_pwd;
  std::vector<std::string> candidates;  // "candidate:…"
  std::string fingerprint_sha256;
};

struct CallMediaStats {
  JitterStats in;
  uint64_t packets_sent = 0;
  uint64_t silence_sent = 0;   // of those, silence (nothing was queued)
  uint64_t undecryptable = 0;  // SRTP packets that failed authentication
  uint64_t rtcp_received = 0;
  std::string selected_pair;   // "host 10.0.0.2:50000 -> srflx 203.0.113.7:3478"
};

struct CallMediaEvents {
  std::function<void()> on_connected;  // DTLS done: audio flows both ways
  // ICE or DTLS failed, or nothing connected in time. Once; nothing after.
  std::function<void(const absl::Status& why)> on_failed;
  // The caller's audio at pcm_rate. `waited`: how long its packet sat here
  // (zero for a rebuilt or concealed frame).
  std::function<void(absl::Span<const int16_t> pcm, absl::Duration waited)> on_audio;
  // A packet of queued audio went out, `late` after it could have (queued
  // behind nothing and the tick that sent it).
  std::function<void(absl::Duration late)> on_played;
};

class CallMedia : public std::enable_shared_from_this<CallMedia> {
 public:
  // Everything below runs on `loop` (media_loop.h says how that is checked),
  // except the destructor: Close() ran there before the last owner let go.
  static absl::StatusOr<std::shared_ptr<CallMedia>> Create(
      MediaLoop* loop, std::shared_ptr<const DtlsIdentity> identity, CallMediaOptions options,
      CallMediaEvents events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  ~CallMedia();

  // Gathers every local candidate (no trickle), then calls `done` once.
  void Gather(std::function<void(absl::StatusOr<LocalDescription>)> done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // The peer's credentials, candidates and fingerprint: checks start.
  // Candidates libnice cannot use (mDNS .local names, TCP) are skipped; a
  // full-ICE peer is still found through its checks (peer-reflexive).
  absl::Status Connect(const SdpOffer& remote) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // Queues PCM at pcm_rate to play.
  void Play(absl::Span<const int16_t> pcm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // Barge-in: forgets what is queued.
  void ClearPlayout() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  absl::Duration queued() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  bool connected() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  CallMediaStats stats() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  // Stops everything; no event runs afterwards. Idempotent.
  void Close() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);

  CallMedia(MediaLoop* loop, std::shared_ptr<const DtlsIdentity> identity, CallMediaOptions options,
            CallMediaEvents events);  // via Create

 private:
  struct QueuedFrame {
    std::vector<int16_t> pcm;
    int64_t ready_us;  // when it could first have been sent
  };
  static void OnGatheringDone(NiceAgent* agent, unsigned stream, void* self);
  static void OnStateChanged(NiceAgent* agent, unsigned stream, unsigned component,
                             unsigned state, void* self);
  static void OnReceive(NiceAgent* agent, unsigned stream, unsigned component, unsigned len,
                        char* buf, void* self);
  absl::Status Init() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Receive(absl::Span<const uint8_t> packet) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void ReceiveRtp(std::vector<uint8_t> packet) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void DrainJitter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Fail(const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void StartTicks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void Tick(int64_t now_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void SendNext(int64_t now_us) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void SendFrame(absl::Span<const int16_t> pcm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void ArmDtlsTimer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);
  void SendDatagram(absl::Span<const uint8_t> datagram)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(media_thread);

  MediaLoop* const loop_;
  std::shared_ptr<const DtlsIdentity> identity_;
  const CallMediaOptions options_;
  CallMediaEvents events_ ABSL_GUARDED_BY(media_thread);
  NiceAgent* agent_ ABSL_GUARDED_BY(media_thread) = nullptr;
  unsigned stream_ ABSL_GUARDED_BY(media_thread) = 0;
  std::function<void(absl::StatusOr<LocalDescription>)> gathered_
      ABSL_GUARDED_BY(media_thread);
  std::unique_ptr<DtlsSrtp> dtls_ ABSL_GUARDED_BY(media_thread);
  bool dtls_started_ ABSL_GUARDED_BY(media_thread) = false;
  bool closed_ ABSL_GUARDED_BY(media_thread) = false;
  std::unique_ptr<audio::OpusPacketEncoder> encoder_ ABSL_GUARDED_BY(media_thread);
  std::unique_ptr<audio::OpusPacketDecoder> decoder_ ABSL_GUARDED_BY(media_thread);
  JitterBuffer jitter_ ABSL_GUARDED_BY(media_thread);
  std::vector<int16_t> pending_ ABSL_GUARDED_BY(media_thread);  // queued PCM, not a whole frame yet
  int64_t pending_ready_us_ ABSL_GUARDED_BY(media_thread) = 0;
  std::deque<QueuedFrame> playout_ ABSL_GUARDED_BY(media_thread);
  std::vector<int16_t> decoded_ ABSL_GUARDED_BY(media_thread);  // scratch
  std::vector<uint8_t> encoded_ ABSL_GUARDED_BY(media_thread);  // scratch
  unsigned ticker_ ABSL_GUARDED_BY(media_thread) = 0;
  unsigned dtls_timer_ ABSL_GUARDED_BY(media_thread) = 0;
  unsigned connect_timer_ ABSL_GUARDED_BY(media_thread) = 0;
  // When the next packet is due (monotonic µs).
  int64_t next_due_us_ ABSL_GUARDED_BY(media_thread) = 0;
  int64_t last_play_ready_us_ ABSL_GUARDED_BY(media_thread) = 0;
  uint16_t out_seq_ ABSL_GUARDED_BY(media_thread);
  uint32_t out_ts_ ABSL_GUARDED_BY(media_thread);
  uint32_t out_ssrc_ ABSL_GUARDED_BY(media_thread);
  CallMediaStats stats_ ABSL_GUARDED_BY(media_thread);
};

}  // namespace bridge::media_worker
