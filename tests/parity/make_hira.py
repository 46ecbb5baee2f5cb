#!/usr/bin/env python
"""HiRA references made by HF PEFT for tests/test_hira.cpp.

Usage: python tests/parity/make_hira.py make OUT_DIR
       python tests/parity/make_hira.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (hira_A / hira_B moved off HF's init,
which starts at the base), <case>/reference.safetensors (inputs, logits, merged_logits,
"delta.<module path>": HF's get_delta_weight, the modulation B A, as [out, in]) and
case.json ({"base", "trainable"}). check: HF loads each of our adapters strictly with our
logits.
Cases:
  hira_llama        r=4 on HF's default targets (q_proj, v_proj)
  hira_llama_embed  r=3 on embed_tokens, o_proj and down_proj, init_weights "gaussian", and
                    rank_pattern down_proj: 2, which HF 0.21 files but does not apply (its
                    dispatch_default builds every layer from config.r)
  hira_gpt2         GPT-2 Conv1D c_attn and c_proj (attention and MLP), r=2, init_weights false
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402

from peft import HiraConfig  # noqa: E402

CASES = [
    ("hira_llama", "llama", dict(r=4)),
    ("hira_llama_embed", "llama",
     dict(r=3, target_modules=["embed_tokens", "o_proj", "down_proj"], rank_pattern={"down_proj": 2},
          init_weights="gaussian")),
    ("hira_gpt2", "gpt2", dict(r=2, target_modules=["c_attn", "c_proj"], init_weights=False)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "hira_" in n:
                p.add_(0.3 * torch.randn_like(p))


def deltas(model):
    out = {}
    for name, m in model.named_modules():
        for a in ("hira_A", "hira_embedding_A"):
            if isinstance(getattr(m, a, None), torch.nn.ParameterDict) and "default" in getattr(m, a):
                with torch.no_grad():
                    d = m.get_delta_weight("default")
                    d = d.T if getattr(m, "fan_in_fan_out", False) or a == "hira_embedding_A" else d
                out["delta." + name.removeprefix("base_model.model.")] = d.contiguous()
    return out


def make(out):
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, HiraConfig(**kw), perturb, deltas)


if __name__ == "__main__":
    fixture_main(__doc__, make)
