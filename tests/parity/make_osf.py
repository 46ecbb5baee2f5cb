#!/usr/bin/env python
"""OSF references made by HF PEFT for tests/test_osf.cpp.

Usage: python tests/parity/make_osf.py make OUT_DIR
       python tests/parity/make_osf.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (U_low, S_low and V_low moved off HF's
init, which starts at the base), <case>/reference.safetensors (inputs, logits,
merged_logits, "delta.<module path>": HF's get_delta_weight as [out, in]; for osf_llama
"init.<module path>.<U_low|S_low|V_low>": HF's fresh SVD init; for osf_llama_opts
grad_weights R and "grad.<module path>.<factor>": HF's projected gradients of
sum(logits * R)) and case.json
({"base", "trainable"}). It also checks that HF adapts nothing of GPT-2 (its Conv1D layers
are skipped silently), which we refuse by name. check: HF loads each of our adapters
strictly with our logits.
Cases:
  osf_llama       defaults: HF's OSF targets (all seven projections), effective_rank = half
                  the smaller dimension
  osf_llama_opts  all-linear on a Llama with biases, effective_rank 0.25 (a fraction),
                  rank_pattern {down_proj: 20, k/v_proj: 0.75}, init_weights false
"""

import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import OSFConfig, get_peft_model  # noqa: E402

CASES = [
    ("osf_llama", "llama", dict()),
    ("osf_llama_opts", "llama_bias",
     dict(target_modules="all-linear", effective_rank=0.25,
          rank_pattern={r"mlp\.down_proj": 20, r"self_attn\.(k|v)_proj": 0.75}, init_weights=False)),
]
FACTORS = ("U_low", "S_low", "V_low")


def osf_layers(model):
    for name, m in model.named_modules():
        params = getattr(m, "osf_svd_params", None)
        if isinstance(params, torch.nn.ModuleDict) and "default" in params:
            yield name.removeprefix("base_model.model."), m


def perturb_keeping_init(inits):
    def perturb(model):
        with torch.no_grad():
            for path, m in osf_layers(model):
                for f in FACTORS:
                    p = m.osf_svd_params["default"][f]
                    inits[f"init.{path}.{f}"] = p.detach().clone().contiguous()
                    p.add_(0.1 * torch.randn_like(p))
    return perturb


def deltas(model):
    out = {}
    for path, m in osf_layers(model):
        with torch.no_grad():
            out["delta." + path] = m.get_delta_weight("default").float().contiguous()
    return out


GRAD_LAYERS = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj",
               "model.layers.1.mlp.down_proj")


def gradients(model, base_dir):
    """grad_weights R and HF's gradients of sum(logits * R) for U_low, S_low and V_low of
    GRAD_LAYERS (square factors, U non-square, V non-square), after HF's projection hooks."""
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model.zero_grad()
    # SDPA, as ours computes attention: HF's eager and SDPA paths give gradients 1e-3 apart
    # (relative) in layer 0 on AVX-512 hosts, more than the check's 1e-5; ours equals SDPA's.
    model.base_model.model.set_attn_implementation("sdpa")
    logits = model(**inputs).logits
    r = torch.randn(logits.shape)
    (logits * r).sum().backward()
    model.base_model.model.set_attn_implementation("eager")
    out = {"grad_weights": r}
    layers = dict(osf_layers(model))
    for path in GRAD_LAYERS:
        for f in FACTORS:
            out[f"grad.{path}.{f}"] = layers[path].osf_svd_params["default"][f].grad.detach().clone().contiguous()
    model.zero_grad()
    return out


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        inits = {}
        if name == "osf_llama":  # HF's SVD init (sign conventions included) for the new-adapter test
            extra = lambda m: dict(deltas(m), **inits)
        else:
            extra = lambda m: dict(deltas(m), **gradients(m, os.path.join(out, base)))
        make_case(out, name, base, OSFConfig(**kw), perturb_keeping_init(inits), extra)
    gpt2 = get_peft_model(load_base(os.path.join(out, "gpt2")), OSFConfig())
    n = sum(p.numel() for p in gpt2.parameters() if p.requires_grad)
    assert n == 0, f"HF's OSF now adapts GPT-2's Conv1D ({n} trainable): update test_osf's refusal"
    print("gpt2: HF's OSF adapts nothing (Conv1D skipped)")


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)  # MKL rounds by thread count; ctest runs one
