// Issue #14 in a real browser: Debian's headless chromium, driven over the
// DevTools protocol, uses whatsapp-sim's phone page and the controller's
// console against the real cluster. Each step awaits what the page shows (a
// MutationObserver in the page, audio events), never a sleep. Screenshots go
// to BRIDGE_ARTIFACTS_DIR (build/test-artifacts/browser).
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "audio/ogg_opus_decoder.h"
#include "bridge_cluster.h"
#include "fresh_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "headless_browser.h"

namespace bridge::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// A 16-bit mono WAV for the fake microphone (chromium loops it).
std::string WriteWav(const std::string& path, const std::vector<int16_t>& pcm, uint32_t rate) {
  const uint32_t data = static_cast<uint32_t>(pcm.size() * 2);
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [](uint16_t v) { return std::string(reinterpret_cast<const char*>(&v), 2); };
  std::string wav = "RIFF" + u32(36 + data) + "WAVEfmt " + u32(16) + u16(1) + u16(1) +
                    u32(rate) + u32(rate * 2) + u16(2) + u16(16) + "data" + u32(data);
  wav.append(reinterpret_cast<const char*>(pcm.data()), data);
  std::ofstream(path, std::ios::binary) << wav;
  return path;
}

// A real voice note.
std::string VoiceMicrophone(const std::string& dir) {
  const std::string ogg = AudioFixture("voice_note_hello.ogg");
  auto pcm = audio::DecodeOggOpus(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()), 48000);
  EXPECT_TRUE(pcm.ok()) << pcm.status();
  return WriteWav(dir + "/microphone.wav", pcm.ok() ? *pcm : std::vector<int16_t>(), 48000);
}

// A caller saying 440 Hz for a second, then silent for `silence_s`: the
// agent's VAD ends each turn in the silence.
std::string ToneMicrophone(const std::string& dir, int silence_s) {
  std::vector<int16_t> pcm(static_cast<size_t>(1 + silence_s) * 48000, 0);
  for (size_t i = 0; i < 48000; ++i) {
    pcm[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * 440 * static_cast<double>(i) / 48000));
  }
  return WriteWav(dir + "/tone.wav", pcm, 48000);
}

std::string Artifact(const std::string& name) {
  std::filesystem::create_directories(BRIDGE_ARTIFACTS_DIR);  // a clean clone has none
  return absl::StrCat(BRIDGE_ARTIFACTS_DIR, "/", name);
}

class BrowserTest : public ::testing::Test {
 protected:
  BrowserTest() = default;
  // A microphone saying a 440 Hz second every 1 + tone_silence_s seconds.
  BrowserTest(ClusterOptions options, int tone_silence_s)
      : cluster_(std::move(options)), tone_silence_s_(tone_silence_s) {}

  void SetUp() override {
    if (HeadlessBrowser::FindChromium().empty()) {
      GTEST_SKIP() << "chromium is not installed (tools/bridge.sh test installs it with "
                      "apt-get; Debian package: chromium)";
    }
    const std::string dir = FreshDir("browser");
    BrowserOptions o;
    o.profile_dir = dir + "/profile";
    o.microphone_wav =
        tone_silence_s_ > 0 ? ToneMicrophone(dir, tone_silence_s_) : VoiceMicrophone(dir);
    auto b = HeadlessBrowser::Launch(o);
    ASSERT_TRUE(b.ok()) << b.status();
    browser_ = *std::move(b);
  }

  json Eval(const std::string& js) {
    auto v = browser_->Eval(js);
    EXPECT_TRUE(v.ok()) << v.status() << "\n" << cluster_.Logs();
    return v.ok() ? *v : json();
  }
  void Shot(const std::string& name) {
    const std::string path = Artifact(name);
    const absl::Status s = browser_->Screenshot(path);
    EXPECT_TRUE(s.ok()) << s;
    std::cout << "screenshot: " << path << "\n";
  }

  BridgeCluster cluster_;
  const int tone_silence_s_ = 0;  // 0: the voice note
  std::unique_ptr<HeadlessBrowser> browser_;
};

TEST_F(BrowserTest, OnThePhonePageATextGetsAReplyAndARecordedVoiceNoteGetsOneThatPlays) {
  constexpr char kUser[] = "15551230015";
  ASSERT_TRUE(browser_->Navigate(absl::StrCat("http://", cluster_.whatsapp_sim_http(),
                                              "/?user=", kUser, "&name=Browser%20User"))
                  .ok());
  const json text = Eval(R"((async () => {
    q('#text').value = 'hello from the browser';
    q('#send').click();
    const reply = await until(() => q('.msg.biz'));
    await until(() => q('.msg.me .ticks.read'));  // the worker marked it read
    return {reply: reply.innerText, mine: q('.msg.me').innerText};
  })())");
  EXPECT_THAT(text.value("mine", ""), HasSubstr("hello from the browser"));
  EXPECT_FALSE(text.value("reply", "").empty());
  Shot("phone-text.png");

  const json voice = Eval(R"((async () => {
    const before = qa('.msg.biz').length;
    q('#record').click();
    await until(() => q('#record').textContent === 'Stop');
    await until(() => /[2-9] s/.test(q('#recording').textContent));  // two seconds of speech
    q('#record').click();
    await until(() => q('.msg.me audio'));
    const reply = await until(() => qa('.msg.biz').slice(before)
                                      .map(b => b.querySelector('audio')).find(a => a));
    await new Promise((ok, bad) => {
      if (reply.readyState >= 1) return ok();
      reply.onloadedmetadata = ok;
      reply.onerror = () => bad(new Error('the voice reply does not load: ' + reply.error.code));
    });
    await reply.play();
    await new Promise(ok => reply.addEventListener('timeupdate', function tick() {
      if (reply.currentTime > 0.3) { reply.removeEventListener('timeupdate', tick); ok(); }
    }));
    return {played: reply.currentTime, mine: q('.msg.me audio').src};
  })())");
  EXPECT_GT(voice.value("played", 0.0), 0.3);
  Shot("phone-voice.png");

  // What the page sent was a voice note, and the agent answered with one.
  const json outbox = cluster_.Outbox(kUser, 2);
  ASSERT_GE(outbox.size(), 2u);
  EXPECT_EQ(outbox.back().value("type", ""), "audio");
  EXPECT_TRUE(outbox.back().value("voice", false));
}

TEST_F(BrowserTest, OnTheConsoleAnOperatorTakesOverRepliesToThePhoneAndHandsBack) {
  constexpr char kUser[] = "15551230016";
  ASSERT_TRUE(browser_->Navigate(absl::StrCat("http://", cluster_.controller_admin(0), "/")).ok());
  Eval(absl::StrCat("(async () => { q('#token').value = ", json(cluster_.admin_token()).dump(),
                    "; q('#login button').click(); await until(() => q('#status').textContent === "
                    "'live'); })()"));
  cluster_.UserSays(kUser, "text", "hello console");
  Eval(absl::StrCat(R"((async () => {
    const row = await until(() => qa('tr.session').find(r => r.textContent.includes()",
                    json(kUser).dump(), R"()));
    row.click();
    await until(() => q('.line.USER') && q('.line.AGENT'));
    q('#operator').value = 'Ana';
    q('#takeover').click();
    await until(() => q('#info .state.HUMAN'));
    q('#saytext').value = 'Ana here, from the console';
    q('#sayform button').click();
    await until(() => qa('.line.OPERATOR').find(l => l.textContent.includes('Ana here')));
  })())"));
  Shot("console-takeover.png");
  Eval(R"((async () => {
    q('#handback').click();
    await until(() => q('#info .state.ACTIVE'));
  })())");

  // The operator's words reached the user's phone.
  ASSERT_TRUE(browser_->Navigate(absl::StrCat("http://", cluster_.whatsapp_sim_http(),
                                              "/?user=", kUser)).ok());
  const json phone = Eval(R"((async () => {
    const b = await until(() => qa('.msg.biz').find(m => m.textContent.includes('Ana here')));
    return b.innerText;
  })())");
  EXPECT_THAT(phone.get<std::string>(), HasSubstr("Ana here, from the console"));
  Shot("phone-operator-reply.png");
}

// Calls from the phone page: chromium's own WebRTC stack is the caller (its
// host candidates hidden behind mDNS names, as a user's browser has them, so
// the worker finds it through its checks), through the real cluster, with
// the agent speaking in real time.
class CallBrowserTest : public BrowserTest {
 protected:
  static ClusterOptions Options(std::vector<std::string> sim_args) {
    ClusterOptions o;
    o.reply_pace = 1;
    o.sim_args = std::move(sim_args);
    return o;
  }
  CallBrowserTest() : BrowserTest(Options({}), /*tone_silence_s=*/2) {}
  CallBrowserTest(std::vector<std::string> sim_args, int tone_silence_s)
      : BrowserTest(Options(std::move(sim_args)), tone_silence_s) {}

  // Presses Call and waits until the page says it is in the call.
  void CallFromThePage(const std::string& user) {
    // A call offered before both workers attached would wait for one (held).
    ASSERT_TRUE(cluster_.AwaitControllerMetric("bridge_controller_workers 2")) << cluster_.Logs();
    ASSERT_TRUE(browser_->Navigate(absl::StrCat("http://", cluster_.whatsapp_sim_http(),
                                                "/?user=", user)).ok());
    const json status = Eval(R"((async () => {
      q('#call').click();
      await until(() => q('#callstatus').textContent === 'In call', 60000);
      return q('#callstatus').textContent;
    })())");
    ASSERT_EQ(status, "In call") << cluster_.Logs();
  }
};

TEST_F(CallBrowserTest, ThePhonePagesCallIsAnsweredTheAgentHearsItAndAHangUpEndsIt) {
  CallFromThePage("15551230017");
  // The agent's voice reaches the page: RTP packets and audio energy in the
  // browser's own statistics (silence has next to none).
  const json in = Eval(R"((async () => {
    const inbound = async () => {
      const stats = await call.pc.getStats();
      return [...stats.values()].find(s => s.type === 'inbound-rtp' && s.kind === 'audio');
    };
    await poll(async () => { const s = await inbound(); return s && s.totalAudioEnergy > 0.05; });
    const s = await inbound();
    return {packets: s.packetsReceived, energy: s.totalAudioEnergy, lost: s.packetsLost};
  })())");
  EXPECT_GT(in.value("packets", 0), 50) << in.dump();
  EXPECT_GT(in.value("energy", 0.0), 0.05) << in.dump();
  Shot("phone-call-live.png");
  const json convs = cluster_.Conversations(1);
  ASSERT_EQ(convs["conversations"].size(), 1u);
  EXPECT_THAT(convs["conversations"][0]["transcripts"].dump(), HasSubstr("peak 440 Hz"))
      << "the agent heard the browser's microphone";

  const json after = Eval(R"((async () => {
    q('#call').click();
    await until(() => q('#callstatus').textContent === 'You hung up');
    return q('#call').textContent;
  })())");
  EXPECT_EQ(after, "Call");
  EXPECT_TRUE(cluster_.AwaitWorkerMetric(R"(bridge_worker_calls_total{outcome="ended"} 1)"))
      << cluster_.Logs();
  EXPECT_EQ(cluster_.Conversations(1, /*ended_only=*/true)["conversations"].size(), 1u)
      << "the agent socket closed with the call";
}

class EndCallBrowserTest : public CallBrowserTest {
 protected:
  // Quiet long enough for the goodbye to play out: speaking over it would
  // interrupt the agent before its end_call.
  EndCallBrowserTest() : CallBrowserTest({"--end_call_phrase=heard"}, /*tone_silence_s=*/15) {}
};

TEST_F(EndCallBrowserTest, TheAgentsEndCallHangsUpThePhonePage) {
  CallFromThePage("15551230018");
  const json status = Eval(R"((async () => {
    await until(() => q('#callstatus').textContent === 'The business hung up', 60000);
    return q('#call').textContent;
  })())");
  EXPECT_EQ(status, "Call") << cluster_.Logs();
  Shot("phone-call-ended-by-agent.png");
}

}  // namespace
}  // namespace bridge::testing
