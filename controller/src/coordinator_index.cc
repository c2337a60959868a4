// The session index: one session per business number and user, found by
// the user's BSUID or phone, and created on a user's first message.
#include "coordinator.h"

#include <atomic>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "coordinator_internal.h"

namespace bridge::controller {
namespace {

// One session per business number and user. A user has up to two keys
// (coordinator_internal.h): the business-scoped id (BSUID, stable) and the
// phone (shared only sometimes).

std::string NewSessionId() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("s_%x%04x", absl::ToUnixMicros(absl::Now()), counter++ & 0xffff);
}

}  // namespace

void Coordinator::Index(const SessionEntry& e) {
  const v1::Session& s = e.session;
  if (!s.user_id().empty()) by_key_[BsuidKey(s.phone_number_id(), s.user_id())] = s.session_id();
  if (!s.wa_id().empty()) by_key_[PhoneKey(s.phone_number_id(), s.wa_id())] = s.session_id();
}

void Coordinator::Unindex(const SessionEntry& e) {
  const v1::Session& s = e.session;
  for (const std::string& key : {BsuidKey(s.phone_number_id(), s.user_id()),
                                 PhoneKey(s.phone_number_id(), s.wa_id())}) {
    auto it = by_key_.find(key);
    if (it != by_key_.end() && it->second == s.session_id()) by_key_.erase(it);
  }
}

Coordinator::SessionEntry* Coordinator::Find(const std::string& session_id) {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

Coordinator::SessionEntry* Coordinator::FindUser(const std::string& phone_number_id,
                                                 const std::string& user) {
  for (const std::string& key : {BsuidKey(phone_number_id, user), PhoneKey(phone_number_id, user)}) {
    auto it = by_key_.find(key);
    if (it != by_key_.end()) return Find(it->second);
  }
  return nullptr;
}

Coordinator::SessionEntry* Coordinator::FindSession(const v1::UserRef& from,
                                                    const std::string& phone_number_id) {
  auto lookup = [&](const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> SessionEntry* {
    auto it = by_key_.find(key);
    return it == by_key_.end() ? nullptr : Find(it->second);
  };
  // The BSUID first: it is the stable key.
  if (!from.user_id().empty()) {
    if (SessionEntry* s = lookup(BsuidKey(phone_number_id, from.user_id()))) return s;
  }
  if (from.wa_id().empty()) return nullptr;
  SessionEntry* s = lookup(PhoneKey(phone_number_id, from.wa_id()));
  // A phone already linked to another BSUID is a recycled number: a new user.
  if (s != nullptr && !from.user_id().empty() && !s->session.user_id().empty() &&
      s->session.user_id() != from.user_id()) {
    return nullptr;
  }
  return s;
}

// Links what a message says about its sender to the session: the BSUID to a
// session found by phone (sessions from before BSUIDs), a phone that appeared
// or changed, a new profile name or username. True when anything changed.
bool Coordinator::Link(SessionEntry* e, const v1::UserRef& from) {
  v1::Session& s = e->session;
  bool changed = false;
  auto update = [&changed](const std::string& v, std::string* field) {
    if (v.empty() || v == *field) return;
    *field = v;
    changed = true;
  };
  if (from.user_id() != s.user_id() || (!from.wa_id().empty() && from.wa_id() != s.wa_id())) {
    Unindex(*e);
    update(from.user_id(), s.mutable_user_id());
    update(from.wa_id(), s.mutable_wa_id());  // a phone that disappears stays known
    Index(*e);
  }
  update(from.profile_name(), s.mutable_profile_name());
  update(from.username(), s.mutable_username());
  return changed;
}

Coordinator::SessionEntry* Coordinator::FindOrCreateSession(const v1::InboundMessage& m,
                                                            bool* created, bool* changed) {
  *created = false;
  *changed = false;
  if (SessionEntry* s = FindSession(m.from(), m.phone_number_id())) {
    *changed = Link(s, m.from());
    return s;
  }
  *created = true;
  auto e = std::make_unique<SessionEntry>();
  v1::Session& s = e->session;
  s.set_session_id(NewSessionId());
  s.set_phone_number_id(m.phone_number_id());
  s.set_wa_id(m.from().wa_id());
  s.set_user_id(m.from().user_id());
  s.set_profile_name(m.from().profile_name());
  s.set_username(m.from().username());
  s.set_state(v1::SESSION_STATE_PENDING);
  s.set_kind(v1::SESSION_KIND_WHATSAPP);
  *s.mutable_created_at() = Ts(absl::Now());
  *s.mutable_last_activity_at() = Ts(absl::Now());
  SessionEntry* raw = e.get();
  Index(*raw);
  sessions_[s.session_id()] = std::move(e);
  return raw;
}

}  // namespace bridge::controller
