// A throwaway CA and server certificate, made with the OpenSSL 3 C API so the
// tests need no `openssl` binary.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "test_pki.h"

namespace bridge::testing {
namespace {

struct Deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(FILE* p) const { std::fclose(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter>;
using CertPtr = std::unique_ptr<X509, Deleter>;
using FilePtr = std::unique_ptr<FILE, Deleter>;

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// Signs a certificate for `key`; issuer == nullptr makes it self-signed.
CertPtr MakeCert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                 bool is_ca, const std::string& sans) {
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash") &&
            AddExtension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  if (is_ca) {
    ok = ok && AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature") &&
         AddExtension(cert.get(), signer, NID_ext_key_usage, "serverAuth") &&
         AddExtension(cert.get(), signer, NID_subject_alt_name, sans);
  }
  if (!ok || X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0) {
    return nullptr;
  }
  return cert;
}

bool WriteCert(const std::string& path, X509* cert) {
  FilePtr f(std::fopen(path.c_str(), "w"));
  return f && PEM_write_X509(f.get(), cert) == 1;
}

bool WriteKey(const std::string& path, EVP_PKEY* key) {
  FilePtr f(std::fopen(path.c_str(), "w"));
  return f && PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
}

}  // namespace

absl::StatusOr<TestPki> MakeTestPki(const std::string& sans) {
  static std::atomic<int> counter{0};
  // pid + counter keep parallel runs of this binary from sharing files.
  std::string prefix = absl::StrCat(::testing::TempDir(), "pki_", ::getpid(), "_",
                                    counter.fetch_add(1), "_");
  KeyPtr ca_key(EVP_EC_gen("P-256"));
  KeyPtr server_key(EVP_EC_gen("P-256"));
  if (!ca_key || !server_key) return absl::InternalError("EC key generation failed");
  CertPtr ca = MakeCert(ca_key.get(), "ws test CA", nullptr, nullptr, true, "");
  if (!ca) return absl::InternalError("CA certificate failed");
  CertPtr leaf = MakeCert(server_key.get(), "ws test server", ca.get(), ca_key.get(), false, sans);
  if (!leaf) return absl::InternalError("server certificate failed");
  TestPki pki{prefix + "ca.pem", prefix + "server.pem", prefix + "server.key"};
  if (!WriteCert(pki.ca_cert, ca.get()) || !WriteCert(pki.server_cert, leaf.get()) ||
      !WriteKey(pki.server_key, server_key.get())) {
    return absl::InternalError(absl::StrCat("cannot write PEM files under ", prefix));
  }
  return pki;
}

}  // namespace bridge::testing
