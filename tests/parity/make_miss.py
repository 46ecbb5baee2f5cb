#!/usr/bin/env python
"""MiSS references made by HF PEFT for tests/test_miss.cpp.

Usage:
  python tests/parity/make_miss.py make OUT_DIR
  (checking an adapter saved here: tests/parity/make_vera.py check BASE ADAPTER OUTPUTS)

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (PeftModel.save_pretrained with
miss_block set to N(0, 0.1) values instead of HF's zero init), <case>/reference.safetensors
(inputs, logits, merged_logits) and <case>/case.json ({"base", "trainable"}).
Cases:
  miss_llama       balance (HF's default) with r=10, so 32 and 48 inputs are zero-padded, on
                   q_proj, v_proj and down_proj
  miss_llama_bat   init_weights "bat" (r x r blocks, a weight-dependent update), r=8, on q_proj,
                   o_proj, up_proj and down_proj
  miss_llama_mini  init_weights "mini", r=8, mini_r=4, on k_proj and gate_proj of layer 1
GPT-2's Conv1D layers are not in any case: HF's MiSS refuses them (so does ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import MissConfig  # noqa: E402

CASES = [
    ("miss_llama", "llama", dict(r=10, target_modules=["q_proj", "v_proj", "down_proj"])),
    ("miss_llama_bat", "llama", dict(r=8, init_weights="bat", target_modules=["q_proj", "o_proj", "up_proj", "down_proj"])),
    ("miss_llama_mini", "llama",
     dict(r=8, mini_r=4, init_weights="mini", target_modules=["k_proj", "gate_proj"], layers_to_transform=[1])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "miss_block" in n:
                p.normal_(0.0, 0.1)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):  # gpt2: its Conv1D layers must be refused by name
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, MissConfig(**kw), perturb)


if __name__ == "__main__":
    main()
