// The WhatsApp Cloud API (Graph API) as the media worker uses it: media
// resolve/download/upload, text and voice-note messages, read receipts with
// the typing indicator. One real implementation (cpp-httplib, TLS), tested
// against whatsapp-sim. The error policy of PROTOCOLS.md A5 lives inside:
// retryable codes (throughput, pair rate limit, temporary) are retried with
// backoff honouring Retry-After; permanent ones come back at once as a
// GraphError carried by the status.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace bridge::media_worker {

// What the Graph API said, decoded from its error body ({"error": {...}}).
struct GraphError {
  int http_status = 0;
  int code = 0;
  int subcode = 0;
  std::string message;  // redacted
  bool retryable = false;
  // The request went out and no answer came back (a read timeout): it may
  // have been carried out. Sending a message again could deliver it twice,
  // so such a call is not retried and its caller must not resend blindly.
  bool maybe_sent = false;
};

struct GraphApiOptions {
  std::string base_url = "https://graph.facebook.com";  // WHATSAPP_GRAPH_BASE_URL
  std::string api_version = "v23.0";                    // WHATSAPP_GRAPH_API_VERSION
  std::string access_token;                             // WHATSAPP_ACCESS_TOKEN
  std::string ca_file;  // PEM bundle for TLS; empty: the system store
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration request_timeout = absl::Seconds(30);
  int max_attempts = 5;                         // per call, for retryable errors
  absl::Duration initial_backoff = absl::Milliseconds(500);
  absl::Duration max_backoff = absl::Seconds(30);
  int64_t max_media_bytes = 16 << 20;           // WhatsApp's audio limit
  // Hosts media downloads may be fetched from with the token, besides the
  // Graph API's own: Meta's CDNs. A webhook's media URL elsewhere is ignored
  // and the media resolved by its id.
  std::vector<std::string> media_hosts = {"*.fbsbx.com", "*.fbcdn.net", "*.whatsapp.net"};
  // Called on the calling thread before each backoff wait, with the failure
  // (code 0 when there was no Graph error body), the attempt that failed
  // (1-based) and the wait: for retry metrics, and for tests.
  std::function<void(const GraphError& error, int attempt, absl::Duration delay)> on_retry;
};

// The GraphError a status from GraphApi carries, if any.
std::optional<GraphError> GraphErrorOf(const absl::Status& status);

struct MediaInfo {
  std::string id;
  std::string url;
  std::string mime_type;
  std::string sha256_b64;
  int64_t file_size = 0;
};

// Who a message goes to (PROTOCOLS.md A4): the phone ("to") when one is
// known, else the business-scoped user id ("recipient"). Meta prefers the
// phone; a BSUID cannot take every message type (error 131062).
struct Recipient {
  std::string wa_id;
  std::string user_id;
};

// What the business does with a user's call (PROTOCOLS.md A6).
enum class CallAction { kPreAccept, kAccept, kReject, kTerminate };

class GraphApi {
 public:
  virtual ~GraphApi() = default;

  virtual absl::StatusOr<MediaInfo> ResolveMedia(const std::string& media_id) = 0;
  // Downloads a media object, handing each chunk to `sink` as it arrives so
  // decoding overlaps the download. Resolves the id first (or uses `url` when
  // the webhook carried one, re-resolving if it has expired), enforces
  // max_media_bytes, and checks the sha256 when one is known. A sink error
  // aborts the download and is returned.
  virtual absl::Status DownloadMedia(const std::string& media_id, const std::string& url,
                                     const std::string& sha256_b64,
                                     const std::function<absl::Status(absl::string_view)>& sink) = 0;
  // Returns the new media id.
  virtual absl::StatusOr<std::string> UploadMedia(const std::string& phone_number_id,
                                                  const std::string& bytes,
                                                  const std::string& mime_type,
                                                  const std::string& filename) = 0;
  // Return the sent message's wamid. `reply_to` (a wamid) may be empty.
  virtual absl::StatusOr<std::string> SendText(const std::string& phone_number_id,
                                               const Recipient& to, const std::string& text,
                                               const std::string& reply_to) = 0;
  virtual absl::StatusOr<std::string> SendVoiceNote(const std::string& phone_number_id,
                                                    const Recipient& to,
                                                    const std::string& media_id,
                                                    const std::string& reply_to) = 0;
  // Marks the user's message read and shows the typing indicator.
  virtual absl::Status MarkReadTyping(const std::string& phone_number_id,
                                      const std::string& message_id) = 0;
  // Marks it read only: nobody is about to answer (a person holds the chat).
  virtual absl::Status MarkRead(const std::string& phone_number_id,
                                const std::string& message_id) = 0;
  // POST /{phone_number_id}/calls: `sdp_answer` goes with pre_accept and
  // accept, and must be empty otherwise.
  virtual absl::Status ActOnCall(const std::string& phone_number_id, const std::string& call_id,
                            CallAction action, const std::string& sdp_answer) = 0;
};

std::unique_ptr<GraphApi> NewGraphApi(const GraphApiOptions& options);

}  // namespace bridge::media_worker
