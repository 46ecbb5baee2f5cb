#!/usr/bin/env python
"""BEFT references made by HF PEFT for tests/test_beft.cpp.

Usage: python tests/parity/make_beft.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors),
llama_bias/ (a tiny Llama of the same shape with attention_bias and mlp_bias, so every
projection has a bias a BEFT adapter merges into; the same inputs) and per case, as make_vera.py's make_case does,
<case>/adapter/ (beft_bias moved off HF's zero init), <case>/reference.safetensors (inputs,
logits, merged_logits) and <case>/case.json ({"base", "trainable"}).
Cases:
  beft_llama       HF's default targets for llama (v_proj) on llama_bias
  beft_llama_more  v_proj, o_proj and up_proj of layer 1 only (a target regex; BEFT has no
                   layers_to_transform) on llama_bias, init_weights false (HF's N(0, 1))
GPT-2's Conv1D layers are refused by HF's BEFT (and by ours, by name).
"""

import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import BeftConfig  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

CASES = [
    ("beft_llama", "llama_bias", dict()),
    ("beft_llama_more", "llama_bias",
     dict(target_modules=r".*layers\.1\.(self_attn\.(v_proj|o_proj)|mlp\.up_proj)", init_weights=False)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "beft_bias" in n:
                p.add_(0.5 * torch.randn_like(p))


def make_bias_base(out):
    folder = os.path.join(out, "llama_bias")
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(9)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, attention_bias=True, mlp_bias=True)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # transformers starts biases at zero; merging into them should show
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(folder)
    save_file(load_file(os.path.join(out, "llama", "inputs.safetensors")), os.path.join(folder, "inputs.safetensors"))


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    make_bias_base(out)
    for name, base, kw in CASES:
        make_case(out, name, base, BeftConfig(**kw), perturb)


if __name__ == "__main__":
    main()
