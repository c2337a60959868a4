// Debian's chromium, headless, driven over the Chrome DevTools Protocol on a
// WebSocket (ws::ClientPool): no downloaded browser, no driver binary. A test
// loads a page, runs JS in it that awaits what should happen (a reply bubble,
// a played voice note) and takes screenshots as artifacts.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace bridge::testing {

struct BrowserOptions {
  std::string binary;  // "" : chromium on the PATH
  // A WAV file the fake microphone plays, looped (--use-file-for-fake-audio-capture).
  std::string microphone_wav;
  std::string profile_dir;  // a fresh directory of this test's own
};

class HeadlessBrowser {
 public:
  // The chromium binary, or "" when none is installed.
  static std::string FindChromium();
  static absl::StatusOr<std::unique_ptr<HeadlessBrowser>> Launch(const BrowserOptions& options);
  virtual ~HeadlessBrowser() = default;

  // Loads `url` in the page and waits for its load event.
  virtual absl::Status Navigate(const std::string& url) = 0;
  // Runs `js` (an expression; a promise is awaited, as a user gesture so
  // that clicks may start audio) and returns its value; a thrown error or a
  // rejected promise is an error with the JS message. `timeout` is a hang
  // guard, not a timing assertion.
  virtual absl::StatusOr<nlohmann::json> Eval(const std::string& js,
                                              absl::Duration timeout = absl::Seconds(90)) = 0;
  // Saves a PNG of the page.
  virtual absl::Status Screenshot(const std::string& path) = 0;
  // What chromium printed, for failure messages.
  virtual std::string Logs() const = 0;
};

// JS helpers the tests' expressions use, to prepend to them:
//   until(() => value, ms)  resolves with the first truthy value, checked on
//                           every DOM change (a MutationObserver), rejects
//                           after ms (a hang guard)
//   q(selector), qa(selector)  querySelector, querySelectorAll as an array
extern const char kPageHelpers[];

}  // namespace bridge::testing
