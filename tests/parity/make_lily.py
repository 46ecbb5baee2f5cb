#!/usr/bin/env python
"""LILY references made by HF PEFT for tests/test_lily.cpp.

Usage: python tests/parity/make_lily.py make OUT_DIR
       python tests/parity/make_lily.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with inputs.safetensors) and
per case <case>/adapter/ (every LILY tensor moved off HF's init, which starts at the base;
shared A and B filed under each layer's key, as HF's state dict does),
<case>/reference.safetensors (inputs, logits; LILY does not merge) and case.json
({"base", "trainable", "shares": [[path, path sharing its A, path sharing its B], ...]}).
check: HF loads each of our adapters strictly with our logits (so a trained adapter's
shared tensors must still be equal under every key).
Cases:
  lily_llama        r=4, num_B=3, stride_A=2 on HF's default targets (q_proj, v_proj): both
                    layers of a target share A and B
  lily_llama_regex  a regex over q_proj, o_proj and up_proj (q and o, both 32 x 32, form one
                    group of four layers), r=2, scaling 0.5, init_weights false
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402

from peft import LilyConfig  # noqa: E402

CASES = [
    ("lily_llama", dict(r=4, num_B=3, stride_A=2)),
    ("lily_llama_regex",
     dict(r=2, scaling=0.5, init_weights=False, target_modules=r".*\.(q_proj|o_proj|up_proj)")),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():  # shared tensors once
            if "lily_" in n:
                p.add_(0.3 * torch.randn_like(p))


def shares(model):
    """For each LILY layer: the first layer (model order) whose A, and whose B, it uses."""
    layers = [(n.removeprefix("base_model.model."), m) for n, m in model.named_modules() if hasattr(m, "lily_router")]
    out = []
    for name, m in layers:
        a = next(n for n, o in layers if o.lily_A["default"] is m.lily_A["default"])
        b = next(n for n, o in layers if o.lily_B["default"] is m.lily_B["default"])
        out.append([name, a, b])
    return out


def make(out):
    for kind in ("llama", "gpt2"):  # GPT-2's Conv1D layers: refused by HF's LILY and ours
        make_base(kind, os.path.join(out, kind))
    for name, kw in CASES:
        share_list = []

        def record(model):
            share_list.extend(shares(model))
            return {}

        info, _ = make_case(out, name, "llama", LilyConfig(**kw), perturb, record, merge=False)
        info["shares"] = share_list
        with open(os.path.join(out, name, "case.json"), "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    fixture_main(__doc__, make)
