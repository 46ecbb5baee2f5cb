#!/usr/bin/env python
"""A random tiny English-only Whisper with a real (byte-level BPE) Whisper tokenizer, a
WhisperFeatureExtractor config and a small {"audio", "text"} JSONL, for
tests/test_whisper_asr.cpp: speech recognition training data and transcription against
transformers' fine-tuning recipe.

Usage: python tests/parity/make_whisper_asr.py make OUT_DIR
       python tests/parity/make_whisper_asr.py transcribe BASE_DIR ADAPTER_DIR|- DATA.jsonl OUT.json

make: OUT_DIR/whisper_asr/ holds
  - the model (save_pretrained, float32: d_model 64, 2 + 2 layers, 80 mel bins,
    max_source_positions 50 for 1 s of audio, max_target_positions 24) and its
    generation_config.json as English-only checkpoints have it (forced <|notimestamps|>);
  - tokenizer.json: WhisperTokenizer (language and task unset, no timestamps) over a
    byte-level BPE trained here on number words, with Whisper's special tokens after it;
  - preprocessor_config.json: WhisperFeatureExtractor with chunk_length 1;
  - data/*.wav (22050 Hz tones, so they are resampled; one longer than the 1 s window)
    and data/train.jsonl with paths relative to it;
  - reference.safetensors: what the recipe makes of train.jsonl as one batch:
    input_features [N, 80, 100] (load_audio + the feature extractor), labels (the
    tokenizer's ids with the leading <|startoftranscript|> dropped as
    DataCollatorSpeechSeq2SeqWithPadding drops it, -100 after each row) and the model's
    loss on them.
transcribe: HF's transcripts of DATA.jsonl's audio (model.generate, greedy, then
  batch_decode with skip_special_tokens), as a JSON list in OUT.json.
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                          WhisperForConditionalGeneration, WhisperTokenizer)
from transformers.audio_utils import load_audio
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|notimestamps|>"]
# (text, seconds, tone frequencies in Hz): audio of different lengths, one past the window
UTTERANCES = [("seven", 0.6, [440, 660]), ("three one", 0.9, [300, 900]), ("zero", 0.4, [520]),
              ("nine eight two", 1.3, [250, 750, 1250]), ("five", 0.7, [610, 1220]), ("six four", 0.8, [350, 1050])]
FILE_RATE = 22050


def make_tokenizer(d):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    vocab = bpe.get_vocab()
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    n = len(vocab)
    for i, s in enumerate(SPECIALS):
        vocab[s] = n + i
    tok = WhisperTokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.set_prefix_tokens()  # <|startoftranscript|> <|notimestamps|> $A <|endoftext|>
    tok.save_pretrained(d)
    return WhisperTokenizer.from_pretrained(d)


def make_model(d, tok):
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    eos, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_source_positions=50, max_target_positions=24, pad_token_id=eos,
                        bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=start, suppress_tokens=None,
                        begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        # transformers' init (std 0.02) leaves logits too flat for a frozen base to be
        # adapted to confident transcripts; unit-scale weights as a trained model has
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not (name.endswith("embed_positions.weight") and ".encoder." in name):
                p.copy_(torch.randn_like(p) * (p[0].numel() if "conv" in name else p.shape[-1]) ** -0.5)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, is_multilingual=False,
        no_timestamps_token_id=ids["<|notimestamps|>"], forced_decoder_ids=[[1, ids["<|notimestamps|>"]]],
        suppress_tokens=[], begin_suppress_tokens=[eos], max_length=24)
    model.save_pretrained(d, safe_serialization=True)
    return model


def make_audio(d):
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    rows = []
    for i, (text, seconds, freqs) in enumerate(UTTERANCES):
        t = np.arange(int(seconds * FILE_RATE)) / FILE_RATE
        wave = sum(np.sin(2 * math.pi * f * t + k) for k, f in enumerate(freqs)) * 0.3 / len(freqs)
        wave *= np.minimum(1, np.minimum(t, t[-1] - t) * 20)  # 50 ms fades
        rel = f"u{i}.wav"
        sf.write(os.path.join(d, "data", rel), wave.astype(np.float32), FILE_RATE, subtype="PCM_16")
        rows.append({"audio": rel, "text": text})
    with open(os.path.join(d, "data", "train.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def features_of(paths, fe):
    waves = [load_audio(p, sampling_rate=fe.sampling_rate, backend="soundfile") for p in paths]
    return fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features


def labels_of(texts, tok, start):
    """DataCollatorSpeechSeq2SeqWithPadding: pad with -100, drop a leading start token."""
    ids = [tok(t).input_ids for t in texts]
    width = max(len(x) for x in ids)
    labels = torch.full((len(ids), width), -100, dtype=torch.int64)
    for i, x in enumerate(ids):
        labels[i, :len(x)] = torch.tensor(x)
    if (labels[:, 0] == start).all():
        labels = labels[:, 1:]
    return labels


def make(out_dir):
    torch.set_num_threads(1)
    d = os.path.join(out_dir, "whisper_asr")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tok = make_tokenizer(d)
    model = make_model(d, tok)
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=1)
    fe.save_pretrained(d)
    rows = make_audio(d)
    features = features_of([os.path.join(d, "data", r["audio"]) for r in rows], fe)
    labels = labels_of([r["text"] for r in rows], tok, model.config.decoder_start_token_id)
    with torch.no_grad():
        loss = model(input_features=features, labels=labels).loss
    save_file(dict(input_features=features.contiguous(), labels=labels.contiguous(), loss=loss.reshape(1).float()),
              os.path.join(d, "reference.safetensors"))
    print(f"whisper_asr: vocabulary {len(tok)}, labels {labels.tolist()}, loss {loss.item():.5f}")


def transcribe(base, adapter, data, out):
    torch.set_num_threads(1)
    model = WhisperForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    if adapter != "-":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).eval()
    tok = WhisperTokenizer.from_pretrained(base)
    fe = WhisperFeatureExtractor.from_pretrained(base)
    rows = [json.loads(line) for line in open(data) if line.strip()]
    features = features_of([os.path.join(os.path.dirname(data), r["audio"]) for r in rows], fe)
    with torch.no_grad():
        ids = model.generate(input_features=features, max_new_tokens=20, do_sample=False, num_beams=1)
    texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
    with open(out, "w") as f:
        json.dump(texts, f)
    print("hf transcripts", texts)


def main():
    a = sys.argv[1:]
    if len(a) == 2 and a[0] == "make":
        make(a[1])
    elif len(a) == 5 and a[0] == "transcribe":
        transcribe(*a[1:])
    else:
        sys.exit(__doc__.split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
