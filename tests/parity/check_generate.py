#!/usr/bin/env python
"""transformers' generate() on a model folder, for tests/test_generate_search.cpp.

Usage: python tests/parity/check_generate.py MODEL_DIR CASES_JSON OUT_JSON

CASES_JSON: {"prompts": [[ids], ...], "cases": [settings, ...]}. Each settings object
names generation_config attributes (num_beams, length_penalty, early_stopping,
no_repeat_ngram_size, min_length, min_new_tokens, forced_bos_token_id,
forced_eos_token_id, repetition_penalty, bad_words_ids, sequence_bias, suppress_tokens,
begin_suppress_tokens, eos_token_id, pad_token_id, max_new_tokens; do_sample with temperature,
top_k, top_p, min_p, and "seed", which seeds torch before generate()); every attribute in
RESET is cleared first, so nothing else of the folder's generation_config.json applies,
unless the settings hold "folder_defaults": true (then the folder's generation config
applies as from_pretrained loaded it, and only max_new_tokens, do_sample, seed and
num_return_sequences are passed).
Prompts are padded as peft generate pads them: on the left with pad_token_id (default 0)
for decoder-only models, on the right with config.pad_token_id for encoder-decoder ones.
OUT_JSON: per case, per output row (num_return_sequences per prompt, together), the new
tokens (after the decoder prompt), up to and including the first EOS token.
"""

import json
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, DynamicCache, EncoderDecoderCache

RESET = ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation",
         "forced_eos_token_id", "forced_bos_token_id", "no_repeat_ngram_size", "min_length", "min_new_tokens",
         "length_penalty", "early_stopping", "num_beams", "repetition_penalty", "bad_words_ids", "sequence_bias",
         "suppress_tokens", "begin_suppress_tokens", "min_p", "do_sample", "num_return_sequences")
DEFAULTS = {"num_beams": 1, "length_penalty": 1.0, "early_stopping": False, "min_length": 0,
            "num_return_sequences": 1}


def padded(prompts, pad, left):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(prompts), width, dtype=torch.int64)
    for i, p in enumerate(prompts):
        cols = slice(width - len(p), width) if left else slice(0, len(p))
        ids[i, cols] = torch.tensor(p)
        mask[i, cols] = 1
    return ids, mask


def run(model, seq2seq, prompts, settings):
    gc = model.generation_config
    pad = settings.get("pad_token_id", 0)
    ids, mask = padded(prompts, model.config.pad_token_id if seq2seq else pad, left=not seq2seq)
    if not settings.get("folder_defaults"):
        for k in RESET:
            setattr(gc, k, DEFAULTS.get(k))
        for k, v in settings.items():
            if k not in ("max_new_tokens", "seed"):
                setattr(gc, k, v)
        gc.pad_token_id = pad
    else:
        gc.num_return_sequences = settings.get("num_return_sequences", gc.num_return_sequences)
    gc.do_sample = bool(settings.get("do_sample"))
    torch.manual_seed(settings.get("seed", 0))
    # T5 v1.1 has more decoder than encoder layers: transformers' default cache is sized by
    # num_layers, so give it one that grows per layer used (as make_t5.py does)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if seq2seq else None
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=settings["max_new_tokens"],
                             past_key_values=cache)
    new = out[:, 1:] if seq2seq else out[:, ids.shape[1]:]
    eos = gc.eos_token_id
    eos = set() if eos is None else set(eos if isinstance(eos, list) else [eos])
    rows = []
    for r in new.tolist():
        cut = next((i + 1 for i, t in enumerate(r) if t in eos), len(r))
        rows.append(r[:cut])
    return rows


def main():
    model_dir, cases_file, out_file = sys.argv[1:4]
    with open(cases_file) as f:
        spec = json.load(f)
    seq2seq = AutoConfig.from_pretrained(model_dir).is_encoder_decoder
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = cls.from_pretrained(model_dir, dtype=torch.float32).eval()
    results = [run(model, seq2seq, spec["prompts"], s) for s in spec["cases"]]
    with open(out_file, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
