#include "bridgectl/talk_command.h"

#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "audio/ogg_opus_decoder.h"
#include "bridge/v1/media.grpc.pb.h"
#include "bridge/v1/sessions.grpc.pb.h"
#include "common/call_auth.h"
#include "common/controller_targets.h"
#include "grpcpp/grpcpp.h"

namespace bridge::bridgectl {
namespace {

namespace v1 = ::bridge::v1;

constexpr size_t kChunkBytes = 4096;  // about a second of a 24-32 kb/s voice note
constexpr int kRate = 48000;

std::string CodeName(const grpc::Status& s) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
}

// The note's decoded length after each chunk: checks the file with the
// worker's decoder before anything is sent, and paces --realtime.
absl::StatusOr<std::vector<absl::Duration>> AudioAfterChunks(const std::string& note) {
  auto decoder = audio::OggOpusDecoder::Create(kRate);
  if (!decoder.ok()) return decoder.status();
  std::vector<absl::Duration> after;
  std::vector<int16_t> pcm;
  for (size_t off = 0; off < note.size(); off += kChunkBytes) {
    const size_t n = std::min(kChunkBytes, note.size() - off);
    absl::Status s =
        (*decoder)->Push({reinterpret_cast<const uint8_t*>(note.data()) + off, n});
    if (!s.ok()) return s;
    (*decoder)->Pull(&pcm);
    pcm.clear();
    after.push_back(absl::Seconds(static_cast<double>((*decoder)->samples()) / kRate));
  }
  if (absl::Status s = (*decoder)->Finish(); !s.ok()) return s;
  if ((*decoder)->samples() == 0) return absl::InvalidArgumentError("the note holds no audio");
  return after;
}

// The least loaded serving worker the controller knows.
absl::StatusOr<std::string> PickWorker(const std::string& controller) {
  auto targets = ControllerTargets::Create(controller);
  if (!targets.ok()) return targets.status();
  v1::ListWorkersResponse resp;
  grpc::Status s = CallLeader(**targets, [&](const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    AttachToken(&ctx, EnvOr("BRIDGE_ADMIN_TOKEN"));  // Sessions: the operator token
    return v1::Sessions::NewStub(channel)->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp);
  });
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("controller ", controller, ": ",
                                               s.error_message(), " (", CodeName(s), ")"));
  }
  const v1::Worker* best = nullptr;
  auto load = [](const v1::Worker& w) {
    return static_cast<double>(w.active_sessions()) / std::max(1, w.capacity());
  };
  for (const v1::Worker& w : resp.workers()) {
    if (w.state() != v1::WORKER_STATE_SERVING || w.address().empty()) continue;
    if (best == nullptr || load(w) < load(*best)) best = &w;
  }
  if (best == nullptr) {
    return absl::UnavailableError(absl::StrCat("controller ", controller, " has no serving worker"));
  }
  return best->address();
}

// What the worker sent back; the reader thread fills it.
class Replies {
 public:
  Replies(std::ofstream* file, std::ostream* out) : file_(file), out_(out) {}
  void Run(grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>* stream) {
    v1::ConverseResponse r;
    while (stream->Read(&r)) {
      absl::MutexLock lock(&mu_);
      if (r.has_audio()) {
        file_->write(r.audio().data(), static_cast<std::streamsize>(r.audio().size()));
        file_->flush();  // as it arrives: a player can follow the file
        audio_bytes_ += r.audio().size();
      } else if (r.has_user_transcript()) {
        *out_ << "user:  " << r.user_transcript() << std::endl;
      } else if (r.has_agent_text()) {
        *out_ << "agent: " << r.agent_text() << std::endl;
      } else if (r.has_interruption()) {
        *out_ << "(the agent was interrupted)" << std::endl;
      }
    }
  }
  size_t audio_bytes() {
    absl::MutexLock lock(&mu_);
    return audio_bytes_;
  }

 private:
  absl::Mutex mu_;
  std::ofstream* file_;
  std::ostream* out_;
  size_t audio_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

v1::ConverseRequest Start() {
  v1::ConverseRequest req;
  req.mutable_start()->set_input_format(v1::AUDIO_FORMAT_OGG_OPUS);
  req.mutable_start()->set_output_format(v1::AUDIO_FORMAT_OGG_OPUS);
  return req;  // no wa_id: an anonymous session
}

void WaitUntil(absl::Time t) {
  const absl::Duration wait = t - absl::Now();
  if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
}

// Sends the note (paced when asked), then end_of_input and the half-close.
void SendNote(grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>* stream,
              const std::string& note, const std::vector<absl::Duration>& after, bool realtime) {
  if (!stream->Write(Start())) return;
  const absl::Time t0 = absl::Now();
  for (size_t i = 0, off = 0; off < note.size(); ++i, off += kChunkBytes) {
    // A chunk goes once the audio before it has "played".
    if (realtime && i > 0) WaitUntil(t0 + after[i - 1]);
    v1::ConverseRequest req;
    req.set_audio(note.substr(off, kChunkBytes));
    if (!stream->Write(req)) return;  // the call failed: Finish says why
  }
  if (realtime) WaitUntil(t0 + after.back());  // a live speaker ends when the note does
  v1::ConverseRequest end;
  end.set_end_of_input(true);
  if (stream->Write(end)) stream->WritesDone();
}

}  // namespace

int RunTalkCommand(const TalkOptions& opts, std::ostream& out, std::ostream& err) {
  auto fail = [&](const std::string& why) {
    err << "bridgectl talk: " << why << std::endl;
    return 1;
  };
  std::ifstream in(opts.in_path, std::ios::binary);
  if (!in) return fail(absl::StrCat(opts.in_path, ": cannot read the file"));
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string note = buf.str();
  absl::StatusOr<std::vector<absl::Duration>> after = AudioAfterChunks(note);
  if (!after.ok()) {
    return fail(absl::StrCat(opts.in_path, ": not a playable Ogg/Opus voice note (",
                             audio::DecodeProblemName(audio::ProblemOf(after.status())),
                             "): ", after.status().message()));
  }
  std::string target = opts.worker;
  if (target.empty()) {
    absl::StatusOr<std::string> picked = PickWorker(opts.controller);
    if (!picked.ok()) return fail(std::string(picked.status().message()));
    target = *picked;
  }
  std::ofstream reply(opts.out_path, std::ios::binary | std::ios::trunc);
  if (!reply) return fail(absl::StrCat(opts.out_path, ": cannot write the reply file"));

  auto stub = v1::Media::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  AttachToken(&ctx, EnvOr("BRIDGE_CLUSTER_TOKEN"));  // Media: the cluster token
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + after->back() + opts.reply_timeout));
  auto stream = stub->Converse(&ctx);
  Replies replies(&reply, &out);
  std::thread reader([&] { replies.Run(stream.get()); });
  SendNote(stream.get(), note, *after, opts.realtime);
  reader.join();
  const grpc::Status status = stream->Finish();
  reply.close();
  if (!status.ok()) {
    return fail(absl::StrCat("worker ", target, ": ", status.error_message(), " (",
                             CodeName(status), ")"));
  }
  if (replies.audio_bytes() == 0) return fail("the agent sent no reply audio");
  if (!reply) return fail(absl::StrCat(opts.out_path, ": cannot write the reply file"));
  out << "reply: " << opts.out_path << " (" << replies.audio_bytes() << " bytes)" << std::endl;
  return 0;
}

}  // namespace bridge::bridgectl
