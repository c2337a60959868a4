// Erasure (GDPR Art. 17): everything the controller keeps of a user goes —
// sessions (live and ended, which hold the BSUID <-> phone link), queued
// turns, transcript, memory, what was sent to them — except the message-id
// dedup keys, which hold no content and keep Meta's retries from bringing a
// forgotten message back. The erasure itself is recorded without content.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator.h"
#include "coordinator_internal.h"

namespace bridge::controller {
namespace {

bool IsUser(const v1::Session& s, const std::string& phone_number_id, const std::string& user) {
  return s.phone_number_id() == phone_number_id && s.kind() != v1::SESSION_KIND_CONVERSE &&
         ((!s.wa_id().empty() && s.wa_id() == user) || (!s.user_id().empty() && s.user_id() == user));
}

void AddUnique(std::vector<std::string>* v, const std::string& x) {
  if (!x.empty() && std::find(v->begin(), v->end(), x) == v->end()) v->push_back(x);
}

}  // namespace

absl::StatusOr<v1::ForgetUserResponse> Coordinator::ForgetUser(
    const std::string& phone_number_id, const std::string& user,
    std::vector<std::string>* conversations) {
  if (phone_number_id.empty() || user.empty()) {
    return absl::InvalidArgumentError("give phone_number_id and user (phone or BSUID)");
  }
  // The store's session records, ended ones included (kept for dedup_ttl):
  // they name the user's other key and their conversations.
  auto stored = store_->Range("s/");
  if (!stored.ok()) return stored.status();
  v1::ForgetUserResponse out;
  Txn txn;
  std::vector<std::string> user_keys = {PhoneKey(phone_number_id, user),
                                        BsuidKey(phone_number_id, user)};
  std::vector<std::string> session_ids;
  for (const KeyValue& kv : *stored) {
    v1::Session s;
    if (!s.ParseFromString(kv.value) || !IsUser(s, phone_number_id, user)) continue;
    AddUnique(&session_ids, s.session_id());
    AddUnique(conversations, s.conversation_id());
    AddUnique(&user_keys, UserKey(s));
    if (!s.wa_id().empty()) AddUnique(&user_keys, PhoneKey(s.phone_number_id(), s.wa_id()));
  }
  // Links outlive the session records: the other key of a user whose
  // sessions have all expired.
  if (absl::Status s = AddLinkedKeys(&user_keys); !s.ok()) return s;
  for (const std::string& key : user_keys) {
    auto entries = store_->Range(TranscriptPrefix(key));
    if (!entries.ok()) return entries.status();
    for (const KeyValue& kv : *entries) {
      v1::TranscriptEntry e;
      if (e.ParseFromString(kv.value)) AddUnique(conversations, e.conversation_id());
    }
    out.set_transcript_entries_deleted(out.transcript_entries_deleted() +
                                       static_cast<int32_t>(entries->size()));
    txn.DeletePrefix(TranscriptPrefix(key));
    txn.Delete(MemoryKey(key));
    txn.Delete(LinkKey(key));
  }
  {
    Locked lock(this);
    for (auto& [id, s] : sessions_) {
      if (IsUser(s->session, phone_number_id, user)) AddUnique(&session_ids, id);
    }
    for (const std::string& id : session_ids) {
      if (SessionEntry* s = Find(id)) {
        out.set_turns_deleted(out.turns_deleted() +
                              static_cast<int32_t>(s->pending.size() + (s->inflight ? 1 : 0)));
        out.set_links_deleted(out.links_deleted() +
                              (!s->session.wa_id().empty() && !s->session.user_id().empty()));
        AddUnique(conversations, s->session.conversation_id());
        if (s->session.state() != v1::SESSION_STATE_ENDED) {
          End(s, "user forgotten");
          out.add_sessions_ended(id);
        }
        sessions_.erase(id);
      }
      txn.Delete(SessionKey(id));
      txn.DeletePrefix(TurnPrefix(id));
      // Exports not yet delivered carry the user's words: withdrawn.
      txn.DeletePrefix(absl::StrCat("o/", id, "-"));
      for (auto it = sent_.begin(); it != sent_.end();) {
        if (it->second.session_id != id) {
          ++it;
          continue;
        }
        txn.Delete(SentKey(it->first));
        it = sent_.erase(it);
      }
    }
    for (const std::string& key : user_keys) {
      out.set_memory_deleted(out.memory_deleted() || memory_.erase(key) > 0);
    }
    metrics_.erasures->Increment();
    UpdateGauges(/*force=*/true);
  }
  if (auto r = store_->Commit(std::move(txn)); !r.ok()) return r.status();
  LogInfo("user forgotten", {{"phone_number_id", phone_number_id},
                             {"sessions", session_ids.size()},
                             {"transcript_entries", out.transcript_entries_deleted()},
                             {"conversations", conversations->size()}});
  return out;
}

absl::Status Coordinator::RecordErasure(const std::string& phone_number_id,
                                        const v1::ForgetUserResponse& done) {
  v1::ForgetUserResponse audit = done;
  audit.clear_sessions_ended();  // session ids lead back to nothing, but say no more than needed
  Txn txn;
  txn.Put(ErasureKey(absl::StrFormat("%d-%s", absl::ToUnixMicros(absl::Now()), phone_number_id)),
          audit.SerializeAsString());
  return store_->Commit(std::move(txn)).status();
}

}  // namespace bridge::controller
