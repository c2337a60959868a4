// The transcript and memory: every exchange is recorded per user ("h/",
// kept --transcript_retention), and the user's last --memory_turns exchanges
// ("r/", kept --memory_ttl) go with each assignment, so that a new agent
// conversation — after an idle close, a session end, a worker failover or a
// controller takeover — starts with what was said before.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "coordinator.h"
#include "coordinator_internal.h"

namespace bridge::controller {
namespace {

// A memory line is context, not an archive: long texts are cut (the
// transcript keeps them whole), which bounds a user's memory record to about
// memory_turns x lines x kMaxMemoryLine bytes.
constexpr size_t kMaxMemoryLine = 1000;

std::string Cut(const std::string& text, size_t max) {
  if (text.size() <= max) return text;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // UTF-8 boundary
  return absl::StrCat(text.substr(0, n), "…");
}

const char* SpeakerName(v1::Speaker s) {
  switch (s) {
    case v1::SPEAKER_USER: return "user";
    case v1::SPEAKER_AGENT: return "agent";
    case v1::SPEAKER_OPERATOR: return "operator";
    default: return "system";
  }
}

v1::TranscriptEntry ForMemory(const v1::TranscriptEntry& e) {
  v1::TranscriptEntry m;
  m.set_turn_id(e.turn_id());
  *m.mutable_at() = e.at();
  for (const v1::TranscriptLine& l : e.lines()) {
    // What the bridge itself said (apologies, the handoff note) is not the
    // conversation: the worker leaves it out of its context too.
    if (l.speaker() == v1::SPEAKER_SYSTEM) continue;
    v1::TranscriptLine* c = m.add_lines();
    c->set_speaker(l.speaker());
    c->set_text(Cut(l.text(), kMaxMemoryLine));
  }
  return m;
}

}  // namespace

void Coordinator::RecordExchange(SessionEntry* s, const v1::Turn& turn, const v1::TurnResult& r,
                                 double queue_ms, Txn* txn) {
  v1::TranscriptEntry e;
  e.set_turn_id(r.turn_id());
  *e.mutable_lines() = r.lines();
  e.set_outcome(r.outcome());
  e.set_reason(r.reason());
  *e.mutable_latency() = r.latency();
  e.mutable_latency()->set_queue_ms(queue_ms);
  e.set_conversation_id(r.conversation_id());
  e.set_operator_(turn.operator_());
  if (e.lines().empty() && r.outcome() == v1::TURN_OUTCOME_DONE) return;  // nothing was said
  Record(s, std::move(e), txn);
}

void Coordinator::Record(SessionEntry* s, v1::TranscriptEntry e, Txn* txn) {
  const v1::Session& ss = s->session;
  const absl::Time now = absl::Now();
  e.set_session_id(ss.session_id());
  e.set_phone_number_id(ss.phone_number_id());
  e.set_wa_id(ss.wa_id());
  e.set_user_id(ss.user_id());
  *e.mutable_at() = Ts(now);
  const std::string user = UserKey(ss);
  const absl::Time kept_until = now + std::max(options_.transcript_retention, options_.memory_ttl);
  txn->Put(TranscriptPrefix(user) + e.turn_id(), e.SerializeAsString(),
           now + options_.transcript_retention);
  if (!ss.user_id().empty() && !ss.wa_id().empty()) {
    const std::string phone = PhoneKey(ss.phone_number_id(), ss.wa_id());
    txn->Put(LinkKey(phone), user, kept_until);
    txn->Put(LinkKey(user), phone, kept_until);
  }
  if (options_.memory_turns > 0) {
    std::deque<v1::TranscriptEntry>& memory = memory_[user];
    // A user first known by phone who now has a BSUID: one memory, under it.
    if (const std::string phone = PhoneKey(ss.phone_number_id(), ss.wa_id());
        phone != user && !ss.wa_id().empty()) {
      if (auto it = memory_.find(phone); it != memory_.end()) {
        memory.insert(memory.begin(), it->second.begin(), it->second.end());
        memory_.erase(it);
        txn->Delete(MemoryKey(phone));
      }
    }
    if (v1::TranscriptEntry m = ForMemory(e); m.lines_size() > 0) memory.push_back(std::move(m));
    while (memory.size() > static_cast<size_t>(options_.memory_turns)) memory.pop_front();
    v1::GetTranscriptResponse record;
    for (const auto& m : memory) *record.add_entries() = m;
    txn->Put(MemoryKey(user), record.SerializeAsString(), now + options_.memory_ttl);
  }
  if (options_.export_entry) options_.export_entry(e, txn);
  metrics_.transcript_entries->Increment();
  Notify(v1::SESSION_EVENT_TYPE_TRANSCRIPT, *s, &e);
}

// The user's last exchanges within memory_ttl, as context lines.
void Coordinator::FillMemory(SessionEntry* s,
                             google::protobuf::RepeatedPtrField<std::string>* lines) {
  const v1::Session& ss = s->session;
  std::vector<const v1::TranscriptEntry*> entries;
  const absl::Time oldest = absl::Now() - options_.memory_ttl;
  for (const std::string& key : {UserKey(ss), PhoneKey(ss.phone_number_id(), ss.wa_id())}) {
    auto it = memory_.find(key);
    if (it == memory_.end()) continue;
    for (const auto& e : it->second) {
      if (FromTs(e.at()) >= oldest) entries.push_back(&e);
    }
    if (ss.user_id().empty()) break;  // one key only
  }
  std::sort(entries.begin(), entries.end(), [](const auto* x, const auto* y) {
    return FromTs(x->at()) < FromTs(y->at());
  });
  const size_t keep = static_cast<size_t>(std::max(0, options_.memory_turns));
  if (entries.size() > keep) entries.erase(entries.begin(), entries.end() - static_cast<long>(keep));
  for (const auto* e : entries) {
    for (const auto& l : e->lines()) {
      lines->Add(absl::StrCat(SpeakerName(l.speaker()), ": ", l.text()));
    }
  }
  s->session.set_memory_turns_used(static_cast<int32_t>(entries.size()));
}

void Coordinator::PruneMemory(absl::Time now) {
  const absl::Time oldest = now - options_.memory_ttl;
  for (auto it = memory_.begin(); it != memory_.end();) {
    std::deque<v1::TranscriptEntry>& d = it->second;
    while (!d.empty() && FromTs(d.front().at()) < oldest) d.pop_front();
    it = d.empty() ? memory_.erase(it) : std::next(it);
  }
}

void Coordinator::LoadMemory(const std::vector<KeyValue>& records) {
  for (const KeyValue& kv : records) {
    v1::GetTranscriptResponse r;
    if (!r.ParseFromString(kv.value)) continue;
    auto& d = memory_[kv.key.substr(2)];
    d.assign(r.entries().begin(), r.entries().end());
  }
  PruneMemory(absl::Now());
}

// Adds the keys linked to `keys` (a BSUID's phone, a phone's BSUID), once.
absl::Status Coordinator::AddLinkedKeys(std::vector<std::string>* keys) {
  const std::vector<std::string> given = *keys;
  for (const std::string& key : given) {
    auto link = store_->Get(LinkKey(key));
    if (!link.ok()) return link.status();
    if (link->has_value()) keys->push_back((*link)->value);
  }
  std::sort(keys->begin(), keys->end());
  keys->erase(std::unique(keys->begin(), keys->end()), keys->end());
  return absl::OkStatus();
}

absl::StatusOr<v1::GetTranscriptResponse> Coordinator::GetTranscript(
    const v1::GetTranscriptRequest& req) {
  std::vector<std::string> keys;
  std::string only_session;
  // A session ended long ago has left memory; its record is still stored.
  v1::Session stored;
  if (!req.session_id().empty()) {
    auto kv = store_->Get(SessionKey(req.session_id()));
    if (!kv.ok()) return kv.status();
    if (kv->has_value()) stored.ParseFromString((*kv)->value);
  }
  {
    absl::MutexLock lock(&mu_);
    const v1::Session* ss = nullptr;
    if (!req.session_id().empty()) {
      only_session = req.session_id();
      if (SessionEntry* s = Find(req.session_id())) {
        ss = &s->session;
      } else if (!stored.session_id().empty()) {
        ss = &stored;
      } else {
        return absl::NotFoundError(absl::StrCat("no session ", req.session_id()));
      }
    } else if (!req.phone_number_id().empty() && !req.user().empty()) {
      if (SessionEntry* s = FindUser(req.phone_number_id(), req.user())) ss = &s->session;
      keys = {PhoneKey(req.phone_number_id(), req.user()), BsuidKey(req.phone_number_id(), req.user())};
    } else {
      return absl::InvalidArgumentError("give session_id, or phone_number_id and user");
    }
    if (ss != nullptr) {
      if (!ss->user_id().empty()) keys.push_back(BsuidKey(ss->phone_number_id(), ss->user_id()));
      if (!ss->wa_id().empty()) keys.push_back(PhoneKey(ss->phone_number_id(), ss->wa_id()));
    }
  }
  if (absl::Status s = AddLinkedKeys(&keys); !s.ok()) return s;
  v1::GetTranscriptResponse out;
  for (const std::string& key : keys) {
    auto kvs = store_->Range(TranscriptPrefix(key));
    if (!kvs.ok()) return kvs.status();
    for (const KeyValue& kv : *kvs) {
      v1::TranscriptEntry e;
      if (!e.ParseFromString(kv.value)) continue;
      if (!only_session.empty() && e.session_id() != only_session) continue;
      if (!req.reveal_ids()) {
        e.set_wa_id(MaskId(e.wa_id()));
        e.set_user_id(MaskId(e.user_id()));
      }
      *out.add_entries() = std::move(e);
    }
  }
  auto* entries = out.mutable_entries();
  std::sort(entries->begin(), entries->end(), [](const auto& x, const auto& y) {
    return std::make_pair(FromTs(x.at()), x.turn_id()) < std::make_pair(FromTs(y.at()), y.turn_id());
  });
  if (req.limit() > 0 && entries->size() > req.limit()) {
    entries->DeleteSubrange(0, entries->size() - req.limit());
  }
  return out;
}

}  // namespace bridge::controller
