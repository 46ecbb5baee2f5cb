#!/usr/bin/env python
"""DeLoRA references made by HF PEFT for tests/test_delora.cpp.

Usage: python tests/parity/make_delora.py make OUT_DIR

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (delora_A, delora_B and delora_lambda
moved off HF's init, which starts at the base), <case>/reference.safetensors (inputs,
logits, merged_logits, "delta.<module path>": HF's get_delta_weight) and case.json
({"base", "trainable"}).
Cases:
  delora_llama          r=4 on HF's default targets (q_proj, v_proj)
  delora_llama_patterns r=3 on o_proj, up_proj and down_proj, rank_pattern up_proj: 2,
                        lambda_pattern down_proj: 5, init_weights false (B kaiming)
GPT-2's Conv1D layers are refused by HF's DeLoRA (and by ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import DeloraConfig  # noqa: E402

CASES = [
    ("delora_llama", "llama", dict(r=4)),
    ("delora_llama_patterns", "llama",
     dict(r=3, target_modules=["o_proj", "up_proj", "down_proj"], rank_pattern={"up_proj": 2},
          lambda_pattern={"down_proj": 5.0}, init_weights=False)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "delora_A" in n or "delora_B" in n:
                p.add_(0.3 * torch.randn_like(p))
            elif "delora_lambda" in n:
                p.add_(torch.rand_like(p))


def deltas(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "delora_A", None), torch.nn.ParameterDict) and "default" in m.delora_A:
            with torch.no_grad():
                out["delta." + name.removeprefix("base_model.model.")] = m.get_delta_weight("default").contiguous()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, DeloraConfig(**kw), perturb, deltas)


if __name__ == "__main__":
    main()
