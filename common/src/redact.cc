#include "common/redact.h"

#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "re2/re2.h"

namespace bridge {
namespace {

struct SecretList {
  absl::Mutex mu;
  std::vector<std::string> values ABSL_GUARDED_BY(mu);
};

SecretList& Secrets() {
  static SecretList* list = new SecretList();  // never destroyed: logs run at exit
  return *list;
}

// Patterns for secrets that were never configured here but may be echoed by a
// peer or a URL. RE2 runs in linear time, so a hostile string cannot stall a
// log call. The first group is kept, the rest replaced.
struct Pattern {
  Pattern(const char* pattern, const char* rw) : re(pattern), rewrite(rw) {}
  RE2 re;
  std::string rewrite;
};

const std::vector<std::unique_ptr<Pattern>>& Patterns() {
  static const auto* patterns = new std::vector<std::unique_ptr<Pattern>>([] {
    std::vector<std::unique_ptr<Pattern>> p;
    auto add = [&p](const char* re, const char* rewrite) {
      p.push_back(std::make_unique<Pattern>(re, rewrite));
    };
    add(R"re((?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,})re", R"re(\1[REDACTED])re");
    add(R"re((?i)(sha256=)[0-9a-f]{8,})re", R"re(\1[REDACTED])re");
    add(R"re((?i)(xi-api-key["']?\s*[:=]\s*["']?)[^\s"',;&]+)re", R"re(\1[REDACTED])re");
    add(R"re((?i)((?:^|[?&;\s])(?:conversation_signature|token|access_token|api_key|xi_api_key|hub\.verify_token|signature|sig)=)[^&\s"'#]+)re",
        R"re(\1[REDACTED])re");
    add(R"re((?i)("(?:access_token|token|api_key|xi_api_key|app_secret|secret|password|signed_url)"\s*:\s*")[^"]*)re",
        R"re(\1[REDACTED])re");
    return p;
  }());
  return *patterns;
}

}  // namespace

void RegisterSecret(absl::string_view value) {
  if (value.size() < 4) return;
  SecretList& s = Secrets();
  absl::MutexLock lock(&s.mu);
  for (const auto& v : s.values) {
    if (v == value) return;
  }
  s.values.emplace_back(value);
}

std::string Redact(absl::string_view text) {
  std::string out(text);
  {
    SecretList& s = Secrets();
    absl::MutexLock lock(&s.mu);
    for (const auto& v : s.values) {
      if (out.find(v) != std::string::npos) absl::StrReplaceAll({{v, kRedacted}}, &out);
    }
  }
  for (const auto& p : Patterns()) RE2::GlobalReplace(&out, p->re, p->rewrite);
  return out;
}

absl::Status RedactStatus(const absl::Status& status) {
  if (status.ok()) return status;
  absl::Status out(status.code(), Redact(status.message()));
  // Payloads (e.g. a GraphError) carry structure callers decide on: keep them.
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

}  // namespace bridge
