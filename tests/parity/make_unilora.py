#!/usr/bin/env python
"""UniLoRA references made by HF PEFT for tests/test_unilora.cpp.

Usage: python tests/parity/make_unilora.py make OUT_DIR
       python tests/parity/make_unilora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (theta_d moved off HF's init, with
bias="unilora_only" the adapted layers' biases too), <case>/reference.safetensors (inputs,
logits, merged_logits, and per adapted layer "delta.<path>": HF's get_delta_weight as
[out, in], "indices_A.<path>", "indices_B.<path>", "scales_A.<path>", "scales_B.<path>":
HF's in-memory index and scale buffers) and case.json ({"base", "trainable"}). Also:
  indices.safetensors  UniLoraModel.generate_index(count, length, seed) as
                       "index.<count>_<length>_<seed>" (NumPy's Floyd and tail-shuffle
                       choices, a seed of more than 32 bits)
  init.safetensors     theta_d of a new adapter after torch.manual_seed(5): "uniform"
                       (init_weights true, bound 0.05, length 40), "normal" (init_weights false)
check: HF loads each of our adapters strictly with our logits.
Cases:
  unilora_llama        r=4, theta_d_length 64 on HF's default targets (q_proj, v_proj)
  unilora_llama_saved  save_indices, r=3, theta_d_length 100 (a remainder), proj_seed 7,
                       init_weights false, bias unilora_only on o_proj, gate_proj, down_proj of
                       a Llama with biases
  unilora_gpt2         GPT-2 Conv1D c_attn, c_proj, c_fc, r=2, theta_d_length 128, proj_seed 123
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import UniLoraConfig, get_peft_model  # noqa: E402
from peft.tuners.unilora.model import UniLoraModel  # noqa: E402

CASES = [
    ("unilora_llama", "llama", dict(r=4, theta_d_length=64)),
    ("unilora_llama_saved", "llama_bias",
     dict(r=3, theta_d_length=100, proj_seed=7, save_indices=True, init_weights=False, bias="unilora_only",
          unilora_dropout=0.1, target_modules=["o_proj", "gate_proj", "down_proj"])),
    ("unilora_gpt2", "gpt2", dict(r=2, theta_d_length=128, proj_seed=123, target_modules=["c_attn", "c_proj", "c_fc"])),
]

# (count, theta_d_length, proj_seed): Floyd's choice, no remainder, the tail shuffle
# (length > 10000, remainder > length / 50), a seed past 32 bits.
INDEX_DRAWS = [(1000, 256, 0), (512, 64, 42), (30000, 20000, 11), (777, 50, 2**40 + 5)]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "unilora_theta_d" in n:
                p.copy_(0.5 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def layer_tensors(model):
    out = {}
    for name, m in model.named_modules():
        if not (hasattr(m, "unilora_indices_A") and "default" in m.unilora_indices_A):
            continue
        path = name.removeprefix("base_model.model.")
        with torch.no_grad():
            d = m.get_delta_weight("default")
            out["delta." + path] = (d.T if m.fan_in_fan_out else d).contiguous()
        for buf in ("indices_A", "indices_B", "scales_A", "scales_B"):
            out[f"{buf}.{path}"] = getattr(m, "unilora_" + buf)["default"].clone().contiguous()
    return out


def make_init(out):
    """theta_d as a new adapter draws it: torch's first draw after the seed."""
    tensors = {}
    for key, init in (("uniform", True), ("normal", False)):
        base = load_base(os.path.join(out, "llama"))
        torch.manual_seed(5)
        cfg = UniLoraConfig(r=2, theta_d_length=40, init_theta_d_bound=0.05, init_weights=init)
        theta = get_peft_model(base, cfg).base_model.unilora_theta_d["default"].detach().clone()
        torch.manual_seed(5)
        first = torch.empty(40).uniform_(-0.05, 0.05) if init else torch.randn(40)
        assert torch.equal(theta, first), "theta_d is not torch's first draw after the seed"
        tensors[key] = theta
    save_file(tensors, os.path.join(out, "init.safetensors"))


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, UniLoraConfig(**kw), perturb, layer_tensors)
    save_file({f"index.{c}_{n}_{s}": UniLoraModel.generate_index(c, n, s) for c, n, s in INDEX_DRAWS},
              os.path.join(out, "indices.safetensors"))
    make_init(out)


if __name__ == "__main__":
    fixture_main(__doc__, make)
