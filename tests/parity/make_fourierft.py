#!/usr/bin/env python
"""FourierFT references made by HF PEFT for tests/test_fourierft.cpp.

Usage:
  python tests/parity/make_fourierft.py make OUT_DIR
  (checking an adapter trained here: tests/parity/make_vera.py check BASE ADAPTER OUTPUTS)

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with inputs.safetensors)
and per case <case>/adapter/ (PeftModel.save_pretrained, spectrum N(0, 1) from HF's default
init_weights=False, bias perturbed where it trains), <case>/reference.safetensors (inputs,
logits, merged_logits, and "indices" [2, n] of every adapted layer under
"indices.<module path>", HF's layer.indices) and <case>/case.json ({"base", "trainable"}).
Cases: fourierft_llama (n_frequency 40, scaling 30, an n_frequency_pattern entry for down_proj,
seed 123), fourierft_gpt2 (Conv1D c_attn / mlp.c_proj, fan_in_fan_out, bias="fourier_only",
seed -5).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import FourierFTConfig  # noqa: E402

CASES = [
    ("fourierft_llama", "llama",
     dict(n_frequency=40, scaling=30.0, random_loc_seed=123, target_modules=["q_proj", "v_proj", "down_proj"],
          n_frequency_pattern={"down_proj": 64})),
    ("fourierft_gpt2", "gpt2",
     dict(n_frequency=48, scaling=20.0, random_loc_seed=-5, target_modules=["c_attn", "mlp.c_proj"],
          fan_in_fan_out=True, bias="fourier_only")),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif "fourierft_spectrum" in n:
                p.mul_(0.5)  # HF's N(0, 1) start times the scaling is a large change on a tiny model


def indices(model):
    out = {}
    for name, m in model.named_modules():
        if hasattr(m, "fourierft_spectrum") and "default" in getattr(m, "indices", {}):
            out["indices." + name.removeprefix("base_model.model.")] = m.indices["default"].clone().contiguous()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, FourierFTConfig(**kw), perturb, indices)


if __name__ == "__main__":
    main()
