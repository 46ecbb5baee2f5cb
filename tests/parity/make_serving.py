#!/usr/bin/env python
"""Adapters and reference generations for the serving engine's tests (mixed batches).

Usage: python tests/parity/make_serving.py PARITY_DIR OUT_DIR

On PARITY_DIR/llama_mha (tests/parity/make_models.py), makes adapters of several methods,
ranks and target sets (soft prompts and a prefix among them), each with non-trivial
weights, saved as OUT_DIR/<name>/ by HF PEFT, and OUT_DIR/requests.json: a list of
{"prompt": ids, "adapter": name ("" = base), "tokens": HF PEFT's greedy continuation
(generate with that adapter alone)}. Prompts are drawn until every greedy step of every
request wins by a margin, so that batching cannot flip a token by rounding.
"""

import json
import os
import shutil
import sys

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from peft import (IA3Config, LoHaConfig, LoraConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig,
                  PromptTuningConfig, get_peft_model)

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

NEW_TOKENS = 12
MIN_MARGIN = 2e-2
ADAPTERS = {
    "qv_r2": LoraConfig(target_modules=["q_proj", "v_proj"], r=2, lora_alpha=4),
    "all_r8": LoraConfig(target_modules="all-linear", r=8, lora_alpha=16),
    "mlp_r4": LoraConfig(target_modules=["gate_proj", "up_proj", "down_proj"], r=4, lora_alpha=4),
    "o_rslora": LoraConfig(target_modules=["o_proj", "k_proj"], r=6, lora_alpha=8, use_rslora=True),
    "dora": LoraConfig(target_modules=["q_proj", "down_proj"], r=4, lora_alpha=8, use_dora=True),
    "ia3": IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    "loha": LoHaConfig(target_modules=["q_proj", "o_proj"], r=4, alpha=8),
    "qv_r16": LoraConfig(target_modules=["q_proj", "v_proj", "lm_head"], r=16, lora_alpha=8),
    # Soft prompts and a prefix: their rows get virtual tokens of their own in the mixed batch.
    "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
    "ptuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, encoder_hidden_size=32),
    "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
}
# Rows of the mixed batch: (prompt length, adapter).
ROWS = [(5, "qv_r2"), (9, "all_r8"), (3, "mlp_r4"), (7, "o_rslora"), (6, "dora"), (4, "ia3"), (8, "loha"),
        (5, "qv_r16"), (6, ""), (7, "all_r8"), (2, "qv_r2"), (4, "prompt"), (6, "ptuning"), (2, "prompt"),
        (5, "prefix"), (3, "prefix")]


def base(parity_dir):
    return AutoModelForCausalLM.from_pretrained(os.path.join(parity_dir, "llama_mha"), dtype=torch.float32).eval()


def make_adapter(parity_dir, out_dir, name, cfg, seed):
    torch.manual_seed(seed)
    model = get_peft_model(base(parity_dir), cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(os.path.join(out_dir, name))


def greedy(model, prompt):
    """Greedy continuation and the smallest top-1 / top-2 logit gap along it."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    margin = min(float((s[0].topk(2).values[0] - s[0].topk(2).values[1])) for s in out.scores)
    return out.sequences[0, len(prompt):].tolist(), margin


def main():
    parity_dir, out_dir = sys.argv[1], sys.argv[2]
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    torch.set_num_threads(2)
    for i, (name, cfg) in enumerate(ADAPTERS.items()):
        make_adapter(parity_dir, out_dir, name, cfg, 100 + i)
    models = {"": base(parity_dir)}
    for name in ADAPTERS:
        models[name] = PeftModel.from_pretrained(base(parity_dir), os.path.join(out_dir, name)).eval()
    vocab = models[""].config.vocab_size
    gen = torch.Generator().manual_seed(7)
    requests = []
    for length, adapter in ROWS:
        for attempt in range(200):
            prompt = torch.randint(1, vocab, (length,), generator=gen).tolist()
            tokens, margin = greedy(models[adapter], prompt)
            if margin > MIN_MARGIN:
                break
        else:
            sys.exit(f"no prompt of {length} tokens with a greedy margin above {MIN_MARGIN} for '{adapter}'")
        requests.append({"prompt": prompt, "adapter": adapter, "tokens": tokens, "margin": margin})
    with open(os.path.join(out_dir, "requests.json"), "w") as f:
        json.dump(requests, f)
    print(f"{len(ADAPTERS)} adapters, {len(requests)} requests -> {out_dir}")


if __name__ == "__main__":
    main()
