// SessionRunner, part one: a turn from start to result — what each action
// does, the messages of a burst and what the agent hears of them, delivery,
// the turn's lines and latency. The agent conversation and the user's voice
// are in session_runner_agent.cc.
#include "session_runner.h"

#include <algorithm>

#include <openssl/sha.h>

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/redact.h"
#include "message_description.h"
#include "turn_lines.h"

namespace bridge::media_worker {
namespace {

constexpr char kUnplayable[] =
    "Sorry, I couldn't play that voice note. Could you record it again?";
constexpr char kUnsupported[] =
    "Sorry, I can only understand voice notes and text messages for now.";
constexpr char kAgentDown[] =
    "Sorry, I'm having trouble answering right now. Please try again in a moment.";
constexpr char kNoSpeech[] =
    "Sorry, I couldn't hear any words in that voice note. Could you record it again?";
// The transcript's words for a voice note whose own words are not known.
constexpr char kVoiceNote[] = "[a voice note]";
constexpr char kUnplayableNote[] = "[a voice note that could not be played]";
constexpr char kSilentNote[] = "[a voice note without words]";
constexpr char kWelcome[] = "[opened the chat]";
constexpr size_t kRecentLines = 10;

// A Graph call that may have been carried out although it failed (sent, no
// answer): following it with another message could say the same thing twice.
bool MaybeSent(const absl::Status& s) {
  std::optional<GraphError> e = GraphErrorOf(s);
  return e && e->maybe_sent;
}

bool HasUser(const v1::UserRef& u) { return !u.wa_id().empty() || !u.user_id().empty(); }

// Not turns (PROTOCOLS.md A2), whatever the action says: context for the agent.
bool IsContext(const v1::InboundMessage& m) {
  switch (m.type()) {
    case v1::MESSAGE_TYPE_REACTION:
    case v1::MESSAGE_TYPE_EDIT:
    case v1::MESSAGE_TYPE_REVOKE:
    case v1::MESSAGE_TYPE_SYSTEM:
      return true;
    default:
      return false;
  }
}

// Actions that answer the user's message (and so never stay silent).
bool IsReply(v1::TurnAction action) {
  switch (action) {
    case v1::TURN_ACTION_INFORM:
    case v1::TURN_ACTION_RESEND_AS_TEXT:
    case v1::TURN_ACTION_APOLOGIZE:
    case v1::TURN_ACTION_RECORD:
    case v1::TURN_ACTION_OPERATOR_SAY:
      return false;
    default:
      return true;
  }
}

// What a message says in the transcript when its own words are not at hand
// (a voice note not transcribed) or it has none (described content).
std::string Described(const v1::InboundMessage& m) {
  if (m.type() == v1::MESSAGE_TYPE_AUDIO && m.media().voice()) return kVoiceNote;
  if (m.type() == v1::MESSAGE_TYPE_REQUEST_WELCOME) return kWelcome;
  const std::string described = IsContext(m) ? "" : DescribeForAgent(m);
  return described.empty() ? absl::StrCat("[", ContextForAgent(m), "]") : described;
}

// The message and those coalesced with it, in arrival order.
std::vector<const v1::InboundMessage*> MessagesOf(const v1::Turn& turn) {
  std::vector<const v1::InboundMessage*> out = {&turn.message()};
  for (const v1::InboundMessage& m : turn.coalesced()) out.push_back(&m);
  return out;
}

}  // namespace

std::string DeriveUserId(const std::string& salt, const std::string& phone_number_id,
                         const std::string& user) {
  const std::string input = absl::StrCat(salt, "|", phone_number_id, "|", user);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return absl::StrCat("wa_", absl::BytesToHexString(
                                 absl::string_view(reinterpret_cast<char*>(digest), 12)));
}

std::vector<std::string> SplitForWhatsApp(const std::string& text, size_t limit) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (text.size() - start > limit) {
    size_t cut = start + limit;
    while (cut > start && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    size_t best = std::string::npos;
    for (const char* sep : {"\n\n", ". ", "\n", " "}) {
      size_t at = text.rfind(sep, cut - 1);
      if (at != std::string::npos && at > start + limit / 2) {
        best = at + std::string(sep).size();
        break;
      }
    }
    if (best == std::string::npos || best > cut) best = cut;
    parts.push_back(text.substr(start, best - start));
    start = best;
  }
  if (start < text.size()) parts.push_back(text.substr(start));
  return parts;
}

SessionRunner::SessionRunner(const v1::SessionAssignment& assignment, const TurnSettings& settings,
                             TurnServices services)
    : assignment_(assignment),
      settings_(settings),
      services_(services),
      // The controller's memory (--memory_turns exchanges) is not cut down
      // by the first turn here: as many lines stay as it gave.
      recent_limit_(std::max(kRecentLines, static_cast<size_t>(assignment.recent_transcript_size()))) {
  for (const auto& line : assignment.recent_transcript()) recent_.push_back(line);
}

SessionRunner::~SessionRunner() { Close(); }

void SessionRunner::Remember(const std::vector<v1::TranscriptLine>& lines) {
  absl::MutexLock lock(&mu_);
  for (const v1::TranscriptLine& line : lines) {
    std::string context = ContextLine(line);
    if (context.empty()) continue;
    recent_.push_back(std::move(context));
    while (recent_.size() > recent_limit_) recent_.pop_front();
  }
}

SessionRunner::TurnCtx SessionRunner::NewTurn(const v1::Turn& turn) {
  TurnCtx t;
  t.turn = &turn;
  t.m = turn.coalesced().empty() ? &turn.message() : &turn.coalesced(turn.coalesced_size() - 1);
  t.phone_number_id = !t.m->phone_number_id().empty()         ? t.m->phone_number_id()
                      : !turn.message().phone_number_id().empty() ? turn.message().phone_number_id()
                                                                  : assignment_.phone_number_id();
  t.quote = t.m->message_id();
  const v1::UserRef& who = HasUser(turn.reply_to()) ? turn.reply_to() : turn.message().from();
  t.to = HasUser(who) ? Recipient{who.wa_id(), who.user_id()}
                      : Recipient{assignment_.wa_id(), assignment_.user_id()};
  return t;
}

// ---- REPLY: the message and those coalesced with it, in one agent turn ----

// Each message gets its USER line now (in order, before anything the agent
// says), with the words the agent will hear; a voice note's are filled in
// once known.
std::vector<SessionRunner::Part> SessionRunner::PartsOf(TurnCtx* t) {
  const bool transcribing =
      settings_.voice_input == VoiceInput::kTranscribe && services_.stt != nullptr;
  std::vector<Part> parts;
  for (const v1::InboundMessage* m : MessagesOf(*t->turn)) {
    Part p{m, Part::kText, "", t->lines.size()};
    const std::string& mime = m->media().mime_type();
    if (m->type() == v1::MESSAGE_TYPE_AUDIO &&
        // Streaming decodes Ogg/Opus only; other audio is described.
        (transcribing || mime.empty() || absl::StartsWith(mime, "audio/ogg"))) {
      p.kind = Part::kVoice;
    } else {
      p.text = IsContext(*m) ? absl::StrCat("[", ContextForAgent(*m), "]") : DescribeForAgent(*m);
      if (p.text.empty()) p.kind = Part::kNothing;
    }
    t->lines.push_back(UserLine(*m, p.text.empty() ? Described(*m) : p.text));
    parts.push_back(std::move(p));
  }
  return parts;
}

// What the agent is asked: the texts, descriptions and transcripts, in order.
std::string SessionRunner::Joined(const std::vector<Part>& parts, bool with_voice) {
  std::vector<std::string> texts;
  for (const Part& p : parts) {
    if (p.kind == Part::kNothing || (p.kind == Part::kVoice && !with_voice)) continue;
    if (!p.text.empty()) texts.push_back(p.text);
  }
  return absl::StrJoin(texts, "\n");
}

absl::Status SessionRunner::RunReply(TurnCtx* t, std::string* type) {
  const v1::Turn& turn = *t->turn;
  const v1::InboundMessage& m = turn.message();
  if (turn.coalesced().empty() && m.type() == v1::MESSAGE_TYPE_REQUEST_WELCOME) {
    *type = "welcome";
    t->lines.push_back(UserLine(m, kWelcome));
    return RunWelcome(t);
  }
  if (turn.coalesced().empty() && IsContext(m)) {
    *type = "inform";
    return Inform(t, m);
  }
  std::vector<Part> parts = PartsOf(t);
  bool voice = false;
  for (const Part& p : parts) voice = voice || p.kind == Part::kVoice;
  if (!turn.coalesced().empty()) {
    *type = "coalesced";
  } else if (m.type() == v1::MESSAGE_TYPE_TEXT) {
    *type = "text";
  } else if (m.type() == v1::MESSAGE_TYPE_AUDIO) {
    *type = m.media().voice() ? "voice" : "audio";
  } else {
    *type = parts[0].kind == Part::kNothing ? "unsupported" : "described";
  }
  if (voice && settings_.voice_input == VoiceInput::kTranscribe && services_.stt != nullptr) {
    return RunTranscribed(t, parts);
  }
  if (voice) return RunStreamed(t, parts);
  const std::string text = Joined(parts, /*with_voice=*/false);
  if (text.empty()) return DeliverText(t, kUnsupported, v1::SPEAKER_SYSTEM);
  return RunText(t, text, /*voice=*/false);
}

// Every note transcribed, then one user_message with everything in order. A
// note without words drops out; only when nothing is left is the user told.
absl::Status SessionRunner::RunTranscribed(TurnCtx* t, std::vector<Part>& parts) {
  const char* nothing_left = kUnsupported;
  bool heard_voice = false;
  for (Part& p : parts) {
    if (p.kind != Part::kVoice) continue;
    bool unplayable = false;
    absl::StatusOr<std::string> words = TranscribeNote(t, *p.m, &unplayable);
    if (!words.ok()) return words.status();
    if (words->empty()) {
      nothing_left = unplayable ? kUnplayable : kNoSpeech;
      t->lines[p.line].set_text(unplayable ? kUnplayableNote : kSilentNote);
      p.kind = Part::kNothing;
      continue;
    }
    p.text = *words;
    t->lines[p.line].set_text(*words);
    heard_voice = true;
  }
  const std::string text = Joined(parts, /*with_voice=*/true);
  if (text.empty()) return DeliverText(t, nothing_left, v1::SPEAKER_SYSTEM);
  return RunText(t, text, /*voice=*/heard_voice);  // a voice conversation answers with audio
}

// Stream mode: the burst's texts as one contextual_update first (the agent
// answers the audio's turn, so the words must be there before it), then the
// notes back to back, then real-time silence until the agent answers.
absl::Status SessionRunner::RunStreamed(TurnCtx* t, std::vector<Part>& parts) {
  if (auto s = EnsureAgent(t, /*welcome=*/false); !s.ok()) return s;
  BeginReply();
  agent_->BeginTurn();
  const std::string written = Joined(parts, /*with_voice=*/false);
  if (!written.empty()) {
    agent_->SendContextualUpdate(absl::StrCat("The user also wrote: ", written));
  }
  std::vector<size_t> played;  // the lines of the notes the agent heard
  for (Part& p : parts) {
    if (p.kind != Part::kVoice) continue;
    bool unplayable = false;
    if (auto s = StreamVoiceNote(t, *p.m, &unplayable); !s.ok()) return s;
    if (unplayable) {
      t->lines[p.line].set_text(kUnplayableNote);
    } else {
      played.push_back(p.line);
    }
  }
  if (played.empty()) {
    {
      absl::MutexLock lock(&mu_);
      collecting_ = false;  // the agent heard nothing to answer
    }
    if (!written.empty()) return RunText(t, written, /*voice=*/false);
    return DeliverText(t, kUnplayable, v1::SPEAKER_SYSTEM);
  }
  t->handed = Steady::now();
  if (auto s = StreamSilenceUntilAnswered(); !s.ok()) return s;
  auto reply = CollectReply(/*want_audio=*/true, settings_.reply_timeout);
  if (!reply.ok()) return reply.status();
  NoteHeardWords(t, played, reply->user_transcripts);
  NoteAgentLatency(t, *reply);
  return DeliverReply(t, *reply, /*voice=*/true);
}

// What the agent heard of the streamed notes (its user_transcript): one per
// note when the counts match; otherwise it cannot be told apart, and all of
// it goes on the first note's line.
void SessionRunner::NoteHeardWords(TurnCtx* t, const std::vector<size_t>& lines,
                                   const std::vector<std::string>& transcripts) {
  if (transcripts.empty()) return;
  if (transcripts.size() == lines.size()) {
    for (size_t i = 0; i < lines.size(); ++i) t->lines[lines[i]].set_text(transcripts[i]);
    return;
  }
  t->lines[lines[0]].set_text(absl::StrJoin(transcripts, " "));
}

absl::Status SessionRunner::RunText(TurnCtx* t, const std::string& text, bool voice) {
  if (auto s = EnsureAgent(t, /*welcome=*/false); !s.ok()) return s;
  BeginReply();
  agent_->BeginTurn();
  t->handed = Steady::now();  // before: the reply may start before SendText returns
  agent_->SendText(text);
  auto reply = CollectReply(voice, settings_.reply_timeout);
  if (!reply.ok()) return reply.status();
  NoteAgentLatency(t, *reply);
  return DeliverReply(t, *reply, voice);
}

void SessionRunner::NoteAgentLatency(TurnCtx* t, const Collected& reply) {
  if (reply.first_heard != Steady::time_point()) {
    // Streamed audio may be answered before its last note was through.
    t->latency.set_agent_first_audio_ms(
        std::max(0.0, std::chrono::duration<double, std::milli>(reply.first_heard - t->handed)
                          .count()));
  }
  t->latency.set_agent_done_ms(
      std::max(0.0, std::chrono::duration<double, std::milli>(reply.done - t->handed).count()));
  t->latency.set_encode_ms(t->latency.encode_ms() + reply.encode_ms);
}

// The user opened the chat for the first time: the agent's greeting is the
// answer (nothing when the agent has none).
absl::Status SessionRunner::RunWelcome(TurnCtx* t) {
  {
    absl::MutexLock lock(&mu_);
    if (agent_ && started_ && !closed_) return absl::OkStatus();  // already talking
  }
  agent_has_greeting_ = true;  // a welcome always listens for one
  return EnsureAgent(t, /*welcome=*/true);
}

// Context for the agent, no reply: told now if a conversation is open, and
// remembered (the turn's line) so the next conversation hears it too.
absl::Status SessionRunner::Inform(TurnCtx* t, const v1::InboundMessage& m) {
  const std::string context = ContextForAgent(m);
  t->lines.push_back(UserLine(m, absl::StrCat("[", context, "]")));
  {
    absl::MutexLock lock(&mu_);
    t->agent_took_part = agent_ && started_ && !closed_;
  }
  if (t->agent_took_part) agent_->SendContextualUpdate(context);
  return absl::OkStatus();
}

// ---- a person holds the conversation ----

// The message is seen (read receipt, no typing: nobody here is about to
// answer) and reported, never told to the agent; an open conversation
// closes, and the next one hears these lines as context.
absl::Status SessionRunner::Record(TurnCtx* t) {
  MarkRead(*t, /*typing=*/false);
  Close();
  for (const v1::InboundMessage* m : MessagesOf(*t->turn)) {
    t->lines.push_back(UserLine(*m, RecordedText(t, *m)));
  }
  return absl::OkStatus();
}

// A voice note's words when speech-to-text is configured (the person reads
// the transcript); what cannot be transcribed is described.
std::string SessionRunner::RecordedText(TurnCtx* t, const v1::InboundMessage& m) {
  if (m.type() != v1::MESSAGE_TYPE_AUDIO || services_.stt == nullptr) return Described(m);
  bool unplayable = false;
  absl::StatusOr<std::string> words = TranscribeNote(t, m, &unplayable);
  if (!words.ok()) {
    LogWarn("recorded voice note not transcribed",
            {{"session_id", session_id()}, {"error", words.status()}});
    return Described(m);
  }
  if (unplayable) return kUnplayableNote;
  return words->empty() ? kSilentNote : *words;
}

// The operator's words go out as the business's own message (not a reply
// quoting the user's); the agent is not part of it.
absl::Status SessionRunner::OperatorSay(TurnCtx* t) {
  Close();
  if (t->turn->text().empty()) return absl::InvalidArgumentError("the operator's text is empty");
  t->quote.clear();
  return DeliverText(t, t->turn->text(), v1::SPEAKER_OPERATOR);
}

// ---- delivery ----

absl::Status SessionRunner::DeliverText(TurnCtx* t, const std::string& text,
                                        v1::Speaker speaker) {
  const Steady::time_point t0 = Steady::now();
  absl::Status s;
  for (const std::string& part : SplitForWhatsApp(text)) {
    auto id = WithinBudget([&] {
      return services_.graph->SendText(t->phone_number_id, t->to, part, t->quote);
    });
    if (!id.ok()) {
      s = id.status();
      break;
    }
    v1::SentMessage* sent = &t->sent.emplace_back();
    sent->set_message_id(*id);
    sent->set_kind(v1::SENT_KIND_TEXT);
    sent->set_text(part);
    t->lines.push_back(SentLine(speaker, part, *id, "text"));
  }
  const double ms = MsSince(t0);
  t->latency.set_send_ms(t->latency.send_ms() + ms);
  if (s.ok()) services_.metrics->Stage("send").Observe(ms / 1000);
  return s;
}

absl::StatusOr<std::string> SessionRunner::WithinBudget(
    const std::function<absl::StatusOr<std::string>()>& send) {
  const absl::Time deadline = absl::Now() + settings_.delivery_budget;
  absl::Duration backoff = absl::Seconds(1);
  for (;;) {
    absl::StatusOr<std::string> id = send();
    const bool transient = absl::IsUnavailable(id.status()) ||
                           absl::IsResourceExhausted(id.status());
    if (id.ok() || !transient || MaybeSent(id.status()) || absl::Now() + backoff > deadline) {
      return id;
    }
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return id;
    }
    LogWarn("send failed; trying again within the delivery budget",
            {{"session_id", session_id()}, {"error", id.status()},
             {"wait_ms", absl::ToInt64Milliseconds(backoff)}});
    services_.metrics->Error("send_retried").Increment();
    absl::SleepFor(backoff);  // a turn thread: nothing else waits on it
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
}

// The reply, and its line: what the agent said is the next conversation's
// context whether or not it reached the user (a line without a wamid).
absl::Status SessionRunner::DeliverReply(TurnCtx* t, const Collected& reply, bool voice) {
  if (reply.handoff_only) return absl::OkStatus();  // the turn tells the user
  const size_t lines_before = t->lines.size();
  absl::Status s = SendReply(t, reply, voice);
  if (t->lines.size() == lines_before && !reply.text.empty()) {
    t->lines.push_back(SentLine(v1::SPEAKER_AGENT, reply.text, "", ""));
  }
  return s;
}

// A voice note when there is audio, else (or when the voice note cannot be
// sent: upload refused, 131062 for a BSUID-only user) the reply's text.
absl::Status SessionRunner::SendReply(TurnCtx* t, const Collected& reply, bool voice) {
  if (!voice || reply.ogg.empty()) {
    if (reply.text.empty()) return absl::InternalError("the agent answered without text");
    return DeliverText(t, reply.text, v1::SPEAKER_AGENT);
  }
  absl::StatusOr<std::string> id = UploadAndSend(t, reply.ogg);
  if (id.ok()) {
    v1::SentMessage* sent = &t->sent.emplace_back();
    sent->set_message_id(*id);
    sent->set_kind(v1::SENT_KIND_VOICE);
    sent->set_text(reply.text);  // the controller's text fallback if delivery fails later
    t->lines.push_back(SentLine(v1::SPEAKER_AGENT, reply.text, *id, "audio"));
    return absl::OkStatus();
  }
  if (reply.text.empty() || MaybeSent(id.status())) return id.status();
  LogWarn("voice reply could not be sent; sending its text",
          {{"session_id", session_id()}, {"error", id.status()}});
  services_.metrics->Error("voice_fallback_text").Increment();
  return DeliverText(t, reply.text, v1::SPEAKER_AGENT);
}

absl::StatusOr<std::string> SessionRunner::UploadAndSend(TurnCtx* t, const std::string& ogg) {
  const Steady::time_point t0 = Steady::now();
  auto media = services_.graph->UploadMedia(t->phone_number_id, ogg, "audio/ogg", "reply.ogg");
  const double upload_ms = MsSince(t0);
  services_.metrics->Stage("upload").Observe(upload_ms / 1000);
  t->latency.set_upload_ms(t->latency.upload_ms() + upload_ms);
  if (!media.ok()) return media.status();
  const Steady::time_point t1 = Steady::now();
  auto id = WithinBudget([&] {
    return services_.graph->SendVoiceNote(t->phone_number_id, t->to, *media, t->quote);
  });
  const double send_ms = MsSince(t1);
  services_.metrics->Stage("send").Observe(send_ms / 1000);
  t->latency.set_send_ms(t->latency.send_ms() + send_ms);
  return id;
}

// One receipt, for the newest message: WhatsApp marks the earlier ones read with it.
void SessionRunner::MarkRead(const TurnCtx& t, bool typing) {
  if (!settings_.read_receipts || t.m->message_id().empty()) return;
  absl::Status r = typing ? services_.graph->MarkReadTyping(t.phone_number_id, t.m->message_id())
                          : services_.graph->MarkRead(t.phone_number_id, t.m->message_id());
  if (!r.ok()) LogWarn("read receipt failed", {{"session_id", session_id()}, {"error", r}});
}

// ---- the turn ----

absl::Status SessionRunner::RunAction(TurnCtx* t, std::string* type) {
  const v1::Turn& turn = *t->turn;
  switch (turn.action()) {
    case v1::TURN_ACTION_INFORM:
      *type = "inform";
      return Inform(t, turn.message());
    case v1::TURN_ACTION_RESEND_AS_TEXT:
      // The agent's words again, by the bridge's decision: its line is the
      // bridge's, so the conversation does not hear them twice.
      *type = "resend";
      return DeliverText(t, turn.fallback_text(), v1::SPEAKER_SYSTEM);
    case v1::TURN_ACTION_APOLOGIZE:  // the turn kept losing its worker: no agent, no media
      *type = "apology";
      return DeliverText(t, kAgentDown, v1::SPEAKER_SYSTEM);
    case v1::TURN_ACTION_RECORD:
      *type = "record";
      return Record(t);
    case v1::TURN_ACTION_OPERATOR_SAY:
      *type = "operator";
      return OperatorSay(t);
    default:
      MarkRead(*t, /*typing=*/true);
      return RunReply(t, type);
  }
}

// Never silent: a turn that failed before anything reached the user gets an
// apology (the controller does not retry a failed turn). An ended session is
// not apologised for (the operator or the drain meant it), nor a reply that
// may have reached the user after all: neither re-posted nor apologised for,
// either could be a second message (docs/delivery-contract.md, "unknown
// outcome").
void SessionRunner::ApologizeIfSilent(TurnCtx* t, const absl::Status& s) {
  if (MaybeSent(s)) {
    services_.metrics->Error("maybe_sent").Increment();
  } else if (!s.ok() && t->sent.empty() && !absl::IsCancelled(s)) {
    (void)DeliverText(t, kAgentDown, v1::SPEAKER_SYSTEM);
  }
}

// The agent asked for a person: after its reply (if any), the user is told,
// once; that is also their answer when the reply failed.
absl::Status SessionRunner::TellHandoff(TurnCtx* t, const absl::Status& s) {
  if (MaybeSent(s) || absl::IsCancelled(s) || assignment_.handoff_message().empty()) return s;
  absl::Status told = DeliverText(t, assignment_.handoff_message(), v1::SPEAKER_SYSTEM);
  return s.ok() ? told : s;
}

std::optional<SessionRunner::Handoff> SessionRunner::EndOfTurn() {
  absl::MutexLock lock(&mu_);
  in_turn_ = false;
  return std::exchange(handoff_, std::nullopt);
}

// The conversation lingers a little for a quick follow-up, then closes:
// an idle agent re-engages and costs (PROTOCOLS.md B4). After a handoff it
// closes at once: a person answers next.
void SessionRunner::AfterTurn(bool handoff) {
  if (!agent_) return;
  if (handoff || settings_.agent_linger <= absl::ZeroDuration()) {
    Close();
  } else {
    agent_->CloseWhenIdle(settings_.agent_linger);
  }
}

v1::TurnResult SessionRunner::RunTurn(const v1::Turn& turn) {
  const Steady::time_point start = Steady::now();
  {
    absl::MutexLock lock(&mu_);
    in_turn_ = true;
    handoff_.reset();
  }
  TurnCtx t = NewTurn(turn);
  std::string type;
  absl::Status s = RunAction(&t, &type);
  const std::optional<Handoff> handoff = EndOfTurn();
  if (handoff) {
    s = TellHandoff(&t, s);
  } else if (IsReply(turn.action()) && type != "inform") {
    ApologizeIfSilent(&t, s);
  }
  AfterTurn(handoff.has_value());
  return Finish(&t, s, type, handoff, start);
}

v1::TurnResult SessionRunner::Finish(TurnCtx* t, const absl::Status& s, const std::string& type,
                                     const std::optional<Handoff>& handoff,
                                     Steady::time_point start) {
  v1::TurnResult result;
  result.set_session_id(t->turn->session_id());
  result.set_turn_id(t->turn->turn_id());
  // The turns that joined this one are settled with it (the controller
  // deletes their queue records by these ids, also after a restart).
  *result.mutable_coalesced_turn_ids() = t->turn->coalesced_turn_ids();
  if (t->agent_took_part) result.set_conversation_id(conversation_id());
  for (v1::SentMessage& sent : t->sent) *result.add_sent() = std::move(sent);
  Remember(t->lines);
  for (v1::TranscriptLine& line : t->lines) *result.add_lines() = std::move(line);
  if (handoff) {
    result.set_handoff_requested(true);
    result.set_handoff_reason(handoff->reason);
  }
  const double total_ms = MsSince(start);
  t->latency.set_total_ms(total_ms);
  *result.mutable_latency() = t->latency;
  result.set_outcome(s.ok() ? v1::TURN_OUTCOME_DONE : v1::TURN_OUTCOME_FAILED);
  if (!s.ok()) {
    result.set_reason(std::string(RedactStatus(s).message()));
    LogWarn("turn failed", {{"session_id", session_id()}, {"type", type}, {"error", s}});
  }
  services_.metrics->Turn(type, s.ok() ? "done" : "failed").Increment();
  services_.metrics->Stage("end_to_end").Observe(total_ms / 1000);
  return result;
}

}  // namespace bridge::media_worker
