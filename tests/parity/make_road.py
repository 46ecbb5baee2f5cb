#!/usr/bin/env python
"""RoAd references made by HF PEFT for tests/test_road.cpp.

Usage: python tests/parity/make_road.py make OUT_DIR

make writes, as make_vera.py does: llama/, llama_bias/ (attention and MLP biases) and gpt2/
(tiny random bases with inputs.safetensors) and per case <case>/adapter/ (road_theta and
road_alpha moved off HF's identity init), <case>/reference.safetensors (inputs, logits,
merged_logits, "rotation.<module path>": HF's _get_delta_weight R) and case.json
({"base", "trainable"}).
Cases:
  road_llama    road_1, group_size 16, HF's default targets (q_proj, v_proj)
  road2_llama   road_2, group_size 8, o_proj and up_proj, on llama_bias (merging rotates
                the biases too)
  road4_llama   road_4, group_size 16, down_proj and v_proj, init_weights false
GPT-2's Conv1D layers are refused by HF's RoAd (and by ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import RoadConfig  # noqa: E402
from peft.tuners.road.layer import _get_delta_weight  # noqa: E402

CASES = [
    ("road_llama", "llama", dict(group_size=16)),
    ("road2_llama", "llama_bias", dict(variant="road_2", group_size=8, target_modules=["o_proj", "up_proj"])),
    ("road4_llama", "llama",
     dict(variant="road_4", group_size=16, target_modules=["down_proj", "v_proj"], init_weights=False)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "road_theta" in n or "road_alpha" in n:
                p.add_(0.3 * torch.randn_like(p))


def rotations(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "road_theta", None), torch.nn.ParameterDict) and "default" in m.road_theta:
            with torch.no_grad():
                R = _get_delta_weight(m.variant["default"], m.group_size["default"], m.road_theta["default"],
                                      m.road_alpha["default"])
            out["rotation." + name.removeprefix("base_model.model.")] = R.contiguous()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, RoadConfig(**kw), perturb, rotations)


if __name__ == "__main__":
    main()
