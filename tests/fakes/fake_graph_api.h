// The Graph API behind its interface, for unit tests of the turn pipeline:
// records what was sent, serves one media file, and fails uploads, text
// sends or voice sends on demand (retryable, permanent, or "maybe sent"),
// and records read receipts.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "graph_api_policy.h"
#include "media_worker/graph_api.h"

namespace bridge::media_worker::testing {

class FakeGraphApi final : public GraphApi {
 public:
  struct Sent {
    std::string kind;  // "text" or "voice"
    std::string body;  // the text, or the media id
    std::string id;    // the wamid it got
    std::string quote; // the wamid it replies to
  };

  void ForgetSent() {
    absl::MutexLock l(&mu_);
    sent_.clear();
  }
  void SetMedia(std::string bytes) {
    absl::MutexLock l(&mu_);
    media_ = std::move(bytes);
  }
  void FailUploads(int n) {
    absl::MutexLock l(&mu_);
    upload_failures_ = n;
  }
  // The next `n` text sends fail transiently (5xx after the client's own retries).
  void FailTexts(int n) {
    absl::MutexLock l(&mu_);
    text_failures_ = n;
  }
  // The next text send times out after it went out: it may have been sent.
  void TimeOutNextText() {
    absl::MutexLock l(&mu_);
    text_timeouts_ = 1;
  }
  // Read receipts, in order: the message and whether typing was shown.
  struct Read {
    std::string message_id;
    bool typing = false;
  };
  std::vector<Read> reads() {
    absl::MutexLock l(&mu_);
    return reads_;
  }
  std::vector<Sent> sent() {
    absl::MutexLock l(&mu_);
    return sent_;
  }
  int uploads_tried() {
    absl::MutexLock l(&mu_);
    return uploads_tried_;
  }

  absl::StatusOr<MediaInfo> ResolveMedia(const std::string& media_id) override {
    return MediaInfo{media_id, "https://lookaside.fbsbx.com/fake", "audio/ogg", "", 0};
  }
  absl::Status DownloadMedia(const std::string&, const std::string&, const std::string&,
                             const std::function<absl::Status(absl::string_view)>& sink) override {
    std::string bytes;
    {
      absl::MutexLock l(&mu_);
      bytes = media_;
    }
    return sink(bytes);
  }
  absl::StatusOr<std::string> UploadMedia(const std::string&, const std::string&,
                                          const std::string&, const std::string&) override {
    absl::MutexLock l(&mu_);
    ++uploads_tried_;
    if (upload_failures_ > 0) {
      --upload_failures_;
      return absl::InternalError("graph: 131053 Media upload error");
    }
    return absl::StrCat("media_", ++seq_);
  }
  absl::StatusOr<std::string> SendText(const std::string&, const Recipient&,
                                       const std::string& text,
                                       const std::string& quote) override {
    absl::MutexLock l(&mu_);
    if (text_failures_ > 0) {
      --text_failures_;
      return absl::UnavailableError("graph: 503 Service temporarily unavailable");
    }
    if (text_timeouts_ > 0) {
      --text_timeouts_;
      return MaybeSent();
    }
    std::string id = absl::StrCat("wamid.out", ++seq_);
    sent_.push_back({"text", text, id, quote});
    return id;
  }
  absl::StatusOr<std::string> SendVoiceNote(const std::string&, const Recipient&,
                                            const std::string& media_id,
                                            const std::string& quote) override {
    absl::MutexLock l(&mu_);
    std::string id = absl::StrCat("wamid.out", ++seq_);
    sent_.push_back({"voice", media_id, id, quote});
    return id;
  }
  absl::Status MarkReadTyping(const std::string&, const std::string& message_id) override {
    absl::MutexLock l(&mu_);
    reads_.push_back({message_id, true});
    return absl::OkStatus();
  }
  absl::Status MarkRead(const std::string&, const std::string& message_id) override {
    absl::MutexLock l(&mu_);
    reads_.push_back({message_id, false});
    return absl::OkStatus();
  }
  absl::Status ActOnCall(const std::string&, const std::string& call_id, CallAction action,
                         const std::string&) override {
    absl::MutexLock l(&mu_);
    calls_.push_back({call_id, action});
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, CallAction>> calls() {
    absl::MutexLock l(&mu_);
    return calls_;
  }

 private:
  // What the real client returns for a read timeout after the request went out.
  static absl::Status MaybeSent() {
    GraphError g;
    g.maybe_sent = true;
    absl::Status s = absl::DeadlineExceededError("graph: no answer after the request went out");
    graph_internal::AttachGraphError(g, &s);
    return s;
  }

  absl::Mutex mu_;
  std::string media_ ABSL_GUARDED_BY(mu_);
  int upload_failures_ ABSL_GUARDED_BY(mu_) = 0;
  int text_timeouts_ ABSL_GUARDED_BY(mu_) = 0;
  int text_failures_ ABSL_GUARDED_BY(mu_) = 0;
  int uploads_tried_ ABSL_GUARDED_BY(mu_) = 0;
  int seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Sent> sent_ ABSL_GUARDED_BY(mu_);
  std::vector<Read> reads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, CallAction>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bridge::media_worker::testing
