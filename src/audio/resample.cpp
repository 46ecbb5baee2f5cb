// Resampling with libsoxr exactly as python-soxr's soxr.resample calls it (its default
// quality "HQ", split-channel float32 I/O, input fed in blocks of max(1000, 48000 *
// in/out) frames, then a flush), and transformers' load_audio on top of it.
#include <soxr.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "peft/audio.h"

namespace peft {
namespace {

struct SoxrDeleter {
  void operator()(soxr* s) const { soxr_delete(s); }
};

void check_rate(double rate, const char* which) {
  if (!(rate >= 1.0 && rate <= static_cast<double>(kMaxAudioSampleRate)))
    throw std::runtime_error(std::string("resample: ") + which + " rate " + std::to_string(rate) + " Hz is outside [1, " +
                             std::to_string(kMaxAudioSampleRate) + "]");
}

}  // namespace

at::Tensor resample_audio(const at::Tensor& samples, double in_rate, double out_rate) {
  if (samples.dim() != 1) throw std::runtime_error("resample: expected mono samples [frames], got " + c10::str(samples.sizes()));
  check_rate(in_rate, "input");
  check_rate(out_rate, "output");
  const auto x = samples.to(at::kFloat).contiguous();
  const size_t ilen = static_cast<size_t>(x.numel());
  // python-soxr's output length and block size, computed as it computes them.
  const double olen_real = static_cast<double>(ilen) * out_rate / in_rate + 1;
  if (olen_real > static_cast<double>(kMaxAudioFrames))
    throw std::runtime_error("resample: " + std::to_string(ilen) + " samples at " + std::to_string(in_rate) + " Hz to " +
                             std::to_string(out_rate) + " Hz is more than " + std::to_string(kMaxAudioFrames) + " samples");
  const size_t olen = static_cast<size_t>(olen_real);
  const size_t block = static_cast<size_t>(std::max(1000., 48000 * in_rate / out_rate));

  soxr_error_t err = nullptr;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_S, SOXR_FLOAT32_S);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  std::unique_ptr<soxr, SoxrDeleter> s(soxr_create(in_rate, out_rate, 1, &err, &io, &quality, nullptr));
  if (err || !s) throw std::runtime_error(std::string("resample: libsoxr: ") + (err ? err : "cannot create a resampler"));

  auto y = at::zeros({static_cast<int64_t>(olen)}, at::kFloat);
  const float* in = x.data_ptr<float>();
  float* out = y.data_ptr<float>();
  size_t out_pos = 0, done = 0;
  for (size_t idx = 0; idx < ilen; idx += block) {
    const float* in_block = in + idx;
    float* out_block = out + out_pos;
    err = soxr_process(s.get(), &in_block, std::min(block, ilen - idx), nullptr, &out_block, olen - out_pos, &done);
    if (err) throw std::runtime_error(std::string("resample: libsoxr: ") + err);
    out_pos += done;
  }
  float* out_block = out + out_pos;
  err = soxr_process(s.get(), nullptr, 0, nullptr, &out_block, olen - out_pos, &done);  // flush
  if (err) throw std::runtime_error(std::string("resample: libsoxr: ") + err);
  out_pos += done;
  return y.narrow(0, 0, static_cast<int64_t>(out_pos)).clone();
}

at::Tensor load_audio(const std::string& path, int64_t sampling_rate) {
  if (sampling_rate < kMinAudioSampleRate || sampling_rate > kMaxAudioSampleRate)
    throw std::runtime_error(path + ": requested sampling rate " + std::to_string(sampling_rate) + " Hz is outside [" +
                             std::to_string(kMinAudioSampleRate) + ", " + std::to_string(kMaxAudioSampleRate) + "]");
  Audio audio = read_audio(path);
  if (audio.sample_rate == sampling_rate) return audio.samples;
  // math.ceil(n * sampling_rate / src_rate): the product is exact, the division rounds once.
  const int64_t n = audio.samples.numel();
  const auto want = static_cast<int64_t>(std::ceil(static_cast<double>(n * sampling_rate) / audio.sample_rate));
  if (want > kMaxAudioFrames)
    throw std::runtime_error(path + ": resampling to " + std::to_string(sampling_rate) + " Hz gives " + std::to_string(want) +
                             " samples, more than the limit of " + std::to_string(kMaxAudioFrames));
  at::Tensor y;
  try {
    y = resample_audio(audio.samples, static_cast<double>(audio.sample_rate), static_cast<double>(sampling_rate));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  if (y.numel() >= want) return y.narrow(0, 0, want).clone();
  return at::constant_pad_nd(y, {0, want - y.numel()}, 0.0);
}

}  // namespace peft
