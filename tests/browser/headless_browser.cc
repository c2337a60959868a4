#include "headless_browser.h"

#include <signal.h>
#include <unistd.h>

#include <deque>
#include <fstream>

#include "absl/base/thread_annotations.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "child_process.h"
#include "httplib.h"
#include "ws/websocket.h"

namespace bridge::testing {
namespace {

using json = nlohmann::json;

constexpr char kListening[] = "DevTools listening on ws://";

// The DevTools socket: answers by id, events kept in order of arrival.
class CdpSocket final : public ws::ConnectionHandler {
 public:
  void OnOpen() override {}
  void OnText(const std::string& text) override {
    json msg = json::parse(text, nullptr, false);
    absl::MutexLock lock(&mu_);
    if (!msg.is_object()) return;
    if (msg.contains("id") && msg["id"].is_number_integer()) {
      const int64_t id = msg["id"].get<int64_t>();  // before the move below
      answers_[id] = std::move(msg);
    } else {
      events_.push_back(msg.value("method", ""));
    }
  }
  void OnClose(int code, const std::string& reason, bool) override {
    absl::MutexLock lock(&mu_);
    closed_ = absl::StrCat("DevTools socket closed: ", code, " ", reason);
  }
  void OnFail(const std::string& error, int) override {
    absl::MutexLock lock(&mu_);
    closed_ = absl::StrCat("DevTools socket failed: ", error);
  }

  absl::StatusOr<json> Await(int64_t id, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return answers_.count(id) > 0 || !closed_.empty();
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      return absl::DeadlineExceededError(absl::StrCat("no DevTools answer to call ", id));
    }
    if (answers_.count(id) == 0) return absl::UnavailableError(closed_);
    json answer = std::move(answers_[id]);
    answers_.erase(id);
    if (answer.contains("error")) return absl::InternalError(answer["error"].dump());
    return answer.value("result", json::object());
  }
  // Waits until `method` has been seen more than `seen` times.
  bool AwaitEvent(const std::string& method, size_t seen, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return Count(method) > seen; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  size_t EventCount(const std::string& method) {
    absl::MutexLock lock(&mu_);
    return Count(method);
  }

 private:
  size_t Count(const std::string& method) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t n = 0;
    for (const std::string& e : events_) n += e == method ? 1 : 0;
    return n;
  }

  absl::Mutex mu_;
  std::map<int64_t, json> answers_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::string closed_ ABSL_GUARDED_BY(mu_);
};

class Chromium final : public HeadlessBrowser {
 public:
  ~Chromium() override {
    if (pool_) pool_->Stop();
    if (process_) {  // SIGTERM lets it take its renderer processes down with it
      process_->Signal(SIGTERM);
      process_->Wait(absl::Seconds(10));
    }
  }
  absl::Status Start(const BrowserOptions& o);
  absl::Status Navigate(const std::string& url) override;
  absl::StatusOr<json> Eval(const std::string& js, absl::Duration timeout) override;
  absl::Status Screenshot(const std::string& path) override;
  std::string Logs() const override { return process_ ? process_->Output() : ""; }

 private:
  absl::StatusOr<json> Call(const std::string& method, json params,
                            absl::Duration timeout = absl::Seconds(90));

  std::unique_ptr<ChildProcess> process_;
  std::unique_ptr<ws::ClientPool> pool_;
  std::shared_ptr<CdpSocket> socket_;
  std::shared_ptr<ws::Connection> conn_;
  int64_t next_id_ = 1;
};

absl::Status Chromium::Start(const BrowserOptions& o) {
  const std::string binary = o.binary.empty() ? FindChromium() : o.binary;
  if (binary.empty()) return absl::NotFoundError("chromium is not installed");
  std::vector<std::string> args = {
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--no-first-run", "--no-default-browser-check", "--disable-extensions",
      "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
      absl::StrCat("--user-data-dir=", o.profile_dir), "--window-size=1100,900",
      // The microphone: granted without a prompt, fed from the file.
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
      "--autoplay-policy=no-user-gesture-required", "about:blank"};
  if (!o.microphone_wav.empty()) {
    args.push_back(absl::StrCat("--use-file-for-fake-audio-capture=", o.microphone_wav));
  }
  process_ = std::make_unique<ChildProcess>(binary, args);
  if (!process_->WaitForOutput(kListening)) {
    return absl::UnavailableError(absl::StrCat("chromium did not open DevTools:\n", Logs()));
  }
  // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID": the
  // page targets are listed over HTTP on the same port.
  const std::string out = process_->Output();
  const size_t at = out.find(kListening) + sizeof(kListening) - 1;
  const std::string host_port = out.substr(at, out.find('/', at) - at);
  httplib::Client http(absl::StrCat("http://", host_port));
  auto list = http.Get("/json/list");
  if (!list || list->status != 200) return absl::UnavailableError("no DevTools target list");
  std::string page_ws;
  for (const json& t : json::parse(list->body, nullptr, false)) {
    if (t.value("type", "") == "page") page_ws = t.value("webSocketDebuggerUrl", "");
  }
  if (page_ws.empty()) return absl::UnavailableError("chromium has no page target");
  pool_ = ws::ClientPool::Create();
  socket_ = std::make_shared<CdpSocket>();
  auto conn = pool_->Connect({.url = page_ws}, socket_);
  if (!conn.ok()) return conn.status();
  conn_ = *std::move(conn);
  if (auto s = Call("Page.enable", json::object()); !s.ok()) return s.status();
  return Call("Runtime.enable", json::object()).status();
}

absl::StatusOr<json> Chromium::Call(const std::string& method, json params,
                                    absl::Duration timeout) {
  const int64_t id = next_id_++;
  conn_->SendText(json{{"id", id}, {"method", method}, {"params", std::move(params)}}.dump());
  return socket_->Await(id, timeout);
}

absl::Status Chromium::Navigate(const std::string& url) {
  const size_t loads = socket_->EventCount("Page.loadEventFired");
  auto nav = Call("Page.navigate", {{"url", url}});
  if (!nav.ok()) return nav.status();
  if (nav->contains("errorText")) return absl::UnavailableError((*nav)["errorText"].dump());
  if (!socket_->AwaitEvent("Page.loadEventFired", loads, absl::Seconds(60))) {
    return absl::DeadlineExceededError(absl::StrCat(url, " did not load"));
  }
  return absl::OkStatus();
}

absl::StatusOr<json> Chromium::Eval(const std::string& js, absl::Duration timeout) {
  auto r = Call("Runtime.evaluate",
                {{"expression", absl::StrCat(kPageHelpers, js)},
                 {"awaitPromise", true},
                 {"returnByValue", true},
                 {"userGesture", true}},
                timeout);
  if (!r.ok()) return r.status();
  if (r->contains("exceptionDetails")) {
    const json& e = (*r)["exceptionDetails"];
    std::string what = e.contains("exception") ? e["exception"].value("description", "")
                                               : e.value("text", "");
    return absl::FailedPreconditionError(absl::StrCat("JS: ", what));
  }
  return (*r)["result"].value("value", json());
}

absl::Status Chromium::Screenshot(const std::string& path) {
  auto shot = Call("Page.captureScreenshot", {{"format", "png"}});
  if (!shot.ok()) return shot.status();
  std::string png;
  if (!absl::Base64Unescape(shot->value("data", ""), &png)) {
    return absl::InternalError("the screenshot is not base64");
  }
  std::ofstream out(path, std::ios::binary);
  out << png;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write the screenshot to ", path));
  return absl::OkStatus();
}

}  // namespace

const char kPageHelpers[] = R"JS(
var q = s => document.querySelector(s), qa = s => [...document.querySelectorAll(s)];
var until = (f, ms = 60000) => new Promise((resolve, reject) => {
  let obs, timer;
  const check = () => {
    let v;
    try { v = f(); } catch (e) { v = undefined; }
    if (!v) return false;
    if (obs) obs.disconnect();
    clearTimeout(timer);
    resolve(v);
    return true;
  };
  if (check()) return;
  obs = new MutationObserver(check);
  obs.observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
  timer = setTimeout(() => { obs.disconnect(); reject(new Error('never became true: ' + f)); }, ms);
});
// For what changes without touching the DOM (WebRTC statistics): asks again
// every 100 ms.
var poll = async (f, ms = 60000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error('never became true: ' + f);
    await new Promise(r => setTimeout(r, 100));
  }
};
)JS";

std::string HeadlessBrowser::FindChromium() {
  for (const char* path : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

absl::StatusOr<std::unique_ptr<HeadlessBrowser>> HeadlessBrowser::Launch(
    const BrowserOptions& options) {
  auto browser = std::make_unique<Chromium>();
  if (auto s = browser->Start(options); !s.ok()) return s;
  return browser;
}

}  // namespace bridge::testing
