#!/usr/bin/env python
"""HRA references made by HF PEFT for tests/test_hra.cpp.

Usage:
  python tests/parity/make_hra.py make OUT_DIR
  (checking an adapter saved here: tests/parity/make_vera.py check BASE ADAPTER OUTPUTS)

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (PeftModel.save_pretrained with hra_u
moved off HF's init, whose reflections cancel in pairs), <case>/reference.safetensors
(inputs, logits, merged_logits, "reflection.<module path>": HF's get_delta_weight H) and
<case>/case.json ({"base", "trainable"}).
Cases:
  hra_llama     HF's defaults (r=8, products of reflections) on q_proj, v_proj and down_proj
  hra_llama_gs  apply_GS (one reflection of r Gram-Schmidt columns), r=5, on o_proj and
                up_proj of layer 1 only (layers_to_transform)
GPT-2's Conv1D layers are not in any case: HF's HRA refuses them (so does ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import HRAConfig  # noqa: E402

CASES = [
    ("hra_llama", "llama", dict(target_modules=["q_proj", "v_proj", "down_proj"])),
    ("hra_llama_gs", "llama",
     dict(r=5, apply_GS=True, target_modules=["o_proj", "up_proj"], layers_to_transform=[1])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "hra_u" in n:
                p.add_(0.3 * torch.randn_like(p))


def reflections(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "hra_u", None), torch.nn.ParameterDict) and "default" in m.hra_u:
            with torch.no_grad():
                out["reflection." + name.removeprefix("base_model.model.")] = m.get_delta_weight("default").contiguous()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):  # gpt2: its Conv1D layers must be refused by name
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, HRAConfig(**kw), perturb, reflections)


if __name__ == "__main__":
    main()
