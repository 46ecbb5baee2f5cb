#!/usr/bin/env python
"""PSOFT references made by HF PEFT for tests/test_psoft.cpp.

Usage: python tests/parity/make_psoft.py make OUT_DIR
       python tests/parity/make_psoft.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and llama_bias/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (psoft_R's weight and scale vectors moved
off HF's init, which starts at the base), <case>/reference.safetensors (inputs, logits,
merged_logits, "delta.<module path>": HF's get_delta_weight as [out, in], and HF's frozen
SVD factors "A.<module path>" [r, in] and "B.<module path>" [out, r], which are never filed)
and case.json ({"base", "trainable"}). It also checks that HF refuses GPT-2's Conv1D.
check: HF loads each of our adapters strictly with our logits.
Cases:
  psoft_llama       HF's default targets (q_proj, v_proj), r 8, psoft_alpha 16: psoft_init
                    A/B from torch.linalg.svd, the exact Cayley transform
  psoft_llama_opts  all seven projections of a Llama with biases, r 6, pissa_init, the
                    Cayley-Neumann series (4 terms, cayley_neumann_eps 0.9), no input-side
                    vector, init_weights false
  psoft_llama_free  layer 1's v_proj, o_proj, up_proj, r 10, psoft_alpha 5, a free R
                    (psoft_orth false), A/B from torch.svd_lowrank (niter 3, random_seed 4)
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import PsoftConfig, get_peft_model  # noqa: E402

CASES = [
    ("psoft_llama", "llama", dict(r=8, psoft_alpha=16)),
    ("psoft_llama_opts", "llama_bias",
     dict(r=6, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
          ab_svd_init="pissa_init", use_cayley_neumann=True, num_cayley_neumann_terms=4, cayley_neumann_eps=0.9,
          psoft_mag_a=False, init_weights=False)),
    ("psoft_llama_free", "llama",
     dict(r=10, psoft_alpha=5, target_modules=["v_proj", "o_proj", "up_proj"], layers_to_transform=[1],
          psoft_orth=False, psoft_svd="lowrank", psoft_svd_lowrank_niter=3, random_seed=4)),
]


def psoft_layers(model):
    for name, m in model.named_modules():
        if isinstance(getattr(m, "psoft_R", None), torch.nn.ModuleDict) and "default" in m.psoft_R:
            yield name.removeprefix("base_model.model."), m


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "psoft_R" in n and n.endswith(".weight"):
                p.add_(0.3 * torch.randn_like(p))
            elif "psoft_R" in n:  # vector_a, vector_b
                p.mul_(1 + 0.3 * torch.randn_like(p))


def deltas_and_factors(model):
    out = {}
    for path, m in psoft_layers(model):
        with torch.no_grad():
            out["delta." + path] = m.get_delta_weight("default").float().contiguous()
        a, b = m._get_psoft_ab_cache_buffers("default")
        out["A." + path] = a.contiguous()
        out["B." + path] = b.contiguous()
    return out


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, PsoftConfig(**kw), perturb, deltas_and_factors)
    try:
        get_peft_model(load_base(os.path.join(out, "gpt2")), PsoftConfig(r=4, target_modules=["c_attn"]))
    except ValueError as e:
        print(f"gpt2: HF refuses Conv1D ({str(e)[:60]}...)")
    else:
        raise AssertionError("HF's PSOFT now adapts GPT-2's Conv1D: update test_psoft's refusal")


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)  # MKL's SVD rounds by thread count; ctest runs one
