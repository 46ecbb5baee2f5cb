#!/usr/bin/env python
"""Audio references made by transformers, soundfile and python-soxr for tests/test_audio.cpp.

Usage: python tests/parity/make_audio.py OUT_DIR

Writes, all generated here with numpy (seeded) and soundfile:
  audio/*.wav, .flac, .ogg  speech-like tones, noise and silence: mono, stereo, 3 and 5
                            channels; 8, 16, 22.05, 44.1 and 48 kHz; PCM 16/24/32 and float
                            WAV, FLAC, Ogg Vorbis; 100 samples to 35 s (past Whisper's 30)
  processors/<name>/preprocessor_config.json
                            whisper80 (tiny..large-v2), whisper128 (large-v3), and custom
                            (64 bins, 22.05 kHz, n_fft 512, hop 256, 4 s chunks, padding 0.5)
  reference.safetensors     raw/<file>: soundfile's read(dtype="float32") mixed to mono as
                            transformers' load_audio does; wave/<proc>/<file>: load_audio(
                            file, sampling_rate, backend="soundfile"); feat/<proc>/<file>:
                            WhisperFeatureExtractor.from_pretrained(proc)(wave).input_features[0]
                            (the torch path users get); featnp/<proc>/<file>: the same with
                            torch hidden (its numpy path); mel/<proc>: its mel_filters;
                            batch/whisper80: input_features of two files in one call;
                            resample/<case>/in, /out: soxr.resample(in, rate_in, rate_out)
  manifest.json             files, processors, resample cases, hostile expectations, versions
  hostile/                  files no reader may crash on: empty, text, PNG bytes, a WAV cut
                            in its header, no data, rates 0 / 10 / 2^31-1 Hz, 0 / 300 / 60000
                            channels, an unknown codec, a data chunk claiming 4 GiB
"""

import json
import os
import struct
import sys
import warnings
from unittest import mock

import numpy as np
import soundfile as sf
import soxr
from safetensors.numpy import save_file
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import load_audio
from transformers.models.whisper import feature_extraction_whisper
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
warnings.simplefilter("ignore")

# name: (sample rate, channels, seconds or frames (int), soundfile format, subtype)
FILES = {
    "mono16k_pcm16.wav": (16000, 1, 3.0, "WAV", "PCM_16"),
    "stereo44k_pcm16.wav": (44100, 2, 5.0, "WAV", "PCM_16"),
    "mono8k_pcm16.wav": (8000, 1, 2.0, "WAV", "PCM_16"),
    "stereo48k_35s.wav": (48000, 2, 35.0, "WAV", "PCM_16"),
    "mono22k_pcm24.wav": (22050, 1, 1.5, "WAV", "PCM_24"),
    "three16k_float.wav": (16000, 3, 1.0, "WAV", "FLOAT"),
    "five32k_pcm32.wav": (32000, 5, 0.5, "WAV", "PCM_32"),
    "stereo44k.flac": (44100, 2, 2.5, "FLAC", "PCM_16"),
    "mono48k.ogg": (48000, 1, 2.0, "OGG", "VORBIS"),
    "tiny44k.wav": (44100, 1, 100, "WAV", "PCM_16"),
}

PROCESSORS = {
    "whisper80": {"feature_size": 80},
    "whisper128": {"feature_size": 128},
    "custom": {"feature_size": 64, "sampling_rate": 22050, "n_fft": 512, "hop_length": 256, "chunk_length": 4,
               "padding_value": 0.5},
}

RESAMPLE = [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000), (16000, 8000), (11025, 22050),
            (44100, 48000), (16000, 44100), (32000, 16000)]


def speech_like(rng, rate, channels, frames):
    """Voiced harmonics with a wandering pitch, noise bursts and silent gaps, per channel."""
    t = np.arange(frames) / rate
    out = np.zeros((frames, channels))
    for c in range(channels):
        f0 = 110 + 40 * c + 30 * np.sin(2 * np.pi * 0.7 * t + c)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t + c)
        noise = rng.standard_normal(frames) * (np.sin(2 * np.pi * 0.4 * t) > 0.6)
        out[:, c] = 0.25 * voiced * envelope + 0.05 * noise
        out[(t % 1.7) > 1.4, c] = 0.0
    return np.clip(out, -0.99, 0.99)


def write_audio(d, rng):
    os.makedirs(f"{d}/audio", exist_ok=True)
    info = {}
    for name, (rate, ch, length, fmt, subtype) in FILES.items():
        frames = length if isinstance(length, int) else int(length * rate)
        sf.write(f"{d}/audio/{name}", speech_like(rng, rate, ch, frames), rate, format=fmt, subtype=subtype)
        info[name] = {"rate": rate, "channels": ch, "frames": frames}
    return info


def write_processors(d):
    for name, cfg in PROCESSORS.items():
        os.makedirs(f"{d}/processors/{name}", exist_ok=True)
        WhisperFeatureExtractor(**cfg).save_pretrained(f"{d}/processors/{name}")


def wav(channels, rate, bits, data, fmt_tag=1, data_bytes=None):
    """A canonical 44-byte-header WAV; data_bytes lets the data chunk claim another size."""
    align = channels * bits // 8
    n = len(data) if data_bytes is None else data_bytes
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)
    return (b"RIFF" + struct.pack("<I", min(36 + n, 0xFFFFFFFF)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt +
            b"data" + struct.pack("<I", n) + data)


def write_hostile(d):
    """name -> "error" (a one-line error naming the file) or the frames a reader must get."""
    h = f"{d}/hostile"
    os.makedirs(f"{h}/folder.wav", exist_ok=True)
    pcm = np.round(np.sin(np.arange(500) / 7) * 8000).astype("<i2").tobytes()
    files = {
        "empty.wav": (b"", "error"),
        "text.wav": (b"this is not audio\n" * 20, "error"),
        "png.wav": (b"\x89PNG\r\n\x1a\n" + bytes(200), "error"),
        "cut_header.wav": (wav(1, 16000, 16, pcm)[:30], "error"),
        "no_data.wav": (wav(1, 16000, 16, b""), "error"),
        "rate_0.wav": (wav(1, 0, 16, pcm), "error"),
        "rate_10.wav": (wav(1, 10, 16, pcm), "error"),
        "rate_huge.wav": (wav(1, 0x7FFFFFFF, 16, pcm), "error"),
        "channels_0.wav": (wav(0, 16000, 16, pcm), "error"),
        "channels_300.wav": (wav(300, 16000, 16, bytes(300 * 2 * 4)), "error"),
        "channels_60000.wav": (wav(60000, 16000, 16, pcm), "error"),
        "unknown_codec.wav": (wav(1, 16000, 16, pcm, fmt_tag=0x1234), "error"),
        # The data chunk claims 4 GiB: readers take the 500 frames present, never allocate 4 GiB.
        "claims_4gib.wav": (wav(1, 16000, 16, pcm, data_bytes=0xFFFFFFF0), 500),
    }
    expect = {"folder.wav": "error"}
    for name, (data, outcome) in files.items():
        with open(f"{h}/{name}", "wb") as f:
            f.write(data)
        expect[name] = outcome
    return expect


def mono_as_transformers_reads(path):
    """_load_audio_soundfile before resampling: float32, mean of the channels."""
    with sf.SoundFile(path) as f:
        w = f.read(dtype="float32", always_2d=True).T
    return np.ascontiguousarray(w.mean(axis=0) if w.shape[0] > 1 else w[0], dtype=np.float32)


def main(out):
    rng = np.random.default_rng(18)
    files = write_audio(out, rng)
    write_processors(out)
    tensors = {}
    manifest = {"files": files, "processors": {}, "resample": {}, "hostile": write_hostile(out),
                "libsndfile": sf.__libsndfile_version__, "libsoxr": soxr.__libsoxr_version__}
    for name in files:
        tensors[f"raw/{name}"] = mono_as_transformers_reads(f"{out}/audio/{name}")
    for proc in PROCESSORS:
        fe = WhisperFeatureExtractor.from_pretrained(f"{out}/processors/{proc}")
        manifest["processors"][proc] = {"sampling_rate": fe.sampling_rate, "feature_size": fe.feature_size,
                                        "frames": fe.nb_max_frames}
        tensors[f"mel/{proc}"] = np.ascontiguousarray(fe.mel_filters)
        for name in files:
            wave = load_audio(f"{out}/audio/{name}", sampling_rate=fe.sampling_rate, backend="soundfile")
            tensors[f"wave/{proc}/{name}"] = wave
            tensors[f"feat/{proc}/{name}"] = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="np").input_features[0]
            with mock.patch.object(feature_extraction_whisper, "is_torch_available", lambda: False):
                tensors[f"featnp/{proc}/{name}"] = fe(wave, sampling_rate=fe.sampling_rate,
                                                      return_tensors="np").input_features[0]
    batch = ["stereo44k.flac", "stereo48k_35s.wav"]
    fe = WhisperFeatureExtractor.from_pretrained(f"{out}/processors/whisper80")
    waves = [load_audio(f"{out}/audio/{n}", sampling_rate=16000, backend="soundfile") for n in batch]
    tensors["batch/whisper80"] = fe(waves, sampling_rate=16000, return_tensors="np").input_features
    manifest["batch"] = batch
    for rate_in, rate_out in RESAMPLE:
        case = f"{rate_in}_{rate_out}"
        x = speech_like(rng, rate_in, 1, int(2.5 * rate_in))[:, 0].astype(np.float32)
        tensors[f"resample/{case}/in"] = x
        tensors[f"resample/{case}/out"] = soxr.resample(x, rate_in, rate_out)
        manifest["resample"][case] = [rate_in, rate_out]
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, f"{out}/reference.safetensors")
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
