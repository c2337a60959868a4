#include "dtls_srtp.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <srtp2/srtp.h>

#include <cstring>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace bridge::media_worker {
namespace {

// libsrtp2 as Debian builds it has no OpenSSL backend, so no AES-GCM: the
// profile every WebRTC stack offers is the one we take.
constexpr char kSrtpProfiles[] = "SRTP_AES128_CM_SHA1_80";
constexpr int kKeyLen = 16, kSaltLen = 14;
// Below any path MTU a call sees; DTLS fragments the handshake to fit.
constexpr long kDtlsMtu = 1200;

std::string OpenSslError(absl::string_view what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = "no detail";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return absl::StrCat(what, ": ", buf);
}

std::string Fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(cert, EVP_sha256(), md, &n) != 1) return "";
  std::vector<std::string> hex;
  for (unsigned int i = 0; i < n; ++i) hex.push_back(absl::StrCat(absl::Hex(md[i], absl::kZeroPad2)));
  return absl::AsciiStrToUpper(absl::StrJoin(hex, ":"));
}

// The peer's certificate is checked against its SDP fingerprint once the
// handshake is done; there is no CA to check it against before.
int AcceptAnyCertificate(int, X509_STORE_CTX*) { return 1; }

// The write side is a BIO that hands each write to the call's ICE component
// as one datagram: a memory BIO would glue a flight's datagrams together
// (OpenSSL 3.0 has no datagram memory BIO), past the MTU DTLS fragments to.
int DatagramWrite(BIO* bio, const char* data, int len) {
  auto* send = static_cast<DtlsSrtp::Send*>(BIO_get_data(bio));
  (*send)(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len)));
  return len;
}

long DatagramCtrl(BIO*, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
      return kDtlsMtu;
    default:
      return 0;
  }
}

const BIO_METHOD* DatagramMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ice-datagram");
    BIO_meth_set_write(m, DatagramWrite);
    BIO_meth_set_ctrl(m, DatagramCtrl);
    BIO_meth_set_create(m, [](BIO* b) {
      BIO_set_init(b, 1);
      return 1;
    });
    return m;
  }();
  return method;
}

void InitSrtpOnce() {
  static std::once_flag once;
  std::call_once(once, [] { srtp_init(); });
}

absl::Status SrtpError(absl::string_view what, srtp_err_status_t e) {
  return absl::InternalError(absl::StrCat(what, " failed (libsrtp2 error ", static_cast<int>(e), ")"));
}

absl::StatusOr<srtp_ctx_t*> MakeSrtp(const uint8_t* key, const uint8_t* salt, bool inbound) {
  uint8_t master[kKeyLen + kSaltLen];
  std::memcpy(master, key, kKeyLen);
  std::memcpy(master + kKeyLen, salt, kSaltLen);
  srtp_policy_t policy;
  std::memset(&policy, 0, sizeof policy);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
  srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
  policy.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
  policy.key = master;
  policy.window_size = 1024;  // reordering tolerated before a packet counts as a replay
  policy.allow_repeat_tx = 1;
  srtp_ctx_t* ctx = nullptr;
  if (srtp_err_status_t e = srtp_create(&ctx, &policy); e != srtp_err_status_ok) {
    return SrtpError("srtp_create", e);
  }
  return ctx;
}

}  // namespace

bool IsDtlsRecord(absl::Span<const uint8_t> p) { return !p.empty() && p[0] >= 20 && p[0] <= 63; }
bool IsRtpOrRtcp(absl::Span<const uint8_t> p) { return p.size() >= 12 && p[0] >= 128 && p[0] <= 191; }
bool IsRtcp(absl::Span<const uint8_t> p) { return p.size() >= 8 && p[1] >= 192 && p[1] <= 223; }

absl::StatusOr<std::shared_ptr<const DtlsIdentity>> DtlsIdentity::Generate() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) return absl::InternalError(OpenSslError("EC key generation"));
  X509* cert = X509_new();
  uint64_t serial = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&serial), sizeof serial);
  X509_set_version(cert, 2);
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial >> 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -86400);            // clock skew
  X509_gmtime_adj(X509_getm_notAfter(cert), 365L * 24 * 3600);    // made at every start
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("bridge-worker"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_set_pubkey(cert, key);
  SSL_CTX* ctx = nullptr;
  std::string fingerprint;
  if (X509_sign(cert, key, EVP_sha256()) > 0 && (ctx = SSL_CTX_new(DTLS_method())) != nullptr) {
    SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION);
    SSL_CTX_use_certificate(ctx, cert);
    SSL_CTX_use_PrivateKey(ctx, key);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, AcceptAnyCertificate);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_tlsext_use_srtp(ctx, kSrtpProfiles) != 0) {  // 0 is success here
      SSL_CTX_free(ctx);
      ctx = nullptr;
    }
    fingerprint = Fingerprint(cert);
  }
  std::string error = ctx == nullptr ? OpenSslError("DTLS context") : "";
  X509_free(cert);
  EVP_PKEY_free(key);
  if (ctx == nullptr) return absl::InternalError(error);
  InitSrtpOnce();
  return std::shared_ptr<const DtlsIdentity>(new DtlsIdentity(ctx, std::move(fingerprint)));
}

DtlsIdentity::~DtlsIdentity() { SSL_CTX_free(ctx_); }

DtlsSrtp::DtlsSrtp(std::shared_ptr<const DtlsIdentity> identity, DtlsRole role,
                   std::string remote_fingerprint, Send send)
    : identity_(std::move(identity)),
      role_(role),
      remote_fingerprint_(absl::AsciiStrToUpper(remote_fingerprint)),
      send_(std::move(send)) {
  ssl_ = SSL_new(identity_->ctx());
  BIO* out = BIO_new(DatagramMethod());
  BIO_set_data(out, &send_);
  SSL_set_bio(ssl_, BIO_new(BIO_s_mem()), out);
  SSL_set_options(ssl_, SSL_OP_NO_QUERY_MTU);
  DTLS_set_link_mtu(ssl_, kDtlsMtu);
  if (role_ == DtlsRole::kClient) {
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

DtlsSrtp::~DtlsSrtp() {
  if (srtp_in_ != nullptr) srtp_dealloc(srtp_in_);
  if (srtp_out_ != nullptr) srtp_dealloc(srtp_out_);
  SSL_free(ssl_);
}

absl::Status DtlsSrtp::Start() {
  if (role_ == DtlsRole::kServer) return absl::OkStatus();  // waits for the ClientHello
  return Advance();
}

absl::Status DtlsSrtp::OnRecord(absl::Span<const uint8_t> record) {
  if (failed_) return absl::FailedPreconditionError("DTLS already failed");
  BIO_write(SSL_get_rbio(ssl_), record.data(), static_cast<int>(record.size()));
  if (!connected()) return Advance();
  // After the handshake: alerts, close_notify, retransmitted Finished.
  unsigned char buf[2048];
  const int n = SSL_read(ssl_, buf, sizeof buf);
  if (n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN) {
    failed_ = true;
    return absl::CancelledError("the peer closed DTLS (close_notify)");
  }
  ERR_clear_error();
  return absl::OkStatus();
}

std::optional<absl::Duration> DtlsSrtp::Timeout() const {
  if (connected() || failed_) return std::nullopt;
  timeval tv{};
  if (DTLSv1_get_timeout(ssl_, &tv) != 1) return std::nullopt;
  return absl::DurationFromTimeval(tv);
}

absl::Status DtlsSrtp::OnTimeout() {
  if (connected() || failed_) return absl::OkStatus();
  if (DTLSv1_handle_timeout(ssl_) < 0) {
    failed_ = true;
    return absl::DeadlineExceededError(OpenSslError("DTLS handshake timed out"));
  }
  return absl::OkStatus();
}

absl::Status DtlsSrtp::Advance() {
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) return Connected();
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return absl::OkStatus();
  failed_ = true;
  return absl::UnavailableError(OpenSslError("DTLS handshake failed"));
}

absl::Status DtlsSrtp::Connected() {
  X509* peer = SSL_get1_peer_certificate(ssl_);
  const std::string got = peer != nullptr ? Fingerprint(peer) : "";
  X509_free(peer);
  if (got.empty() || got != remote_fingerprint_) {
    failed_ = true;
    return absl::PermissionDeniedError(
        "the peer's DTLS certificate does not match the SDP's sha-256 fingerprint");
  }
  const SRTP_PROTECTION_PROFILE* p = SSL_get_selected_srtp_profile(ssl_);
  if (p == nullptr || p->id != SRTP_AES128_CM_SHA1_80) {
    failed_ = true;
    return absl::FailedPreconditionError("the peer agreed no SRTP profile we support");
  }
  profile_ = p->name;
  uint8_t km[2 * (kKeyLen + kSaltLen)];
  static constexpr char kLabel[] = "EXTRACTOR-dtls_srtp";
  if (SSL_export_keying_material(ssl_, km, sizeof km, kLabel, sizeof kLabel - 1, nullptr, 0, 0) != 1) {
    failed_ = true;
    return absl::InternalError(OpenSslError("SRTP key export"));
  }
  // RFC 5764 4.2: client key, server key, client salt, server salt.
  const uint8_t* client_key = km;
  const uint8_t* server_key = km + kKeyLen;
  const uint8_t* client_salt = km + 2 * kKeyLen;
  const uint8_t* server_salt = km + 2 * kKeyLen + kSaltLen;
  const bool client = role_ == DtlsRole::kClient;
  auto in = MakeSrtp(client ? server_key : client_key, client ? server_salt : client_salt, true);
  auto out = MakeSrtp(client ? client_key : server_key, client ? client_salt : server_salt, false);
  OPENSSL_cleanse(km, sizeof km);
  if (!in.ok() || !out.ok()) {
    if (in.ok()) srtp_dealloc(*in);
    if (out.ok()) srtp_dealloc(*out);
    failed_ = true;
    return in.ok() ? out.status() : in.status();
  }
  srtp_out_ = *out;
  srtp_in_ = *in;
  return absl::OkStatus();
}

namespace {

// One libsrtp2 call in place: the packet grows by up to `room` first (the
// auth tag) and takes the length libsrtp2 leaves.
using SrtpFn = srtp_err_status_t (*)(srtp_t, void*, int*);
absl::Status RunSrtp(SrtpFn fn, const char* name, srtp_t ctx, size_t room,
                     std::vector<uint8_t>* packet) {
  if (ctx == nullptr) return absl::FailedPreconditionError("SRTP not keyed yet");
  int len = static_cast<int>(packet->size());
  packet->resize(packet->size() + room);
  const srtp_err_status_t e = fn(ctx, packet->data(), &len);
  packet->resize(e == srtp_err_status_ok ? static_cast<size_t>(len) : packet->size() - room);
  return e == srtp_err_status_ok ? absl::OkStatus() : SrtpError(name, e);
}

}  // namespace

absl::Status DtlsSrtp::Protect(std::vector<uint8_t>* rtp) {
  return RunSrtp(srtp_protect, "srtp_protect", srtp_out_, SRTP_MAX_TRAILER_LEN, rtp);
}

absl::Status DtlsSrtp::Unprotect(std::vector<uint8_t>* srtp) {
  return RunSrtp(srtp_unprotect, "srtp_unprotect", srtp_in_, 0, srtp);
}

absl::Status DtlsSrtp::UnprotectRtcp(std::vector<uint8_t>* srtcp) {
  return RunSrtp(srtp_unprotect_rtcp, "srtp_unprotect_rtcp", srtp_in_, 0, srtcp);
}

}  // namespace bridge::media_worker
