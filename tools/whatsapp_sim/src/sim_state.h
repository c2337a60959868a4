// Everything the simulator remembers, behind one mutex: its clock, media and
// download tickets, users (names, last inbound/outbound), what the business
// sent (outboxes), read receipts, webhook delivery attempts and the faults
// in force. Readers can wait (Mutex::AwaitWithTimeout) for a count to be
// reached instead of polling.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace bridge::whatsapp_sim {

struct Media {
  std::string id;
  std::string bytes;
  std::string mime_type;
  std::string sha256;  // base64, as Meta gives it
  bool uploaded = false;  // by the business (Graph upload) vs. by a user
};

// An injected HTTP status for one kind of Graph call.
struct StatusFault {
  int status = 0;
  int code = 0;           // Graph error code override; 0: derived from status
  int retry_after_s = 0;  // Retry-After header when > 0
  int remaining = -1;     // calls left to fail; -1: until cleared
};

struct Faults {
  std::optional<StatusFault> messages;  // POST /{phone_number_id}/messages
  std::optional<StatusFault> media;     // media resolve and download
  std::optional<StatusFault> upload;    // POST /{phone_number_id}/media
  bool webhook_duplicate = false;       // every delivery twice, concurrently
  bool webhook_out_of_order = false;    // status webhooks newest first
  bool pair_rate_limit = false;         // > 1 message / 6 s to one user: 131056
  bool service_window = false;          // no free-form message 24 h after the user: 131047
  int latency_ms = 0;                   // every Graph answer delayed
  // A send of this type ("" = any) is accepted with a wamid, then a `failed`
  // status with this code is posted for it (PROTOCOLS.md A2: 200 means
  // accepted, not delivered). {"delivery_failed_code":131053,"message_type":"audio","count":1}
  int delivery_failed_code = 0;
  std::string delivery_failed_type;
  int delivery_failed_remaining = -1;  // -1: until cleared
  // Message types refused with 131062 when sent to a BSUID ("recipient").
  std::vector<std::string> bsuid_131062_types;
};

enum class FaultKind { kMessages, kMedia, kUpload };
enum class TicketState { kOk, kUnknown, kExpired };
enum class SendVerdict { kOk, kPairRateLimited, kWindowClosed };

class SimState {
 public:
  // --- Clock: real time plus what /sim/clock advanced. ---
  absl::Time Now() const;
  int64_t NowUnix() const { return absl::ToUnixSeconds(Now()); }
  absl::Time Advance(absl::Duration by);
  std::string NowText() const;  // RFC 3339 with milliseconds

  // --- Media. ---
  // Stores bytes under `id` (a new Meta-style id when empty); returns the id.
  std::string PutMedia(std::string id, std::string bytes, std::string mime_type, bool uploaded);
  std::shared_ptr<const Media> GetMedia(const std::string& id) const;
  bool DeleteMedia(const std::string& id);
  // A download ticket for the media, valid for `ttl` of simulated time.
  std::string IssueTicket(const std::string& media_id, absl::Duration ttl, int64_t* expires_unix);
  TicketState RedeemTicket(const std::string& ticket, const std::string& media_id,
                           std::shared_ptr<const Media>* media) const;

  // --- Users. ---
  // A user is named by a phone or a BSUID; once both were seen together they
  // are one user (one outbox), found by either.
  void LinkUser(const std::string& wa_id, const std::string& bsuid);
  std::string BsuidOf(const std::string& wa_id) const;  // "" if none linked
  // Records a message a user sent; returns the profile name to use (the
  // requested one, else the last one the user had, else a default).
  std::string NoteInbound(const std::string& wa_id, const std::string& wamid,
                          const std::string& requested_name);
  std::string UserOf(const std::string& wamid) const;  // "" if unknown
  // Applies the rate-limit/window faults, then appends to the user's outbox.
  SendVerdict RecordOutbound(const std::string& wa_id, nlohmann::json entry);

  // --- Inspection; each waits up to `wait` for at least `min_count` items. ---
  nlohmann::json Outbox(const std::string& wa_id, size_t min_count, absl::Duration wait);
  void RecordRead(nlohmann::json read);
  nlohmann::json Reads(size_t min_count, absl::Duration wait);
  // Calls: who placed each, and what the business did with them (/calls).
  // The business must accept within `accept_window` (simulated time).
  void NoteCall(const std::string& call_id, nlohmann::json caller, absl::Duration accept_window);
  nlohmann::json CallerOf(const std::string& call_id) const;  // null if unknown
  // The call ended (its terminate webhook is queued): CallerOf says "ended".
  void EndCall(const std::string& call_id);
  // Records {call_id, action, ...}; any action but pre_accept stops the call's
  // accept window.
  // False, recording nothing, when the call has ended (checked under the lock
  // that ends calls, so an accept cannot slip in after the window closed).
  bool RecordCallAction(nlohmann::json action);
  // Ends the calls whose accept window has passed without an accept and
  // returns them with their callers (for Meta's FAILED terminate webhook).
  std::vector<std::pair<std::string, nlohmann::json>> EndUnacceptedCalls();
  // When the next accept window closes, if any call is waiting for its accept.
  std::optional<absl::Time> NextAcceptDeadline() const;
  nlohmann::json CallActions(size_t min_count, absl::Duration wait);
  void RecordAttempt(nlohmann::json attempt);
  // Attempts for the webhook carrying message `id` (all when empty).
  nlohmann::json Attempts(const std::string& id, size_t min_count, absl::Duration wait);

  // Counts (media, users, messages, reads, attempts) and the long-polls
  // waiting now; waits up to `wait` until at least `min_long_polls` wait.
  nlohmann::json Stats(size_t min_long_polls, absl::Duration wait);

  // --- Faults. ---
  absl::Status MergeFaults(const nlohmann::json& spec);
  void ClearFaults();
  Faults CurrentFaults() const;
  nlohmann::json FaultsJson() const;
  // The fault to apply to this call, if any (consumes one of its count).
  std::optional<StatusFault> TakeFault(FaultKind kind);
  // The delivery failure code due for a send of `type`, if any (consumes one).
  std::optional<int> TakeDeliveryFailure(const std::string& type);

  // Wakes every waiter for good (shutdown).
  void Close();

 private:
  struct Ticket {
    std::string media_id;
    absl::Time expires;
  };
  struct User {
    std::string name;
    std::optional<absl::Time> last_inbound;
    std::optional<absl::Time> last_outbound;
    std::vector<nlohmann::json> outbox;
  };

  absl::Time NowLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The key a user's record is kept under (a linked BSUID maps to the phone).
  std::string KeyLocked(const std::string& user) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Waits (mu_ held) until count() >= min_count, closing, or timeout.
  template <typename Count>
  void AwaitCount(Count count, size_t min_count, absl::Duration wait)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::Duration clock_offset_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<const Media>> media_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Ticket> tickets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, User> users_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> inbound_wamids_ ABSL_GUARDED_BY(mu_);  // -> wa_id
  std::map<std::string, std::string> bsuid_to_phone_ ABSL_GUARDED_BY(mu_);
  std::vector<nlohmann::json> reads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, nlohmann::json> callers_ ABSL_GUARDED_BY(mu_);
  std::vector<nlohmann::json> call_actions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> accept_by_ ABSL_GUARDED_BY(mu_);  // calls not accepted yet
  std::vector<nlohmann::json> attempts_ ABSL_GUARDED_BY(mu_);
  Faults faults_ ABSL_GUARDED_BY(mu_);
  size_t long_polls_ ABSL_GUARDED_BY(mu_) = 0;  // readers inside AwaitCount
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace bridge::whatsapp_sim
