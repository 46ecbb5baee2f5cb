// WhisperFeatureExtractor's log-mel features as its numpy path computes them
// (transformers' audio_utils.spectrogram): float64 STFT whose bins are stored as
// complex64, power in float64, slaney mel filters, log10 with a 1e-10 floor, then float32
// for the dynamic-range clamp and scaling. at::stft is LibTorch's pocketfft, as np.fft.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "peft/audio.h"

namespace peft {
namespace {

// audio_utils.hertz_to_mel / mel_to_hertz with mel_scale="slaney", written as numpy
// evaluates them.
constexpr double kMinLogHertz = 1000.0, kMinLogMel = 15.0;
double hertz_to_mel(double freq) {
  if (freq >= kMinLogHertz) return kMinLogMel + std::log(freq / kMinLogHertz) * (27.0 / std::log(6.4));
  return 3.0 * freq / 200.0;
}
double mel_to_hertz(double mel) {
  if (mel >= kMinLogMel) return kMinLogHertz * std::exp((std::log(6.4) / 27.0) * (mel - kMinLogMel));
  return 200.0 * mel / 3.0;
}

// np.linspace(start, stop, num): i * step + start, the last point set to stop.
std::vector<double> linspace(double start, double stop, int64_t num) {
  std::vector<double> y(static_cast<size_t>(num));
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int64_t i = 0; i < num; ++i) y[i] = static_cast<double>(i) * step + start;
  if (num > 1) y.back() = stop;
  return y;
}

// np.hanning(n + 1)[:-1] (window_function(n, "hann"), periodic): 0.5 + 0.5 cos(pi k / n)
// for k = -n, -n + 2, ..., n - 2.
at::Tensor periodic_hann(int64_t n) {
  auto k = at::arange(-n, n, 2, at::kDouble);
  return 0.5 + 0.5 * at::cos(M_PI * k / static_cast<double>(n));
}

}  // namespace

at::Tensor whisper_mel_filters(const WhisperFeatureConfig& c) {
  const int64_t bins = 1 + c.n_fft / 2, mels = c.feature_size;
  // Whisper's filters always span 0 to 8000 Hz, whatever the sampling rate.
  std::vector<double> filter_freqs = linspace(hertz_to_mel(0.0), hertz_to_mel(8000.0), mels + 2);
  for (double& f : filter_freqs) f = mel_to_hertz(f);
  const std::vector<double> fft_freqs = linspace(0.0, static_cast<double>(c.sampling_rate / 2), bins);
  auto out = at::empty({bins, mels}, at::kDouble);
  auto w = out.accessor<double, 2>();
  for (int64_t i = 0; i < bins; ++i)
    for (int64_t m = 0; m < mels; ++m) {
      // _create_triangular_filter_bank, then the slaney area normalization.
      const double down = -(filter_freqs[m] - fft_freqs[i]) / (filter_freqs[m + 1] - filter_freqs[m]);
      const double up = (filter_freqs[m + 2] - fft_freqs[i]) / (filter_freqs[m + 2] - filter_freqs[m + 1]);
      const double enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
      w[i][m] = std::max(0.0, std::min(down, up)) * enorm;
    }
  return out;
}

at::Tensor whisper_log_mel(const at::Tensor& samples, const WhisperFeatureConfig& c) {
  if (samples.dim() != 1) throw std::runtime_error("whisper_log_mel: expected mono samples [n], got " + c10::str(samples.sizes()));
  const int64_t n = c.n_samples();
  // SequenceFeatureExtractor.pad to max_length n_samples (truncation on), in float32.
  auto padded = at::full({n}, static_cast<float>(c.padding_value), at::kFloat);
  const int64_t keep = std::min(n, samples.numel());
  padded.narrow(0, 0, keep).copy_(samples.narrow(0, 0, keep));

  auto spec = at::stft(padded.to(at::kDouble), c.n_fft, c.hop_length, c.n_fft, periodic_hann(c.n_fft),
                       /*center=*/true, "reflect", /*normalized=*/false, /*onesided=*/true, /*return_complex=*/true);
  // spectrogram() stores the bins as complex64 before np.abs(..., dtype=float64) ** 2.
  auto power = spec.to(at::kComplexFloat).to(at::kComplexDouble).abs().square();
  auto mel = at::matmul(whisper_mel_filters(c).t(), power);
  auto log_spec = mel.clamp_min(1e-10).log10().to(at::kFloat);
  log_spec = log_spec.narrow(1, 0, log_spec.size(1) - 1);  // the last frame is dropped
  log_spec = at::maximum(log_spec, log_spec.max() - 8.0);
  return ((log_spec + 4.0) / 4.0).contiguous();
}

}  // namespace peft
