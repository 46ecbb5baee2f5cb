#!/usr/bin/env python
"""Reference generations for serving encoder-decoder models (tests/test_engine_seq2seq.cpp).

Usage: python tests/parity/make_serving_seq2seq.py T5_PARITY_DIR OUT.json

On the models of tests/parity/make_t5.py (T5_PARITY_DIR/<family>/ with its lora/ and ia3/
adapters by HF PEFT), one family of each kind of decoder positions: t5_v11 (relative),
bart (learned), m2m100 (fairseq sinusoids counted over non-pad tokens) and marian (a fixed
sinusoid table). OUT.json maps each family to a list of {"prompt": encoder ids (no
padding), "adapter": "", "lora" or "ia3", "tokens": transformers' (HF PEFT's with an
adapter) greedy continuation of NEW_TOKENS tokens, decoder_start not included,
"repetition_penalty": as generate applied it (tiny random models repeat one token; the
penalty makes the later tokens depend on the earlier ones)}. Prompts
are drawn until every greedy step wins by a margin, so that batching cannot flip a token
by rounding.
OUT.json's "t5_fortunes_text" is a text request for `peft serve` on T5_PARITY_DIR/t5_fortunes
(a model with its tokenizer.json): {"prompt": text, "prompt_ids": the tokenizer's ids with
special tokens, "tokens": transformers' greedy answer of up to TEXT_TOKENS tokens with a
repetition penalty of REPETITION_PENALTY, stopping at (and including) EOS, "text":
tokenizers' decode of them, special tokens skipped, "forced_bos_token_id": FORCED_BOS,
"forced_tokens": the same answer with generate's forced_bos_token_id}.
"""

import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSeq2SeqLM, DynamicCache, EncoderDecoderCache
from transformers.utils import logging as hf_logging

from peft import PeftModel

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

NEW_TOKENS = 10
MIN_MARGIN = 2e-2
FAMILIES = ["t5_v11", "bart", "m2m100", "marian"]
# Requests per family: (prompt length, adapter); several lengths per adapter, so rows of
# the same adapter sit at different source widths and decoder positions.
ROWS = [(5, "lora"), (9, ""), (3, "ia3"), (7, "lora"), (2, ""), (6, "ia3"), (11, "lora"), (4, "")]
REPETITION_PENALTY = 3.0


def load(family_dir, adapter):
    model = AutoModelForSeq2SeqLM.from_pretrained(family_dir, dtype=torch.float32).eval()
    if adapter:
        model = PeftModel.from_pretrained(model, os.path.join(family_dir, adapter)).eval()
    return model


def greedy(model, prompt, penalty):
    """Plain greedy decoding (no processors, no EOS) and the smallest top-1 / top-2 gap."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    gc = base.generation_config
    for k in ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation",
              "forced_eos_token_id", "forced_bos_token_id", "no_repeat_ngram_size"):
        setattr(gc, k, None)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, eos_token_id=None,
                             repetition_penalty=penalty,
                             pad_token_id=base.config.pad_token_id,
                             decoder_start_token_id=base.config.decoder_start_token_id,
                             past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                             output_scores=True, return_dict_in_generate=True)
    margin = min(float(torch.topk(s[0].float(), 2).values.diff().abs()) for s in out.scores)
    return out.sequences[0, 1:].tolist(), margin


TEXT_PROMPT = "You may be gone tomorrow, but that"
TEXT_TOKENS = 12
FORCED_BOS = 100


def text_request(family_dir):
    tok = Tokenizer.from_file(os.path.join(family_dir, "tokenizer.json"))
    model = load(family_dir, "")
    ids = tok.encode(TEXT_PROMPT).ids
    gc = model.generation_config
    for k in ("temperature", "top_k", "top_p", "bos_token_id", "max_length", "cache_implementation",
              "forced_eos_token_id", "forced_bos_token_id", "no_repeat_ngram_size"):
        setattr(gc, k, None)
    def answer(forced_bos):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=TEXT_TOKENS, do_sample=False,
                                 num_beams=1, repetition_penalty=REPETITION_PENALTY, forced_bos_token_id=forced_bos,
                                 eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id,
                                 decoder_start_token_id=model.config.decoder_start_token_id)
        return out[0, 1:].tolist()

    tokens, forced = answer(None), answer(FORCED_BOS)
    assert forced[0] == FORCED_BOS and forced != tokens
    return {"prompt": TEXT_PROMPT, "prompt_ids": ids, "tokens": tokens,
            "text": tok.decode(tokens, skip_special_tokens=True), "forced_bos_token_id": FORCED_BOS,
            "forced_tokens": forced}


def main():
    t5_dir, out_path = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    result = {}
    for family in FAMILIES:
        family_dir = os.path.join(t5_dir, family)
        models = {a: load(family_dir, a) for a in ("", "lora", "ia3")}
        vocab = models[""].config.vocab_size
        pad = models[""].config.pad_token_id
        gen = torch.Generator().manual_seed(11)
        requests = []
        for i, (length, adapter) in enumerate(ROWS):
            penalty = REPETITION_PENALTY if i % 4 != 3 else 1.0  # one in four plain
            for _ in range(200):
                prompt = [t for t in torch.randint(3, vocab, (length,), generator=gen).tolist()]
                assert pad not in prompt
                tokens, margin = greedy(models[adapter], prompt, penalty)
                if margin > MIN_MARGIN:
                    break
            else:
                sys.exit(f"{family}: no prompt of {length} tokens with a greedy margin above {MIN_MARGIN}")
            requests.append({"prompt": prompt, "adapter": adapter, "tokens": tokens, "repetition_penalty": penalty,
                             "margin": margin})
        result[family] = requests
    result["t5_fortunes_text"] = text_request(os.path.join(t5_dir, "t5_fortunes"))
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)
    print(f"{len(FAMILIES)} families x {len(ROWS)} requests -> {out_path}")


if __name__ == "__main__":
    main()
