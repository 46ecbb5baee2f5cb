#!/usr/bin/env python
"""FRoD references made by HF PEFT for tests/test_frod.cpp.

Usage: python tests/parity/make_frod.py make OUT_DIR
       python tests/parity/make_frod.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (frod_lambda_l and frod_lambda_s_values
moved off HF's init, which starts at the base), <case>/reference.safetensors (inputs,
logits, merged_logits, "delta.<module path>": HF's get_delta_weight as [out, in]),
case.json ({"base", "trainable"}) and init.safetensors: a fresh HF adapter of the case's
config (init_weights true) as HF starts it: "V.<role>", "indices.<role>" and per layer
"U.<path>", "lambda_l.<path>". check: HF loads each of our adapters strictly with our logits.
Cases:
  frod_llama       HF's default targets (q_proj, v_proj): the QR + eigh basis, sparse_rate 0.01
  frod_llama_opts  v_proj, o_proj, down_proj of layer 1 of a Llama with biases (the SVD basis
                   for v_proj and down_proj), sparse_rate 0.05, projection_prng_key 5,
                   regularization_alpha 0.01, init_weights false, bias frod_only
  frod_gpt2        GPT-2's Conv1D c_attn and c_fc, sparse_rate 0.03, save_projection false
                   (V and S's positions are regenerated from the base when loading)
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import FrodConfig, get_peft_model  # noqa: E402

CASES = [
    ("frod_llama", "llama", dict()),
    ("frod_llama_opts", "llama_bias",
     dict(target_modules=["v_proj", "o_proj", "down_proj"], layers_to_transform=[1], sparse_rate=0.05,
          projection_prng_key=5, regularization_alpha=0.01, init_weights=False, bias="frod_only")),
    ("frod_gpt2", "gpt2", dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, sparse_rate=0.03,
                               save_projection=False)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "frod_lambda_l" in n:
                p.mul_(1 + 0.3 * torch.randn_like(p))
            elif "frod_lambda_s_values" in n:
                p.add_(0.3 * torch.randn_like(p))
            elif n.endswith(".bias") and p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


def frod_layers(model):
    for name, m in model.named_modules():
        if isinstance(getattr(m, "frod_lambda_l", None), torch.nn.ParameterDict) and "default" in m.frod_lambda_l:
            yield name.removeprefix("base_model.model."), m


def deltas(model):
    out = {}
    for name, m in frod_layers(model):
        with torch.no_grad():
            d = m.get_delta_weight("default").float()
            d = d.T if m.fan_in_fan_out else d
        out["delta." + name] = d.contiguous()
    return out


def write_init(out, name, base, kw):
    """HF's starting point for the case's config: V and S's positions per role, U and lambda_l per layer."""
    model = get_peft_model(load_base(os.path.join(out, base)), FrodConfig(**dict(kw, init_weights=True,
                                                                                  progressbar=False)))
    t = {}
    for role, d in model.base_model.frod_V.items():
        t["V." + role] = d["default"].contiguous()
        t["indices." + role] = model.base_model.frod_s_indices[role]["default"].contiguous()
    for path, m in frod_layers(model):
        t["U." + path] = m.frod_U["default"].contiguous()
        t["lambda_l." + path] = m.frod_lambda_l["default"].detach().contiguous()
    save_file(t, os.path.join(out, name, "init.safetensors"))


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, FrodConfig(progressbar=False, **kw), perturb, deltas)
        write_init(out, name, base, kw)


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)  # MKL's QR / eigh / SVD round by thread count; ctest runs one
