#!/usr/bin/env python
"""PEANuT references made by HF PEFT for tests/test_peanut.cpp.

Usage: python tests/parity/make_peanut.py make OUT_DIR
       python tests/parity/make_peanut.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (every PEANuT tensor moved off HF's
init, which starts at the base), <case>/reference.safetensors (inputs, logits,
merged_logits, "delta.<module path>": HF's get_delta_weight as [out, in]) and case.json
({"base", "trainable"}). It also checks that HF refuses GPT-2's Conv1D (the C++ test checks
that we refuse it too). check: HF loads each of our adapters strictly with our logits.
Cases:
  peanut_llama       r=4 on HF's default targets (q_proj, v_proj), depth 0, relu
  peanut_llama_deep  r=3, depth=2 (two encoders, two decoders, residuals), act_fn silu,
                     scaling 2.0, init_weights false, on o_proj, gate_proj and down_proj of layer 1
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import PeanutConfig, get_peft_model  # noqa: E402

CASES = [
    ("peanut_llama", "llama", dict(r=4)),
    ("peanut_llama_deep", "llama",
     dict(r=3, depth=2, act_fn="silu", scaling=2.0, init_weights=False,
          target_modules=["o_proj", "gate_proj", "down_proj"], layers_to_transform=[1])),
]


def perturb(model):
    # The base weights are N(0, 0.02²): moves of 0.5 make dW as large as W.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "peanut_" in n:
                p.add_(0.5 * torch.randn_like(p))


def deltas(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "peanut_A", None), torch.nn.ModuleDict) and "default" in m.peanut_A:
            with torch.no_grad():
                out["delta." + name.removeprefix("base_model.model.")] = m.get_delta_weight("default").contiguous()
    return out


def expect_conv1d_refused(out):
    try:
        get_peft_model(load_base(os.path.join(out, "gpt2")), PeanutConfig(r=2, target_modules=["c_attn"]))
    except NotImplementedError as e:
        assert "Conv1D" in str(e), e
        print(f"gpt2: HF refuses: {e}")
        return
    raise AssertionError("HF PEFT accepted PEANuT on GPT-2's Conv1D: the C++ refusal test is stale")


def make(out):
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, PeanutConfig(**kw), perturb, deltas)
    expect_conv1d_refused(out)


if __name__ == "__main__":
    fixture_main(__doc__, make)
