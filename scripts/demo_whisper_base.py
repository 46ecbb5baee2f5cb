"""A small Whisper-shaped speech recognizer to adapt in the audio demo, made here from
random weights and pretrained on part of the spoken digits (nothing downloaded).

Usage: demo_whisper_base.py DIGITS_DIR OUT_DIR [--steps N]

DIGITS_DIR is what scripts/demo_audio_data.py writes. OUT_DIR gets a transformers
WhisperForConditionalGeneration folder (d_model 96, 2 + 2 layers, 80 mel bins over a 2 s
window), English-only like whisper-tiny.en: config.json, model.safetensors,
generation_config.json (forced <|notimestamps|>), preprocessor_config.json
(WhisperFeatureExtractor, chunk_length 2) and tokenizer.json (WhisperTokenizer over a
byte-level BPE trained here on the ten words, with Whisper's special tokens).

The model is trained in full (AdamW, transformers' loss, batches of 16) on
DIGITS_DIR/base.jsonl, the American English utterances only, so that the British accents
the demo adapts it to are new to it.
"""
import argparse
import json
import os

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                          WhisperForConditionalGeneration, WhisperTokenizer)
from transformers.audio_utils import load_audio
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|notimestamps|>"]


def make_tokenizer(out):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    vocab = bpe.get_vocab()
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    n = len(vocab)
    vocab.update({s: n + i for i, s in enumerate(SPECIALS)})
    tok = WhisperTokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.set_prefix_tokens()  # <|startoftranscript|> <|notimestamps|> $A <|endoftext|>
    tok.save_pretrained(out)
    return WhisperTokenizer.from_pretrained(out)


def make_model(tok):
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    eos, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=96, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=384,
                        decoder_ffn_dim=384, max_source_positions=100, max_target_positions=32, pad_token_id=eos,
                        bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=start, suppress_tokens=None,
                        begin_suppress_tokens=None, dropout=0.1)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, is_multilingual=False,
        no_timestamps_token_id=ids["<|notimestamps|>"], forced_decoder_ids=[[1, ids["<|notimestamps|>"]]],
        suppress_tokens=[], begin_suppress_tokens=[eos], max_length=32)
    return model


def examples(digits, fe, tok, start):
    rows = [json.loads(line) for line in open(os.path.join(digits, "base.jsonl"))]
    waves = [load_audio(os.path.join(digits, r["audio"]), sampling_rate=16000, backend="soundfile") for r in rows]
    features = fe(waves, sampling_rate=16000, return_tensors="pt").input_features
    ids = [tok(r["text"]).input_ids[1:] for r in rows]  # the collator drops <|startoftranscript|>
    assert all(x[0] != start for x in ids)
    labels = torch.full((len(ids), max(map(len, ids))), -100)
    for i, x in enumerate(ids):
        labels[i, :len(x)] = torch.tensor(x)
    return features, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("digits")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=400)
    a = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    tok = make_tokenizer(a.out)
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=2)
    fe.save_pretrained(a.out)
    model = make_model(tok)
    features, labels = examples(a.digits, fe, tok, model.config.decoder_start_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=a.steps, pct_start=0.1)
    model.train()
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, len(labels), (16,))
        loss = model(input_features=features[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"pretraining: step {step}/{a.steps} loss {loss.item():.4f}", flush=True)
    model.eval().save_pretrained(a.out, safe_serialization=True)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"pretrained on {len(labels)} utterances")


if __name__ == "__main__":
    main()
