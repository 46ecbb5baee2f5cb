#!/usr/bin/env python
"""ADAMSS references made by HF PEFT for tests/test_adamss.cpp.

Usage: python tests/parity/make_adamss.py make OUT_DIR
       python tests/parity/make_adamss.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and llama_bias/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (the per-subspace A and B moved off HF's
init, which starts at the base; HF also files the frozen projection adamss_newB),
<case>/reference.safetensors (inputs, logits, merged_logits, "delta.<module path>": HF's
get_delta_weight [out, in], "delta_bias.<module path>" where the layer has a bias,
"scatter.<module path>": HF's scatter_index (the KMeans clustering of the left singular
vectors, never filed, recomputed when a file loads) and "newB.<module path>" [r, in(+1)])
and case.json ({"base", "trainable"}). It also checks that HF refuses GPT-2's Conv1D.
check: HF loads each of our adapters strictly with our logits.
Cases:
  adamss_llama       HF's default targets (q_proj, v_proj), r 8, 4 subspaces of rank 1 (HF's
                     r 100 would clamp to the tiny layers' output size, where U is square and
                     orthogonal: every row is at distance sqrt(2) of every other, and the
                     KMeans labels come from float32 GEMM rounding alone)
  adamss_llama_bias  all seven projections of a Llama with biases (a bias column joins the
                     SVD), r 12, 3 subspaces of rank 2, init_weights None (random B),
                     layer 1 only, random_seed 7
  adamss_llama_dyn   q_proj, o_proj, down_proj, r 20, 4 subspaces, subspace_rank 3,
                     use_dynamic_rank (svd_threshold 0.3)
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import AdamssConfig, get_peft_model  # noqa: E402

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = [
    ("adamss_llama", "llama", dict(r=8, num_subspaces=4)),
    ("adamss_llama_bias", "llama_bias",
     dict(r=12, num_subspaces=3, subspace_rank=2, target_modules=ALL7, init_weights=None,
          layers_to_transform=[1], random_seed=7)),
    ("adamss_llama_dyn", "llama",
     dict(r=20, num_subspaces=4, subspace_rank=3, target_modules=["q_proj", "o_proj", "down_proj"],
          use_dynamic_rank=True, svd_threshold=0.3)),
]


def adamss_layers(model):
    for name, m in model.named_modules():
        if isinstance(getattr(m, "adamss_A", None), torch.nn.ModuleDict) and "default" in m.adamss_A:
            yield name.removeprefix("base_model.model."), m


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "adamss_A" in n or "adamss_B" in n:
                p.add_(0.2 * torch.randn_like(p))


def extras(model):
    out = {}
    for path, m in adamss_layers(model):
        with torch.no_grad():
            out["delta." + path] = m.get_delta_weight("default").float().contiguous()
            if m.get_base_layer().bias is not None:
                out["delta_bias." + path] = m.get_delta_bias("default").float().contiguous()
        out["scatter." + path] = m.scatter_index["default"].clone().contiguous()
        out["newB." + path] = m.adamss_newB["default"].float().clone().contiguous()
    return out


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, AdamssConfig(**kw), perturb, extras)
    try:
        get_peft_model(load_base(os.path.join(out, "gpt2")), AdamssConfig(r=4, target_modules=["c_attn"]))
    except (TypeError, ValueError) as e:
        print(f"gpt2: HF refuses Conv1D ({str(e)[:60]}...)")
    else:
        raise AssertionError("HF's ADAMSS now adapts GPT-2's Conv1D: update test_adamss's refusal")


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)  # MKL's SVD rounds by thread count; ctest runs one
