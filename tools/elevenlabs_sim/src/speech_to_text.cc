#include "speech_to_text.h"

#include <mimetic/mimetic.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "audio/ogg_opus_decoder.h"
#include "voice_activity.h"

namespace bridge::elevenlabs_sim {
namespace {

using nlohmann::json;

constexpr int kRate = 16000;
// Enough trailing silence for the detector to close the last turn.
constexpr int kFlushSamples = kRate * 3;

std::pair<int, json> Error(int status, const std::string& code, const std::string& message) {
  return {status, {{"detail", {{"status", code}, {"message", message}}}}};
}

// The form's fields by name (mimetic parses the MIME multipart body).
std::map<std::string, std::string> FormFields(const SttRequest& r, std::string* file_type) {
  const std::string doc = absl::StrCat("Content-Type: ", r.content_type, "\r\n\r\n", r.body);
  mimetic::MimeEntity entity(doc.begin(), doc.end());
  std::map<std::string, std::string> fields;
  for (mimetic::MimeEntity* part : entity.body().parts()) {
    const std::string name = part->header().contentDisposition().param("name");
    if (name.empty()) continue;
    fields[name] = std::string(part->body().begin(), part->body().end());
    if (name == "file") {
      *file_type = part->header().contentType().str();
      if (*file_type == "/") file_type->clear();  // mimetic's "no Content-Type"
    }
  }
  return fields;
}

// What the recording holds, as the agent's ears describe a turn; "" if no speech.
std::optional<std::string> Describe(const std::string& ogg) {
  auto decoder = audio::OggOpusDecoder::Create(kRate);
  if (!decoder.ok()) return std::nullopt;
  absl::Status s = (*decoder)->Push({reinterpret_cast<const uint8_t*>(ogg.data()), ogg.size()});
  if (s.ok()) s = (*decoder)->Finish();
  std::vector<int16_t> pcm;
  (*decoder)->Pull(&pcm);
  if (!s.ok() && pcm.empty()) return std::nullopt;
  VoiceActivity vad(kRate, 1000);
  std::vector<TurnSummary> turns = vad.Push(pcm);
  std::vector<TurnSummary> tail = vad.Push(std::vector<int16_t>(kFlushSamples, 0));
  turns.insert(turns.end(), tail.begin(), tail.end());
  std::string text;
  for (const TurnSummary& t : turns) absl::StrAppend(&text, text.empty() ? "" : " ", t.Describe());
  return text;
}

}  // namespace

std::pair<int, json> Transcribe(const SttRequest& request, json* record) {
  if (!absl::StartsWith(request.content_type, "multipart/form-data")) {
    return Error(400, "invalid_content_type", "Expected multipart/form-data");
  }
  std::string file_type;
  std::map<std::string, std::string> fields = FormFields(request, &file_type);
  *record = {{"model_id", fields.count("model_id") ? fields["model_id"] : ""},
             {"file_bytes", fields.count("file") ? fields["file"].size() : 0},
             {"file_type", file_type}};
  if (!fields.count("model_id") || fields["model_id"].empty()) {
    return Error(422, "missing_model_id", "model_id is required");
  }
  if (!fields.count("file") || fields["file"].empty()) {
    return Error(400, "missing_file", "A file or cloud_storage_url is required");
  }
  std::optional<std::string> text;
  if (file_type.empty() || absl::StartsWith(file_type, "audio/ogg")) {
    text = Describe(fields["file"]);
    if (!text) return Error(400, "invalid_audio", "The audio file could not be decoded");
  } else {
    // The real service reads MP3, AAC, AMR...; the simulator only says what came.
    text = absl::StrCat("[", file_type, " audio, ", fields["file"].size(), " bytes]");
  }
  (*record)["text"] = *text;
  return {200,
          {{"language_code", "eng"},
           {"language_probability", 1.0},
           {"text", *text},
           {"words", json::array()}}};
}

}  // namespace bridge::elevenlabs_sim
