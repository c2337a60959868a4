// DTLS-SRTP for one call (RFC 5763/5764) with OpenSSL and libsrtp2: the
// handshake runs over the call's ICE component through memory BIOs (no
// socket of its own), the peer's certificate is checked against the SHA-256
// fingerprint its SDP gave, and the keys exported from the handshake key
// libsrtp2's SRTP and SRTCP contexts. Not thread-safe: one call's media
// thread drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct srtp_ctx_t_ srtp_ctx_t;

namespace bridge::media_worker {

// The worker's DTLS certificate: ECDSA P-256, self-signed, made at start-up
// and shared by every call (WebRTC identifies peers by fingerprint, not by
// name). Thread-safe after Generate.
class DtlsIdentity {
 public:
  static absl::StatusOr<std::shared_ptr<const DtlsIdentity>> Generate();
  ~DtlsIdentity();
  // "AB:CD:…" (32 bytes), for a=fingerprint:sha-256.
  const std::string& fingerprint_sha256() const { return fingerprint_; }
  SSL_CTX* ctx() const { return ctx_; }

 private:
  DtlsIdentity(SSL_CTX* ctx, std::string fingerprint) : ctx_(ctx), fingerprint_(std::move(fingerprint)) {}
  SSL_CTX* ctx_;
  std::string fingerprint_;
};

// Who starts the handshake: a=setup:active is the client.
enum class DtlsRole { kClient, kServer };

// First byte of a packet on a WebRTC 5-tuple (RFC 7983).
bool IsDtlsRecord(absl::Span<const uint8_t> packet);
bool IsRtpOrRtcp(absl::Span<const uint8_t> packet);
// With rtcp-mux: RTCP's packet types 192..223 sit where RTP's payload type is.
bool IsRtcp(absl::Span<const uint8_t> packet);

class DtlsSrtp {
 public:
  using Send = std::function<void(absl::Span<const uint8_t> datagram)>;
  // `remote_fingerprint`: the peer's a=fingerprint:sha-256 value.
  DtlsSrtp(std::shared_ptr<const DtlsIdentity> identity, DtlsRole role,
           std::string remote_fingerprint, Send send);
  ~DtlsSrtp();
  DtlsSrtp(const DtlsSrtp&) = delete;
  DtlsSrtp& operator=(const DtlsSrtp&) = delete;

  // The transport is up: a client sends its ClientHello.
  absl::Status Start();
  // A DTLS record from the peer. An error ends the call: the handshake
  // failed, or the certificate does not match the fingerprint.
  absl::Status OnRecord(absl::Span<const uint8_t> record);
  // When to call OnTimeout (a lost flight is sent again); nullopt: no timer.
  std::optional<absl::Duration> Timeout() const;
  absl::Status OnTimeout();
  bool connected() const { return srtp_in_ != nullptr; }
  // The SRTP profile negotiated ("SRTP_AES128_CM_SHA1_80"), once connected.
  std::string profile() const { return profile_; }

  // In place; the packet grows by the auth tag. Only once connected.
  absl::Status Protect(std::vector<uint8_t>* rtp);
  // In place; fails on a forged, replayed or undecryptable packet.
  absl::Status Unprotect(std::vector<uint8_t>* srtp);
  absl::Status UnprotectRtcp(std::vector<uint8_t>* srtcp);

 private:
  absl::Status Advance();  // runs the handshake on; its writes go out as datagrams
  absl::Status Connected();

  std::shared_ptr<const DtlsIdentity> identity_;
  const DtlsRole role_;
  const std::string remote_fingerprint_;
  Send send_;
  SSL* ssl_ = nullptr;
  srtp_ctx_t* srtp_in_ = nullptr;
  srtp_ctx_t* srtp_out_ = nullptr;
  std::string profile_;
  bool failed_ = false;
};

}  // namespace bridge::media_worker
