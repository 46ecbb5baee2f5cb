#!/usr/bin/env python
"""TINYLORA references made by HF PEFT for tests/test_tinylora.cpp.

Usage: python tests/parity/make_tinylora.py make OUT_DIR
       python tests/parity/make_tinylora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (the trainable vectors v moved off HF's
zero init, which starts at the base), <case>/reference.safetensors (inputs, logits,
merged_logits, "delta.<module path>": HF's get_delta_weight in the base weight's layout,
"P.<module path>": the projection [u, r, r] drawn from projection_seed + the layer's
index, and "v.<group>": the shared vectors after the perturbation) and case.json
({"base", "trainable"}).
check: HF loads each of our adapters strictly with our logits.
Cases:
  tinylora_llama       HF's default targets (q_proj, v_proj), r 2, u 64, one v per layer
  tinylora_llama_opts  all seven projections of a Llama with biases, r 3, u 5,
                       weight_tying 0.5 (14 layers in 7 groups of 2), projection_seed 7,
                       save_projection false (P not filed), init_weights "uniform"
  tinylora_llama_emb   embed_tokens and layer 1's down_proj, r 4, u 3, weight_tying 1.0
                       (one v for both), bias "tinylora_only"
  tinylora_gpt2        GPT-2's Conv1D c_attn and c_fc, r 2, u 4 (the SVD of the
                       transposed weight)
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402

from peft import TinyLoraConfig  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = [
    ("tinylora_llama", "llama", dict(r=2, u=64)),
    ("tinylora_llama_opts", "llama_bias",
     dict(r=3, u=5, target_modules=ALL, weight_tying=0.5, projection_seed=7, save_projection=False,
          init_weights="uniform")),
    ("tinylora_llama_emb", "llama_bias",
     dict(r=4, u=3, target_modules=["embed_tokens", "model.layers.1.mlp.down_proj"], weight_tying=1.0,
          bias="tinylora_only")),
    ("tinylora_gpt2", "gpt2", dict(r=2, u=4, target_modules=["c_attn", "c_fc"])),
]


def tinylora_layers(model):
    for name, m in model.named_modules():
        if hasattr(m, "tinylora_A") and "default" in m.tinylora_A:
            yield name.removeprefix("base_model.model."), m


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "tinylora_v" in n:
                p.add_(0.5 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def deltas(model):
    out = {}
    for path, m in tinylora_layers(model):
        with torch.no_grad():
            out["delta." + path] = m.get_delta_weight("default").float().contiguous()
        out["P." + path] = m.tinylora_P["default"].clone().contiguous()
    for k, v in model.base_model.tinylora_v["default"].items():
        out["v." + k] = v.detach().clone().contiguous()
    return out


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, TinyLoraConfig(**kw), perturb, deltas)


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)  # MKL's SVD rounds by thread count; ctest runs one
