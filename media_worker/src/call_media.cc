#include "call_media.h"

#include <agent.h>
#include <glib.h>
#include <openssl/rand.h>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "audio/opus_packet.h"
#include "rtp_packet.h"

namespace bridge::media_worker {
namespace {

constexpr int64_t kFrameUs = 20000;  // one packet per 20 ms (minptime=20)
constexpr uint32_t kFrameTicks = 960;  // 20 ms on Opus's 48 kHz RTP clock
constexpr int kOpusComplexity = 5;     // a call's encoder runs 50 times a second
constexpr int kMaxCatchUp = 5;         // frames sent at once after a stall

template <typename T>
T Random() {
  T v{};
  RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v);
  return v;
}

std::string CandidateName(NiceCandidate* c) {
  if (c == nullptr) return "?";
  char ip[NICE_ADDRESS_STRING_LEN];
  nice_address_to_string(&c->addr, ip);
  static const char* kTypes[] = {"host", "srflx", "prflx", "relay"};
  return absl::StrCat(kTypes[c->type <= NICE_CANDIDATE_TYPE_RELAYED ? c->type : 0], " ", ip, ":",
                      nice_address_get_port(&c->addr));
}

}  // namespace

absl::StatusOr<std::shared_ptr<CallMedia>> CallMedia::Create(
    MediaLoop* loop, std::shared_ptr<const DtlsIdentity> identity, CallMediaOptions options,
    CallMediaEvents events) {
  if (!audio::IsOpusRate(options.pcm_rate)) {
    return absl::InvalidArgumentError(absl::StrCat("a call's PCM rate must be an Opus rate, not ",
                                                   options.pcm_rate));
  }
  auto media = std::make_shared<CallMedia>(loop, std::move(identity), std::move(options),
                                           std::move(events));
  if (absl::Status s = media->Init(); !s.ok()) return s;
  return media;
}

CallMedia::CallMedia(MediaLoop* loop, std::shared_ptr<const DtlsIdentity> identity,
                     CallMediaOptions options, CallMediaEvents events)
    : loop_(loop),
      identity_(std::move(identity)),
      options_(std::move(options)),
      events_(std::move(events)),
      jitter_(options_.reorder_wait),
      out_seq_(Random<uint16_t>()),
      out_ts_(Random<uint32_t>()),
      out_ssrc_(Random<uint32_t>()) {}

// Close() ran on the loop (CallSession::Finish, the owners' Close) before the
// last owner let go, which may be on another thread: this only frees.
CallMedia::~CallMedia() ABSL_NO_THREAD_SAFETY_ANALYSIS { Close(); }

absl::Status CallMedia::Init() {
  auto enc = audio::OpusPacketEncoder::Create(options_.pcm_rate, options_.bitrate_bps,
                                              kOpusComplexity);
  if (!enc.ok()) return enc.status();
  encoder_ = *std::move(enc);
  if (absl::Status s = encoder_->EnableFec(options_.fec_loss_percent); !s.ok()) return s;
  auto dec = audio::OpusPacketDecoder::Create(options_.pcm_rate);
  if (!dec.ok()) return dec.status();
  decoder_ = *std::move(dec);

  // Consent freshness (RFC 7675) notices a caller that vanished without a
  // terminate; an ICE-lite agent sends no checks, so it cannot.
  int flags = NICE_AGENT_OPTION_REGULAR_NOMINATION;
  flags |= options_.lite ? NICE_AGENT_OPTION_LITE_MODE : NICE_AGENT_OPTION_CONSENT_FRESHNESS;
  agent_ = nice_agent_new_full(loop_->context(), NICE_COMPATIBILITY_RFC5245,
                               static_cast<NiceAgentOption>(flags));
  if (agent_ == nullptr) return absl::InternalError("libnice could not create an ICE agent");
  g_object_set(G_OBJECT(agent_), "controlling-mode", options_.controlling ? TRUE : FALSE,
               "ice-tcp", FALSE, "upnp", FALSE, nullptr);
  if (!options_.network.stun_ip.empty()) {
    g_object_set(G_OBJECT(agent_), "stun-server", options_.network.stun_ip.c_str(),
                 "stun-server-port", static_cast<guint>(options_.network.stun_port), nullptr);
  }
  stream_ = nice_agent_add_stream(agent_, 1);  // rtcp-mux: one component
  if (stream_ == 0) return absl::InternalError("libnice could not add a stream");
  nice_agent_set_stream_name(agent_, stream_, "audio");
  if (options_.network.port_min > 0) {
    nice_agent_set_port_range(agent_, stream_, 1, static_cast<guint>(options_.network.port_min),
                              static_cast<guint>(options_.network.port_max));
  }
  for (const std::string& ip : options_.network.local_ips) {
    NiceAddress addr;
    nice_address_init(&addr);
    if (!nice_address_set_from_string(&addr, ip.c_str()) || !nice_agent_add_local_address(agent_, &addr)) {
      return absl::InvalidArgumentError(absl::StrCat("not a local IP address: ", ip));
    }
  }
  g_signal_connect(G_OBJECT(agent_), "candidate-gathering-done", G_CALLBACK(OnGatheringDone), this);
  g_signal_connect(G_OBJECT(agent_), "component-state-changed", G_CALLBACK(OnStateChanged), this);
  nice_agent_attach_recv(agent_, stream_, 1, loop_->context(), OnReceive, this);
  return absl::OkStatus();
}

void CallMedia::Gather(std::function<void(absl::StatusOr<LocalDescription>)> done) {
  gathered_ = std::move(done);
  std::weak_ptr<CallMedia> weak = weak_from_this();
  connect_timer_ = loop_->After(options_.connect_timeout, [weak] {
    if (auto self = weak.lock()) {
      self->loop_->AssertInLoop();
      self->connect_timer_ = 0;
      if (!self->connected()) {
        self->Fail(absl::DeadlineExceededError(absl::StrCat(
            "no media within ", absl::FormatDuration(self->options_.connect_timeout),
            ": ICE or DTLS never completed (is UDP to the worker's media ports open?)")));
      }
    }
  });
  if (!nice_agent_gather_candidates(agent_, stream_)) {
    Fail(absl::UnavailableError(
        "could not gather ICE candidates (no usable interface, or --media_port_range is exhausted)"));
  }
}

void CallMedia::OnGatheringDone(NiceAgent* agent, unsigned stream, void* data) {
  auto* self = static_cast<CallMedia*>(data);
  self->loop_->AssertInLoop();
  if (self->closed_ || !self->gathered_) return;
  LocalDescription local;
  gchar *ufrag = nullptr, *pwd = nullptr;
  nice_agent_get_local_credentials(agent, stream, &ufrag, &pwd);
  local.ice_ufrag = ufrag ? ufrag : "";
  local.ice_pwd = pwd ? pwd : "";
  g_free(ufrag);
  g_free(pwd);
  local.fingerprint_sha256 = self->identity_->fingerprint_sha256();
  const std::string& public_ip = self->options_.network.public_ip;
  GSList* cands = nice_agent_get_local_candidates(agent, stream, 1);
  for (GSList* i = cands; i != nullptr; i = i->next) {
    auto* c = static_cast<NiceCandidate*>(i->data);
    // Behind a 1:1 NAT the host address is announced as the public one.
    if (!public_ip.empty() && c->type == NICE_CANDIDATE_TYPE_HOST &&
        nice_address_ip_version(&c->addr) == 4) {
      const guint port = nice_address_get_port(&c->addr);
      nice_address_set_from_string(&c->addr, public_ip.c_str());
      nice_address_set_port(&c->addr, port);
      c->base_addr = c->addr;  // else libnice adds "raddr <private address>"
    }
    gchar* sdp = nice_agent_generate_local_candidate_sdp(agent, c);
    absl::string_view line(sdp);
    absl::ConsumePrefix(&line, "a=");
    local.candidates.emplace_back(line);
    g_free(sdp);
  }
  g_slist_free_full(cands, reinterpret_cast<GDestroyNotify>(&nice_candidate_free));
  auto done = std::move(self->gathered_);
  self->gathered_ = nullptr;
  if (local.candidates.empty()) {
    done(absl::UnavailableError("no ICE candidate could be gathered"));
    return;
  }
  done(std::move(local));
}

absl::Status CallMedia::Connect(const SdpOffer& remote) {
  if (closed_) return absl::FailedPreconditionError("the call's media is closed");
  if (!nice_agent_set_remote_credentials(agent_, stream_, remote.ice_ufrag.c_str(),
                                         remote.ice_pwd.c_str())) {
    return absl::InvalidArgumentError("the peer's ICE credentials were refused by libnice");
  }
  GSList* list = nullptr;
  int skipped = 0;
  for (const std::string& c : remote.candidates) {
    NiceCandidate* parsed =
        nice_agent_parse_remote_candidate_sdp(agent_, stream_, absl::StrCat("a=", c).c_str());
    if (parsed == nullptr || parsed->transport != NICE_CANDIDATE_TRANSPORT_UDP) {
      ++skipped;  // mDNS names, TCP
      if (parsed != nullptr) nice_candidate_free(parsed);
      continue;
    }
    list = g_slist_append(list, parsed);
  }
  const int added = list ? nice_agent_set_remote_candidates(agent_, stream_, 1, list) : 0;
  g_slist_free_full(list, reinterpret_cast<GDestroyNotify>(&nice_candidate_free));
  if (added <= 0 && options_.controlling) {
    return absl::InvalidArgumentError(absl::StrCat(
        "none of the offer's ", remote.candidates.size(),
        " ICE candidates is usable (UDP with an IP address); ", skipped, " skipped"));
  }
  std::weak_ptr<CallMedia> weak = weak_from_this();
  dtls_ = std::make_unique<DtlsSrtp>(identity_, options_.dtls_role, remote.fingerprint_sha256,
                                     [weak](absl::Span<const uint8_t> d) {
                                       auto self = weak.lock();
                                       if (!self) return;
                                       self->loop_->AssertInLoop();  // DTLS runs there
                                       self->SendDatagram(d);
                                     });
  return absl::OkStatus();
}

void CallMedia::OnStateChanged(NiceAgent*, unsigned, unsigned, unsigned state, void* data) {
  auto* self = static_cast<CallMedia*>(data);
  self->loop_->AssertInLoop();
  if (self->closed_) return;
  if (state == NICE_COMPONENT_STATE_FAILED) {
    // After media flowed, FAILED means consent expired (RFC 7675): the
    // caller stopped answering our checks, as a phone that lost its network does.
    self->Fail(absl::UnavailableError(
        self->connected() ? "consent lost: the caller stopped answering ICE checks (RFC 7675)"
                          : "ICE failed: no candidate pair reached the caller"));
    return;
  }
  if ((state == NICE_COMPONENT_STATE_READY || state == NICE_COMPONENT_STATE_CONNECTED) &&
      self->dtls_ && !self->dtls_started_) {
    self->dtls_started_ = true;
    if (absl::Status s = self->dtls_->Start(); !s.ok()) return self->Fail(s);
    self->ArmDtlsTimer();
  }
}

void CallMedia::OnReceive(NiceAgent*, unsigned, unsigned, unsigned len, char* buf, void* data) {
  auto* self = static_cast<CallMedia*>(data);
  self->loop_->AssertInLoop();
  if (self->closed_) return;
  self->Receive(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(buf), len));
}

void CallMedia::Receive(absl::Span<const uint8_t> packet) {
  if (IsDtlsRecord(packet)) {
    if (!dtls_) return;  // before Connect: the peer retransmits
    const bool was_connected = dtls_->connected();
    if (absl::Status s = dtls_->OnRecord(packet); !s.ok()) return Fail(s);
    ArmDtlsTimer();
    if (!was_connected && dtls_->connected()) {
      loop_->Cancel(connect_timer_);
      connect_timer_ = 0;
      StartTicks();
      if (events_.on_connected) events_.on_connected();
    }
    return;
  }
  if (!IsRtpOrRtcp(packet) || !dtls_ || !dtls_->connected()) return;
  std::vector<uint8_t> copy(packet.begin(), packet.end());
  if (IsRtcp(packet)) {
    if (dtls_->UnprotectRtcp(&copy).ok()) ++stats_.rtcp_received;
    return;
  }
  ReceiveRtp(std::move(copy));
}

void CallMedia::ReceiveRtp(std::vector<uint8_t> packet) {
  if (!dtls_->Unprotect(&packet).ok()) {
    ++stats_.undecryptable;
    return;
  }
  std::optional<RtpPacket> rtp = ParseRtp(packet);
  // telephone-event (DTMF) and anything else offered is not audio for the agent.
  if (!rtp || rtp->payload_type != options_.opus_payload_type || rtp->payload.empty()) return;
  jitter_.Push(rtp->sequence, rtp->timestamp, rtp->payload, absl::Now());
  DrainJitter();
}

void CallMedia::DrainJitter() {
  const int rate = options_.pcm_rate;
  while (std::optional<JitterFrame> f = jitter_.Pop(absl::Now())) {
    decoded_.clear();
    absl::StatusOr<int> n;
    absl::Duration waited;
    switch (f->kind) {
      case JitterFrame::Kind::kPacket:
        n = decoder_->Decode(f->payload, &decoded_);
        waited = absl::Now() - f->arrival;
        break;
      case JitterFrame::Kind::kFec:
        n = decoder_->DecodeFec(f->payload, f->samples_48k * rate / 48000, &decoded_);
        break;
      case JitterFrame::Kind::kConceal:
        n = decoder_->Conceal(f->samples_48k * rate / 48000, &decoded_);
        break;
    }
    if (!n.ok() || decoded_.empty()) continue;  // a corrupt packet is a gap
    if (events_.on_audio) events_.on_audio(decoded_, waited);
    if (closed_) return;
  }
}

void CallMedia::ArmDtlsTimer() {
  loop_->Cancel(dtls_timer_);
  dtls_timer_ = 0;
  std::optional<absl::Duration> t = dtls_ ? dtls_->Timeout() : std::nullopt;
  if (!t) return;
  std::weak_ptr<CallMedia> weak = weak_from_this();
  dtls_timer_ = loop_->After(*t, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->loop_->AssertInLoop();
    if (self->closed_) return;
    self->dtls_timer_ = 0;
    if (absl::Status s = self->dtls_->OnTimeout(); !s.ok()) return self->Fail(s);
    self->ArmDtlsTimer();
  });
}

void CallMedia::SendDatagram(absl::Span<const uint8_t> d) {
  if (closed_) return;
  nice_agent_send(agent_, stream_, 1, static_cast<guint>(d.size()),
                  reinterpret_cast<const gchar*>(d.data()));
}

void CallMedia::StartTicks() {
  next_due_us_ = g_get_monotonic_time();
  std::weak_ptr<CallMedia> weak = weak_from_this();
  ticker_ = loop_->AddTicker([weak](int64_t now) {
    auto self = weak.lock();
    if (!self) return;
    self->loop_->AssertInLoop();
    self->Tick(now);
  });
}

// One packet per 20 ms, due on a schedule kept against the monotonic clock
// (tick lateness does not accumulate), checked on the loop's shared tick.
void CallMedia::Tick(int64_t now) {
  if (closed_) return;
  for (int n = 0; next_due_us_ <= now && n < kMaxCatchUp; ++n) {
    SendNext(now);
    if (closed_) return;
    next_due_us_ += kFrameUs;
  }
  if (next_due_us_ <= now) next_due_us_ = now + kFrameUs;  // stalled: skip, don't burst
  DrainJitter();  // gaps whose wait is over
}

void CallMedia::SendNext(int64_t now) {
  const int frame = options_.pcm_rate / 50;
  if (playout_.empty() && !pending_.empty()) {  // a reply's tail: padded out
    pending_.resize(static_cast<size_t>(frame), 0);
    playout_.push_back({std::move(pending_), pending_ready_us_});
    pending_.clear();
  }
  if (!playout_.empty()) {
    QueuedFrame f = std::move(playout_.front());
    playout_.pop_front();
    SendFrame(f.pcm);
    if (events_.on_played) events_.on_played(absl::Microseconds(std::max<int64_t>(0, now - f.ready_us)));
    return;
  }
  static const std::vector<int16_t> kSilence(960, 0);
  SendFrame(absl::MakeConstSpan(kSilence.data(), static_cast<size_t>(frame)));
  ++stats_.silence_sent;
}

void CallMedia::SendFrame(absl::Span<const int16_t> pcm) {
  if (!encoder_->Encode(pcm, &encoded_).ok()) return;
  RtpPacket h;
  h.payload_type = static_cast<uint8_t>(options_.opus_payload_type);
  h.marker = stats_.packets_sent == 0;
  h.sequence = out_seq_++;
  h.timestamp = out_ts_;
  h.ssrc = out_ssrc_;
  out_ts_ += kFrameTicks;
  std::vector<uint8_t> packet = BuildRtp(h, encoded_);
  if (!dtls_->Protect(&packet).ok()) return;
  SendDatagram(packet);
  ++stats_.packets_sent;
}

void CallMedia::Play(absl::Span<const int16_t> pcm) {
  if (closed_) return;
  const size_t frame = static_cast<size_t>(options_.pcm_rate / 50);
  const int64_t now = g_get_monotonic_time();
  // Audio after silence goes out now, not at the silence's next slot: the
  // schedule re-phases to it (the receiver's jitter buffer absorbs one
  // early packet), which saves up to 20 ms on every reply's start.
  const bool was_idle = playout_.empty() && pending_.empty();
  if (pending_.empty()) pending_ready_us_ = std::max(now, last_play_ready_us_ + kFrameUs);
  pending_.insert(pending_.end(), pcm.begin(), pcm.end());
  size_t used = 0;
  while (pending_.size() - used >= frame) {
    QueuedFrame f;
    f.pcm.assign(pending_.begin() + static_cast<long>(used),
                 pending_.begin() + static_cast<long>(used + frame));
    f.ready_us = pending_ready_us_;
    last_play_ready_us_ = pending_ready_us_;
    pending_ready_us_ = std::max(now, last_play_ready_us_ + kFrameUs);
    playout_.push_back(std::move(f));
    used += frame;
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(used));
  if (was_idle && ticker_ != 0 && !playout_.empty() && next_due_us_ > now) {
    next_due_us_ = now;
    Tick(now);
  }
}

void CallMedia::ClearPlayout() {
  playout_.clear();
  pending_.clear();
  last_play_ready_us_ = 0;
}

absl::Duration CallMedia::queued() const {
  const size_t samples = playout_.size() * static_cast<size_t>(options_.pcm_rate / 50) + pending_.size();
  return absl::Seconds(static_cast<double>(samples) / options_.pcm_rate);
}

bool CallMedia::connected() const { return dtls_ && dtls_->connected(); }

CallMediaStats CallMedia::stats() const {
  CallMediaStats s = stats_;
  s.in = jitter_.stats();
  NiceCandidate *local = nullptr, *remote = nullptr;
  if (agent_ != nullptr && nice_agent_get_selected_pair(agent_, stream_, 1, &local, &remote)) {
    s.selected_pair = absl::StrCat(CandidateName(local), " -> ", CandidateName(remote));
  }
  return s;
}

void CallMedia::Fail(const absl::Status& why) {
  if (closed_) return;
  auto on_failed = std::move(events_.on_failed);
  auto gathered = std::move(gathered_);
  Close();
  if (gathered) gathered(why);
  if (on_failed) on_failed(why);
}

void CallMedia::Close() {
  if (closed_) return;
  closed_ = true;
  if (ticker_ != 0) loop_->RemoveTicker(ticker_);
  loop_->Cancel(dtls_timer_);
  loop_->Cancel(connect_timer_);
  ticker_ = dtls_timer_ = connect_timer_ = 0;
  if (agent_ != nullptr) {
    g_signal_handlers_disconnect_by_data(agent_, this);
    nice_agent_attach_recv(agent_, stream_, 1, loop_->context(), nullptr, nullptr);
    nice_agent_remove_stream(agent_, stream_);
    g_object_unref(agent_);
    agent_ = nullptr;
  }
  events_ = CallMediaEvents{};
}

}  // namespace bridge::media_worker
