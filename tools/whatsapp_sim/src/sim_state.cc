#include "sim_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "meta_format.h"

namespace bridge::whatsapp_sim {
namespace {

using json = nlohmann::json;

constexpr absl::Duration kPairRateWindow = absl::Seconds(6);  // PROTOCOLS.md A5
constexpr absl::Duration kServiceWindow = absl::Hours(24);

json Slice(const std::vector<json>& items) { return json(items); }

}  // namespace

// --- Clock ---

absl::Time SimState::NowLocked() const { return absl::Now() + clock_offset_; }

absl::Time SimState::Now() const {
  absl::ReaderMutexLock lock(&mu_);
  return NowLocked();
}

absl::Time SimState::Advance(absl::Duration by) {
  absl::MutexLock lock(&mu_);
  clock_offset_ += by;
  return NowLocked();
}

std::string SimState::NowText() const {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", Now(), absl::UTCTimeZone());
}

// --- Media ---

std::string SimState::PutMedia(std::string id, std::string bytes, std::string mime_type,
                               bool uploaded) {
  auto m = std::make_shared<Media>();
  m->id = id.empty() ? NewMediaId() : std::move(id);
  m->sha256 = Sha256Base64(bytes);
  m->bytes = std::move(bytes);
  m->mime_type = std::move(mime_type);
  m->uploaded = uploaded;
  std::string out = m->id;
  absl::MutexLock lock(&mu_);
  media_[out] = std::move(m);
  return out;
}

std::shared_ptr<const Media> SimState::GetMedia(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = media_.find(id);
  return it == media_.end() ? nullptr : it->second;
}

bool SimState::DeleteMedia(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return media_.erase(id) > 0;
}

std::string SimState::IssueTicket(const std::string& media_id, absl::Duration ttl,
                                  int64_t* expires_unix) {
  std::string ticket = RandomToken(16);
  absl::MutexLock lock(&mu_);
  const absl::Time now = NowLocked();
  // Forget long-expired tickets so a busy sim does not grow without bound;
  // recently expired ones stay so that they answer "expired".
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    it = it->second.expires + absl::Hours(1) < now ? tickets_.erase(it) : std::next(it);
  }
  tickets_[ticket] = Ticket{media_id, now + ttl};
  *expires_unix = absl::ToUnixSeconds(now + ttl);
  return ticket;
}

TicketState SimState::RedeemTicket(const std::string& ticket, const std::string& media_id,
                                   std::shared_ptr<const Media>* media) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = tickets_.find(ticket);
  if (it == tickets_.end() || it->second.media_id != media_id) return TicketState::kUnknown;
  if (NowLocked() >= it->second.expires) return TicketState::kExpired;
  auto m = media_.find(media_id);
  if (m == media_.end()) return TicketState::kUnknown;
  *media = m->second;
  return TicketState::kOk;
}

// --- Users ---

std::string SimState::KeyLocked(const std::string& user) const {
  auto it = bsuid_to_phone_.find(user);
  return it == bsuid_to_phone_.end() ? user : it->second;
}

void SimState::LinkUser(const std::string& wa_id, const std::string& bsuid) {
  absl::MutexLock lock(&mu_);
  bsuid_to_phone_[bsuid] = wa_id;
  // What was kept under the BSUID alone (an earlier BSUID-only user) joins
  // the phone's record.
  auto it = users_.find(bsuid);
  if (it == users_.end()) return;
  User& u = users_[wa_id];
  for (json& e : it->second.outbox) u.outbox.push_back(std::move(e));
  if (u.name.empty()) u.name = it->second.name;
  users_.erase(bsuid);
}

std::string SimState::BsuidOf(const std::string& wa_id) const {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [bsuid, phone] : bsuid_to_phone_) {
    if (phone == wa_id) return bsuid;
  }
  return "";
}

std::string SimState::NoteInbound(const std::string& wa_id, const std::string& wamid,
                                  const std::string& requested_name) {
  absl::MutexLock lock(&mu_);
  User& u = users_[KeyLocked(wa_id)];
  if (!requested_name.empty()) u.name = requested_name;
  if (u.name.empty()) u.name = "Sim User";
  u.last_inbound = NowLocked();
  inbound_wamids_[wamid] = wa_id;
  return u.name;
}

std::string SimState::UserOf(const std::string& wamid) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = inbound_wamids_.find(wamid);
  return it == inbound_wamids_.end() ? "" : it->second;
}

SendVerdict SimState::RecordOutbound(const std::string& wa_id, json entry) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = NowLocked();
  User& u = users_[KeyLocked(wa_id)];
  if (faults_.pair_rate_limit && u.last_outbound && now - *u.last_outbound < kPairRateWindow) {
    return SendVerdict::kPairRateLimited;
  }
  if (faults_.service_window && (!u.last_inbound || now - *u.last_inbound > kServiceWindow)) {
    return SendVerdict::kWindowClosed;
  }
  u.last_outbound = now;
  u.outbox.push_back(std::move(entry));
  return SendVerdict::kOk;
}

// --- Inspection ---

template <typename Count>
void SimState::AwaitCount(Count count, size_t min_count, absl::Duration wait) {
  // Lambdas read guarded state: absl::Condition evaluates them under mu_.
  auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || count() >= min_count;
  };
  if (reached() || wait <= absl::ZeroDuration()) return;
  ++long_polls_;
  mu_.AwaitWithTimeout(absl::Condition(&reached), wait);
  --long_polls_;
}

json SimState::Stats(size_t min_long_polls, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || long_polls_ >= min_long_polls;
  };
  mu_.AwaitWithTimeout(absl::Condition(&reached), wait);
  size_t outbox = 0;
  for (const auto& [id, u] : users_) outbox += u.outbox.size();
  return {{"media", media_.size()}, {"users", users_.size()}, {"outbox_messages", outbox},
          {"reads", reads_.size()}, {"webhook_attempts", attempts_.size()},
          {"long_polls", long_polls_}, {"now", absl::ToUnixSeconds(NowLocked())}};
}

json SimState::Outbox(const std::string& wa_id, size_t min_count, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  auto count = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = users_.find(KeyLocked(wa_id));
    return it == users_.end() ? size_t{0} : it->second.outbox.size();
  };
  AwaitCount(count, min_count, wait);
  auto it = users_.find(KeyLocked(wa_id));
  return it == users_.end() ? json::array() : Slice(it->second.outbox);
}

void SimState::RecordRead(json read) {
  absl::MutexLock lock(&mu_);
  read["at"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", NowLocked(), absl::UTCTimeZone());
  reads_.push_back(std::move(read));
}

void SimState::NoteCall(const std::string& call_id, json caller, absl::Duration accept_window) {
  absl::MutexLock lock(&mu_);
  callers_[call_id] = std::move(caller);
  accept_by_[call_id] = NowLocked() + accept_window;
}

json SimState::CallerOf(const std::string& call_id) const {
  absl::MutexLock lock(&mu_);
  auto it = callers_.find(call_id);
  return it == callers_.end() ? json() : it->second;
}

void SimState::EndCall(const std::string& call_id) {
  absl::MutexLock lock(&mu_);
  if (auto it = callers_.find(call_id); it != callers_.end()) it->second["ended"] = true;
  accept_by_.erase(call_id);
}

std::vector<std::pair<std::string, json>> SimState::EndUnacceptedCalls() {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, json>> out;
  const absl::Time now = NowLocked();
  for (auto it = accept_by_.begin(); it != accept_by_.end();) {
    if (it->second > now) {
      ++it;
      continue;
    }
    json& caller = callers_[it->first];
    caller["ended"] = true;  // here, under the lock: a late accept is refused
    out.emplace_back(it->first, caller);
    it = accept_by_.erase(it);
  }
  return out;
}

std::optional<absl::Time> SimState::NextAcceptDeadline() const {
  absl::MutexLock lock(&mu_);
  std::optional<absl::Time> next;
  for (const auto& [id, by] : accept_by_) {
    if (!next || by < *next) next = by;
  }
  return next;
}

bool SimState::RecordCallAction(json action) {
  absl::MutexLock lock(&mu_);
  const std::string call_id = action.value("call_id", "");
  if (auto it = callers_.find(call_id); it != callers_.end() && it->second.value("ended", false)) {
    return false;
  }
  // accept answers the call; reject and terminate end it (their webhook is
  // queued next): either way the window no longer fails it.
  if (action.value("action", "") != "pre_accept") accept_by_.erase(call_id);
  action["at"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", NowLocked(), absl::UTCTimeZone());
  call_actions_.push_back(std::move(action));
  return true;
}

json SimState::CallActions(size_t min_count, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  AwaitCount([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return call_actions_.size(); }, min_count,
             wait);
  return Slice(call_actions_);
}

json SimState::Reads(size_t min_count, absl::Duration wait) {
  absl::MutexLock lock(&mu_);
  AwaitCount([&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reads_.size(); }, min_count, wait);
  return Slice(reads_);
}

void SimState::RecordAttempt(json attempt) {
  absl::MutexLock lock(&mu_);
  attempt["at"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", NowLocked(), absl::UTCTimeZone());
  attempts_.push_back(std::move(attempt));
}

json SimState::Attempts(const std::string& id, size_t min_count, absl::Duration wait) {
  auto matches = [&id](const json& a) { return id.empty() || a.value("id", "") == id; };
  absl::MutexLock lock(&mu_);
  AwaitCount(
      [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        size_t n = 0;
        for (const json& a : attempts_) n += matches(a) ? 1 : 0;
        return n;
      },
      min_count, wait);
  json out = json::array();
  for (const json& a : attempts_) {
    if (matches(a)) out.push_back(a);
  }
  return out;
}

// --- Faults ---

namespace {

absl::Status ReadInt(const json& spec, const char* key, int lo, int hi, int* out) {
  if (!spec.contains(key)) return absl::OkStatus();
  const json& v = spec[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", key, "\" must be an integer in [", lo, ", ", hi, "]"));
  }
  *out = v.get<int>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& spec, const char* key, bool* out) {
  if (!spec.contains(key)) return absl::OkStatus();
  if (!spec[key].is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be true or false"));
  }
  *out = spec[key].get<bool>();
  return absl::OkStatus();
}

absl::Status ReadTypes(const json& spec, const char* key, std::vector<std::string>* out) {
  if (!spec.contains(key)) return absl::OkStatus();
  std::vector<std::string> types;
  for (const json& t : spec[key].is_array() ? spec[key] : json::array({nullptr})) {
    if (!t.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be an array of types"));
    }
    types.push_back(t.get<std::string>());
  }
  *out = std::move(types);
  return absl::OkStatus();
}

// {"delivery_failed_code":N,"message_type":T?,"count":C?}; code 0 clears it.
absl::Status ReadDeliveryFailure(const json& spec, int count, Faults* next) {
  if (!spec.contains("delivery_failed_code")) {
    if (spec.contains("message_type")) {
      return absl::InvalidArgumentError("\"message_type\" goes with \"delivery_failed_code\"");
    }
    return absl::OkStatus();
  }
  int code = 0;
  if (auto s = ReadInt(spec, "delivery_failed_code", 0, 100000000, &code); !s.ok()) return s;
  if (spec.contains("message_type") && !spec["message_type"].is_string()) {
    return absl::InvalidArgumentError("\"message_type\" must be a message type");
  }
  next->delivery_failed_code = code;
  next->delivery_failed_type = spec.value("message_type", "");
  next->delivery_failed_remaining = count;
  return absl::OkStatus();
}

json StatusFaultJson(const std::optional<StatusFault>& f) {
  if (!f) return nullptr;
  return {{"status", f->status}, {"code", f->code}, {"retry_after_s", f->retry_after_s},
          {"remaining", f->remaining}};
}

}  // namespace

absl::Status SimState::MergeFaults(const json& spec) {
  static const char* const kKeys[] = {
      "messages_status", "media_status", "upload_status", "count", "retry_after_s", "code",
      "webhook_duplicate", "webhook_out_of_order", "pair_rate_limit", "service_window",
      "latency_ms", "delivery_failed_code", "message_type", "bsuid_131062_types"};
  if (!spec.is_object()) return absl::InvalidArgumentError("faults must be a JSON object");
  for (const auto& [key, value] : spec.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown fault \"", key, "\""));
    }
  }
  // Parse everything before touching the state: a bad spec changes nothing.
  StatusFault base;
  int statuses[3] = {-1, -1, -1};
  const char* status_keys[3] = {"messages_status", "media_status", "upload_status"};
  for (int i = 0; i < 3; ++i) {
    if (auto s = ReadInt(spec, status_keys[i], 0, 599, &statuses[i]); !s.ok()) return s;
  }
  absl::MutexLock lock(&mu_);
  Faults next = faults_;
  if (auto s = ReadInt(spec, "count", 1, 1000000, &base.remaining); !s.ok()) return s;
  if (auto s = ReadInt(spec, "retry_after_s", 0, 86400, &base.retry_after_s); !s.ok()) return s;
  if (auto s = ReadInt(spec, "code", 0, 100000000, &base.code); !s.ok()) return s;
  if (auto s = ReadBool(spec, "webhook_duplicate", &next.webhook_duplicate); !s.ok()) return s;
  if (auto s = ReadBool(spec, "webhook_out_of_order", &next.webhook_out_of_order); !s.ok()) {
    return s;
  }
  if (auto s = ReadBool(spec, "pair_rate_limit", &next.pair_rate_limit); !s.ok()) return s;
  if (auto s = ReadBool(spec, "service_window", &next.service_window); !s.ok()) return s;
  if (auto s = ReadInt(spec, "latency_ms", 0, 60000, &next.latency_ms); !s.ok()) return s;
  if (auto s = ReadDeliveryFailure(spec, base.remaining, &next); !s.ok()) return s;
  if (auto s = ReadTypes(spec, "bsuid_131062_types", &next.bsuid_131062_types); !s.ok()) return s;
  std::optional<StatusFault>* slots[3] = {&next.messages, &next.media, &next.upload};
  for (int i = 0; i < 3; ++i) {
    if (statuses[i] < 0) continue;
    if (statuses[i] == 0) {  // {"media_status":0} clears that fault
      slots[i]->reset();
    } else if (statuses[i] < 400) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", status_keys[i], "\" must be an error status (400-599) or 0"));
    } else {
      StatusFault f = base;
      f.status = statuses[i];
      *slots[i] = f;
    }
  }
  faults_ = next;
  return absl::OkStatus();
}

void SimState::ClearFaults() {
  absl::MutexLock lock(&mu_);
  faults_ = Faults{};
}

Faults SimState::CurrentFaults() const {
  absl::ReaderMutexLock lock(&mu_);
  return faults_;
}

json SimState::FaultsJson() const {
  absl::ReaderMutexLock lock(&mu_);
  return {{"messages", StatusFaultJson(faults_.messages)},
          {"media", StatusFaultJson(faults_.media)},
          {"upload", StatusFaultJson(faults_.upload)},
          {"webhook_duplicate", faults_.webhook_duplicate},
          {"webhook_out_of_order", faults_.webhook_out_of_order},
          {"pair_rate_limit", faults_.pair_rate_limit},
          {"service_window", faults_.service_window},
          {"latency_ms", faults_.latency_ms},
          {"delivery_failed_code", faults_.delivery_failed_code},
          {"message_type", faults_.delivery_failed_type},
          {"delivery_failed_remaining", faults_.delivery_failed_remaining},
          {"bsuid_131062_types", faults_.bsuid_131062_types}};
}

std::optional<StatusFault> SimState::TakeFault(FaultKind kind) {
  absl::MutexLock lock(&mu_);
  std::optional<StatusFault>& slot = kind == FaultKind::kMessages ? faults_.messages
                                     : kind == FaultKind::kMedia  ? faults_.media
                                                                  : faults_.upload;
  if (!slot) return std::nullopt;
  StatusFault f = *slot;
  if (slot->remaining > 0 && --slot->remaining == 0) slot.reset();
  return f;
}

std::optional<int> SimState::TakeDeliveryFailure(const std::string& type) {
  absl::MutexLock lock(&mu_);
  Faults& f = faults_;
  if (f.delivery_failed_code == 0) return std::nullopt;
  if (!f.delivery_failed_type.empty() && f.delivery_failed_type != type) return std::nullopt;
  const int code = f.delivery_failed_code;
  if (f.delivery_failed_remaining > 0 && --f.delivery_failed_remaining == 0) {
    f.delivery_failed_code = 0;
    f.delivery_failed_type.clear();
  }
  return code;
}

void SimState::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

}  // namespace bridge::whatsapp_sim
