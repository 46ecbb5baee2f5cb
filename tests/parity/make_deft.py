#!/usr/bin/env python
"""DEFT references made by HF PEFT for tests/test_deft.cpp.

Usage: python tests/parity/make_deft.py make OUT_DIR
       python tests/parity/make_deft.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (deft_P and deft_R moved off HF's init,
which starts at the base), <case>/reference.safetensors (inputs, logits, merged_logits,
"delta.<module path>": HF's get_delta_weight as [out, in]) and case.json ({"base",
"trainable"}). check: HF loads each of our adapters strictly with our logits.
Cases:
  deft_llama        r=4 on HF's default targets (q_proj, v_proj), decomposition relu, no alpha
  deft_llama_qr     r=3, qr, alpha 6, init_weights false, init_scale 2, bias deft_only on
                    o_proj, up_proj and down_proj of a Llama with biases
  deft_gpt2_para    PaRa (no R) on GPT-2's Conv1D c_attn and c_fc, r=2, qr
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402

from peft import DeftConfig  # noqa: E402

CASES = [
    ("deft_llama", "llama", dict(r=4)),
    ("deft_llama_qr", "llama_bias",
     dict(r=3, decomposition_method="qr", alpha=6, init_weights=False, init_scale=2.0, bias="deft_only",
          target_modules=["o_proj", "up_proj", "down_proj"])),
    ("deft_gpt2_para", "gpt2", dict(r=2, para=True, decomposition_method="qr", target_modules=["c_attn", "c_fc"])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "deft_" in n:
                p.add_(0.3 * torch.randn_like(p))
            elif n.endswith(".bias") and p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


def deltas(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "deft_P", None), torch.nn.ParameterDict) and "default" in m.deft_P:
            with torch.no_grad():
                d = m.get_delta_weight("default").float()
                d = d.T if m.fan_in_fan_out else d
            out["delta." + name.removeprefix("base_model.model.")] = d.contiguous()
    return out


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, DeftConfig(**kw), perturb, deltas)


if __name__ == "__main__":
    fixture_main(__doc__, make)
