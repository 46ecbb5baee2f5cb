// Audio as transformers reads it for Whisper: a file decoded by libsndfile (WAV, FLAC,
// OGG/Vorbis, whatever the installed libsndfile opens), mixed down to mono float32 by the
// mean of its channels and resampled by libsoxr at python-soxr's default quality, as
// transformers.audio_utils.load_audio(path, sampling_rate, backend="soundfile") does;
// then WhisperFeatureExtractor's log-mel input_features (its numpy path, float64).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace peft {

// Mono samples at their file's rate.
struct Audio {
  at::Tensor samples;  // float32 [frames]
  int64_t sample_rate = 0;
};

// Limits that keep a hostile header from costing memory: files larger than this are
// refused before they are opened; decoding stops with an error past kMaxAudioFrames
// (4.6 hours at 16 kHz, 1 GiB of mono float32); rates and channel counts outside these
// ranges are refused before a sample is read.
inline constexpr int64_t kMaxAudioFileBytes = int64_t{4} << 30;
inline constexpr int64_t kMaxAudioFrames = int64_t{1} << 28;
inline constexpr int64_t kMinAudioSampleRate = 1000, kMaxAudioSampleRate = 1000000;
inline constexpr int64_t kMaxAudioChannels = 256;

// Decodes a file with libsndfile into float32 (libsndfile's scaling of integer PCM, as
// soundfile's read(dtype="float32")), mixed down to mono by the mean of its channels.
// Every failure (missing file, not audio, no samples, absurd rate or channel count, too
// long) throws std::runtime_error with one line naming the file.
Audio read_audio(const std::string& path);

// python-soxr's soxr.resample(samples, in_rate, out_rate) (quality "HQ", its chunked
// processing) on mono float32 samples: the same libsoxr, so the same samples.
at::Tensor resample_audio(const at::Tensor& samples, double in_rate, double out_rate);

// transformers' load_audio(path, sampling_rate, backend="soundfile"): read_audio, then,
// at another rate, resample_audio padded with zeros or cut to
// ceil(frames * sampling_rate / file_rate) samples. float32 [samples].
at::Tensor load_audio(const std::string& path, int64_t sampling_rate);

// WhisperFeatureExtractor's settings from preprocessor_config.json, with its defaults.
struct WhisperFeatureConfig {
  int64_t feature_size = 80;  // mel bins: 80, or 128 for large-v3
  int64_t sampling_rate = 16000;
  int64_t hop_length = 160;
  int64_t n_fft = 400;
  int64_t chunk_length = 30;  // seconds
  double padding_value = 0.0;
  // Samples every input is padded or cut to. transformers sets it to chunk_length *
  // sampling_rate whatever the file's n_samples says, and so do we.
  int64_t n_samples() const { return chunk_length * sampling_rate; }
  int64_t num_frames() const { return n_samples() / hop_length; }  // 3000 for Whisper
};

// Reads a model folder's preprocessor_config.json (or that file itself). Ill-typed or
// out-of-range values, another feature_extractor_type, or a dither other than 0 (random
// noise, not reproducible) throw one line naming the file and key.
WhisperFeatureConfig read_whisper_feature_config(const std::string& folder_or_file);

// transformers' mel_filter_bank for Whisper (slaney scale and norm, 0 to 8000 Hz):
// float64 [n_fft / 2 + 1, feature_size].
at::Tensor whisper_mel_filters(const WhisperFeatureConfig& config);

// WhisperFeatureExtractor's input_features for one mono float32 waveform at
// config.sampling_rate: padded with padding_value or cut to n_samples, periodic Hann
// STFT, power spectrum, mel filters, log10 (floor 1e-10), at most 8 below its maximum,
// (x + 4) / 4. float32 [feature_size, num_frames].
at::Tensor whisper_log_mel(const at::Tensor& samples, const WhisperFeatureConfig& config);

}  // namespace peft
