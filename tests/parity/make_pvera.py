#!/usr/bin/env python
"""PVeRA references made by HF PEFT for tests/test_pvera.cpp.

Usage: python tests/parity/make_pvera.py make OUT_DIR
       python tests/parity/make_pvera.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (pvera_lambda_b / pvera_lambda_d, and with
bias="pvera_only" the adapted layers' biases, moved off HF's init), <case>/reference.safetensors
(inputs, logits, merged_logits, HF's in-memory pvera_A / pvera_B, and for cases with a
generator_seed and sample_at_inference off, train_logits: the first forward in training mode,
which samples) and case.json ({"base", "trainable", "config", "r", "max_out", "max_in",
"projection_prng_key"}). check: HF loads each of our adapters strictly with our logits.
Cases:
  pvera_llama_saved    r=8 on five projections of three shapes, save_projection, generator_seed 21
  pvera_llama_unsaved  r=6, save_projection=False, a negative prng key, layers_to_transform=[1]
  pvera_gpt2           Conv1D c_attn, c_proj, c_fc, r=4, bias="pvera_only"
  pvera_llama_sampled  sample_at_inference with generator_seed 5: the logits are HF's first
                       sampled forward after loading (each layer has its own seeded CPU generator)
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, logits_of, make_base, make_case  # noqa: E402

from peft import PveraConfig  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

CASES = [
    ("pvera_llama_saved", "llama",
     dict(r=8, target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], projection_prng_key=1234,
          save_projection=True, generator_seed=21)),
    ("pvera_llama_unsaved", "llama",
     dict(r=6, target_modules=["o_proj", "gate_proj", "down_proj"], projection_prng_key=-7, save_projection=False,
          layers_to_transform=[1])),
    ("pvera_gpt2", "gpt2",
     dict(r=4, target_modules=["c_attn", "c_proj", "c_fc"], projection_prng_key=99, fan_in_fan_out=True,
          bias="pvera_only")),
    ("pvera_llama_sampled", "llama",
     dict(r=8, target_modules=["q_proj", "v_proj", "down_proj"], projection_prng_key=3, sample_at_inference=True,
          generator_seed=5)),
]


def perturb(model):
    """Random lambdas (mean half near 1, log-variance half near 0) and, with bias="pvera_only",
    biases, instead of HF's zero-delta init."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "pvera_lambda_b" in n:
                p.copy_(0.5 * torch.randn_like(p))
            elif "pvera_lambda_d" in n:
                r = p.shape[0] // 2
                p[:r].copy_(1.0 + 0.5 * torch.randn(r))
                p[r:].copy_(0.5 * torch.randn(r))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def extras(inputs, kw):
    def extra(model):
        out = dict(pvera_A=model.base_model.pvera_A["default"].clone().contiguous(),
                   pvera_B=model.base_model.pvera_B["default"].clone().contiguous())
        if kw.get("generator_seed") is not None and not kw.get("sample_at_inference"):
            # The generators are fresh here (no forward yet), as after loading.
            out["train_logits"] = logits_of(model.train(), inputs)
            model.eval()
        return out
    return extra


def make(out):
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        inputs = load_file(os.path.join(out, base, "inputs.safetensors"))
        info, t = make_case(out, name, base, PveraConfig(**kw), perturb, extras(inputs, kw))
        if "train_logits" in t:
            mean = load_file(os.path.join(out, name, "reference.safetensors"))["logits"]
            assert (t["train_logits"] - mean).abs().max() > 1e-2, f"{name}: training does not sample"
        info.update(config=kw, r=kw["r"], max_out=t["pvera_B"].shape[0], max_in=t["pvera_A"].shape[1],
                    projection_prng_key=kw["projection_prng_key"])
        with open(os.path.join(out, name, "case.json"), "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    fixture_main(__doc__, make)
