#!/usr/bin/env python
"""BEFT references made by HF PEFT for tests/test_beft.cpp.

Usage: python tests/parity/make_beft.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors),
llama_bias/ (make_vera.py's tiny Llama with attention and MLP biases, so every projection
has a bias a BEFT adapter merges into) and per case, as make_vera.py's make_case does,
<case>/adapter/ (beft_bias moved off HF's zero init), <case>/reference.safetensors (inputs,
logits, merged_logits) and <case>/case.json ({"base", "trainable"}).
Cases:
  beft_llama       HF's default targets for llama (v_proj) on llama_bias
  beft_llama_more  v_proj, o_proj and up_proj of layer 1 only (a target regex; BEFT has no
                   layers_to_transform) on llama_bias, init_weights false (HF's N(0, 1))
GPT-2's Conv1D layers are refused by HF's BEFT (and by ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import BeftConfig  # noqa: E402

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


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2", "llama_bias"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, BeftConfig(**kw), perturb)


if __name__ == "__main__":
    main()
