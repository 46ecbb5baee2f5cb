// Reading an audio file with libsndfile: bounded before it is opened, checked before a
// sample is read, decoded in fixed-size blocks so memory follows the samples actually
// present, never what a header declares.
#include <sndfile.h>
#include <sys/stat.h>

#include <ATen/ATen.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "peft/audio.h"

namespace peft {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

// libsndfile's own words, kept to one line.
std::string one_line(const char* message) {
  std::string m = message ? message : "unknown error";
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  while (!m.empty() && m.back() == ' ') m.pop_back();
  return m;
}

void check_file(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": cannot open audio: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(path + ": not a regular file");
  if (st.st_size == 0) throw std::runtime_error(path + ": empty file, not audio");
  if (st.st_size > kMaxAudioFileBytes)
    throw std::runtime_error(path + ": " + std::to_string(st.st_size) + " bytes is more than the limit of " +
                             std::to_string(kMaxAudioFileBytes) + " for an audio file");
}

void check_info(const std::string& path, const SF_INFO& info) {
  if (info.samplerate < kMinAudioSampleRate || info.samplerate > kMaxAudioSampleRate)
    throw std::runtime_error(path + ": sample rate " + std::to_string(info.samplerate) + " Hz is outside [" +
                             std::to_string(kMinAudioSampleRate) + ", " + std::to_string(kMaxAudioSampleRate) + "]");
  if (info.channels < 1 || info.channels > kMaxAudioChannels)
    throw std::runtime_error(path + ": " + std::to_string(info.channels) + " channels is outside [1, " +
                             std::to_string(kMaxAudioChannels) + "]");
}

// Adds one block of interleaved frames to `mono` as numpy's mean over channels does in
// float32: the channels summed in order, then divided by their count.
void mix_down(const float* interleaved, int64_t frames, int channels, std::vector<float>& mono) {
  const float count = static_cast<float>(channels);
  for (int64_t f = 0; f < frames; ++f) {
    const float* frame = interleaved + f * channels;
    if (channels == 1) {
      mono.push_back(frame[0]);
      continue;
    }
    float sum = frame[0];
    for (int c = 1; c < channels; ++c) sum += frame[c];
    mono.push_back(sum / count);
  }
}

std::vector<float> decode(const std::string& path, SNDFILE* file, int channels) {
  // About 4 MiB of interleaved floats per block, whatever the channel count.
  const int64_t block_frames = std::max<int64_t>(1, (int64_t{1} << 20) / channels);
  std::vector<float> block(static_cast<size_t>(block_frames * channels));
  std::vector<float> mono;
  for (;;) {
    const sf_count_t got = sf_readf_float(file, block.data(), block_frames);
    if (got <= 0) break;
    if (static_cast<int64_t>(mono.size()) + got > kMaxAudioFrames)
      throw std::runtime_error(path + ": more than " + std::to_string(kMaxAudioFrames) +
                               " frames, the limit for an audio file");
    mix_down(block.data(), got, channels, mono);
  }
  if (sf_error(file) != SF_ERR_NO_ERROR) throw std::runtime_error(path + ": " + one_line(sf_strerror(file)));
  return mono;
}

}  // namespace

Audio read_audio(const std::string& path) {
  check_file(path);
  SF_INFO info{};
  SndfilePtr file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) throw std::runtime_error(path + ": not an audio file libsndfile reads (" + one_line(sf_strerror(nullptr)) + ")");
  check_info(path, info);
  std::vector<float> mono;
  try {
    mono = decode(path, file.get(), info.channels);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(path + ": out of memory decoding the audio");
  }
  if (mono.empty()) throw std::runtime_error(path + ": no audio samples (0 frames)");
  Audio audio;
  audio.sample_rate = info.samplerate;
  audio.samples = at::empty({static_cast<int64_t>(mono.size())}, at::kFloat);
  std::memcpy(audio.samples.data_ptr<float>(), mono.data(), mono.size() * sizeof(float));
  return audio;
}

}  // namespace peft
