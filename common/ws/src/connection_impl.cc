#include "connection_impl.h"

#include <algorithm>
#include <chrono>

namespace bridge::ws::internal {

bool IsSendableCloseCode(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

ConnectionImpl::ConnectionImpl(std::weak_ptr<IoLoop> loop, std::string remote)
    : loop_(std::move(loop)), remote_(std::move(remote)) {}

ConnectionImpl::~ConnectionImpl() = default;

void ConnectionImpl::Post(std::function<void()> fn) const {
  if (std::shared_ptr<IoLoop> loop = loop_.lock()) loop->Post(std::move(fn));
}

// ---- Connection: any thread ----

void ConnectionImpl::SendText(std::string text) {
  Post([self = shared_from_this(), text = std::move(text)]() mutable {
    self->DoSend(std::move(text));
  });
}

void ConnectionImpl::Close(int code, const std::string& reason) {
  Post([self = shared_from_this(), code, reason] { self->CloseNow(code, reason); });
}

uint64_t ConnectionImpl::Schedule(absl::Duration delay, std::function<void()> fn) {
  uint64_t id = next_timer_id_.fetch_add(1, std::memory_order_relaxed);
  // Clamp so the steady_clock arithmetic cannot overflow.
  delay = std::clamp(delay, absl::ZeroDuration(), absl::Hours(24 * 365));
  Post([self = shared_from_this(), id, delay, fn = std::move(fn)]() mutable {
    self->DoSchedule(id, delay, std::move(fn));
  });
  return id;
}

void ConnectionImpl::Cancel(uint64_t timer_id) {
  Post([self = shared_from_this(), timer_id] {
    auto it = self->timers_.find(timer_id);
    if (it == self->timers_.end()) return;
    it->second->cancel();
    // Erasing also stops a timer whose expiry is already queued: OnTimer
    // looks the id up before running anything.
    self->timers_.erase(it);
  });
}

size_t ConnectionImpl::buffered_bytes() const {
  std::shared_ptr<IoLoop> loop = loop_.lock();
  if (loop && loop->OnIoThread()) {
    return state_ == State::kOpen || state_ == State::kClosing ? WireBuffered() : 0;
  }
  // websocketpp's counter is io-thread state; elsewhere return the last
  // reading and ask for a fresh one, so a poller is at most one call stale.
  if (!refresh_posted_.exchange(true)) {
    Post([self = shared_from_this()] { self->RefreshBuffered(); });
  }
  return buffered_snapshot_.load(std::memory_order_relaxed);
}

void ConnectionImpl::RefreshBuffered() const {
  refresh_posted_.store(false);
  size_t bytes = state_ == State::kOpen || state_ == State::kClosing ? WireBuffered() : 0;
  buffered_snapshot_.store(bytes, std::memory_order_relaxed);
}

// ---- io thread ----

void ConnectionImpl::SetHandler(std::shared_ptr<ConnectionHandler> handler) {
  handler_ = std::move(handler);
}

void ConnectionImpl::SetOnFinished(std::function<void()> fn) { on_finished_ = std::move(fn); }

void ConnectionImpl::StartOpenTimer(absl::Duration timeout, std::string error) {
  std::shared_ptr<IoLoop> loop = loop_.lock();
  if (!loop || state_ != State::kConnecting) return;
  open_timer_ = std::make_unique<asio::steady_timer>(loop->io(),
                                                     absl::ToChronoNanoseconds(timeout));
  open_timer_->async_wait([weak = weak_from_this(), error = std::move(error)](
                              const std::error_code& ec) {
    std::shared_ptr<ConnectionImpl> self = weak.lock();
    if (ec || !self || self->state_ != State::kConnecting) return;
    self->FailNow(error);
  });
}

void ConnectionImpl::DoSend(std::string text) {
  switch (state_) {
    case State::kConnecting:
      if (!close_on_open_) pending_.push_back(std::move(text));
      return;
    case State::kOpen:
      WireSend(text);
      buffered_snapshot_.store(WireBuffered(), std::memory_order_relaxed);
      return;
    case State::kClosing:
    case State::kClosed:
      return;
  }
}

void ConnectionImpl::CloseNow(int code, const std::string& reason) {
  // websocketpp refuses to send reserved codes (1005, 1006...) and would leave
  // the connection open; an application asking for one still wants it closed.
  if (!IsSendableCloseCode(code)) code = kCloseInternalError;
  switch (state_) {
    case State::kConnecting:
      // Not open yet: close as soon as it opens (no OnOpen is delivered).
      if (!close_on_open_) close_on_open_.emplace(code, reason);
      pending_.clear();
      return;
    case State::kOpen:
      StartClose(code, reason);
      return;
    case State::kClosing:
    case State::kClosed:
      return;
  }
}

void ConnectionImpl::StartClose(int code, const std::string& reason) {
  state_ = State::kClosing;
  open_.store(false, std::memory_order_release);
  closing_locally_ = true;
  sent_close_ = {code, reason};
  CancelTimers();  // they would not fire on a connection that is not open
  WireClose(code, reason);
}

void ConnectionImpl::DoSchedule(uint64_t id, absl::Duration delay, std::function<void()> fn) {
  std::shared_ptr<IoLoop> loop = loop_.lock();
  if (!loop || state_ == State::kClosing || state_ == State::kClosed) return;
  auto timer = std::make_unique<asio::steady_timer>(loop->io(), absl::ToChronoNanoseconds(delay));
  timer->async_wait([weak = weak_from_this(), id, fn = std::move(fn)](const std::error_code& ec) {
    if (std::shared_ptr<ConnectionImpl> self = weak.lock()) self->OnTimer(id, fn, !!ec);
  });
  timers_[id] = std::move(timer);
}

void ConnectionImpl::OnTimer(uint64_t id, const std::function<void()>& fn, bool aborted) {
  if (timers_.erase(id) == 0) return;  // cancelled
  if (aborted || state_ != State::kOpen) return;
  fn();
}

void ConnectionImpl::CancelTimers() {
  for (auto& [id, timer] : timers_) timer->cancel();
  timers_.clear();
  if (open_timer_) {
    open_timer_->cancel();
    open_timer_.reset();
  }
}

void ConnectionImpl::HandleOpen() {
  if (open_timer_) {
    open_timer_->cancel();
    open_timer_.reset();
  }
  if (state_ == State::kClosed) {
    // Already failed (open timeout, pool stopping) but the socket opened
    // anyway: nobody is listening, so just close it.
    WireClose(kCloseGoingAway, "");
    return;
  }
  if (close_on_open_) {
    std::pair<int, std::string> close = std::move(*close_on_open_);
    close_on_open_.reset();
    StartClose(close.first, close.second);
    return;
  }
  state_ = State::kOpen;
  open_.store(true, std::memory_order_release);
  std::vector<std::string> queued;
  queued.swap(pending_);
  for (const std::string& text : queued) WireSend(text);
  buffered_snapshot_.store(WireBuffered(), std::memory_order_relaxed);
  if (std::shared_ptr<ConnectionHandler> handler = handler_) handler->OnOpen();
}

void ConnectionImpl::HandleMessage(bool binary, const std::string& payload) {
  if (state_ != State::kOpen && state_ != State::kClosing) return;
  std::shared_ptr<ConnectionHandler> handler = handler_;
  if (!handler) return;
  if (binary) {
    handler->OnBinary(payload);
  } else {
    handler->OnText(payload);
  }
}

void ConnectionImpl::HandleClose(int code, const std::string& reason) {
  if (state_ == State::kClosed) return;
  const bool remote = !closing_locally_;
  if (closing_locally_ && code == kCloseAbnormal) {
    Finish([&](ConnectionHandler& handler) {
      handler.OnClose(sent_close_.first, sent_close_.second, remote);
    });
    return;
  }
  Finish([&](ConnectionHandler& handler) { handler.OnClose(code, reason, remote); });
}

void ConnectionImpl::HandleFail(const std::string& error, int http_status) {
  if (state_ == State::kClosed) return;
  Finish([&](ConnectionHandler& handler) { handler.OnFail(error, http_status); });
}

void ConnectionImpl::FailNow(const std::string& error) {
  if (state_ == State::kClosed) return;
  WireAbort();
  Finish([&](ConnectionHandler& handler) { handler.OnFail(error, 0); });
}

void ConnectionImpl::Finish(const std::function<void(ConnectionHandler&)>& notify) {
  std::shared_ptr<ConnectionImpl> self = shared_from_this();  // registries may drop theirs
  state_ = State::kClosed;
  open_.store(false, std::memory_order_release);
  buffered_snapshot_.store(0, std::memory_order_relaxed);
  pending_.clear();
  close_on_open_.reset();
  CancelTimers();
  // Dropping the handler breaks the usual handler -> Connection cycle.
  std::shared_ptr<ConnectionHandler> handler = std::move(handler_);
  handler_.reset();
  std::function<void()> on_finished = std::move(on_finished_);
  on_finished_ = nullptr;
  if (on_finished) on_finished();
  if (handler) notify(*handler);
}

void ConnectionImpl::Abandon() {
  state_ = State::kClosed;
  open_.store(false, std::memory_order_release);
  CancelTimers();
  pending_.clear();
  close_on_open_.reset();
  handler_.reset();
  on_finished_ = nullptr;
}

}  // namespace bridge::ws::internal
