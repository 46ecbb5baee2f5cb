#!/usr/bin/env python
"""GraLoRA references made by HF PEFT for tests/test_gralora.cpp.

Usage: python tests/parity/make_gralora.py make OUT_DIR
       python tests/parity/make_gralora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (every GraLoRA tensor moved off HF's
init, which starts at the base), <case>/reference.safetensors (inputs, logits,
merged_logits, "delta.<module path>": HF's get_delta_weight as [out, in]) and case.json
({"base", "trainable"}). check: HF loads each of our adapters strictly with our logits.
Cases:
  gralora_llama        r=4, k=2 on HF's default targets (q_proj, v_proj; v_proj is 32 -> 16)
  gralora_llama_k4     r=8, k=4, alpha 16, init_weights false on o_proj, up_proj, down_proj
  gralora_gpt2_hybrid  GPT-2 Conv1D c_attn and c_fc, r=4, k=2, hybrid_r=2
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402

from peft import GraloraConfig  # noqa: E402

CASES = [
    ("gralora_llama", "llama", dict(r=4, alpha=8)),
    ("gralora_llama_k4", "llama",
     dict(r=8, gralora_k=4, alpha=16, target_modules=["o_proj", "up_proj", "down_proj"], init_weights=False)),
    ("gralora_gpt2_hybrid", "gpt2", dict(r=4, hybrid_r=2, alpha=12, target_modules=["c_attn", "c_fc"])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "gralora_" in n:
                p.add_(0.3 * torch.randn_like(p))


def deltas(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "gralora_A", None), torch.nn.ParameterDict) and "default" in m.gralora_A:
            with torch.no_grad():
                d = m.get_delta_weight("default")
                d = d.T if m.fan_in_fan_out else d
            out["delta." + name.removeprefix("base_model.model.")] = d.contiguous()
    return out


def make(out):
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, GraloraConfig(**kw), perturb, deltas)


if __name__ == "__main__":
    fixture_main(__doc__, make)
