#!/usr/bin/env python
"""Super-Tuning (SUPERTUNING) references made by HF PEFT for tests/test_supertuning.cpp.

Usage: python tests/parity/make_supertuning.py make OUT_DIR
       python tests/parity/make_supertuning.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (supertuning_values and the LoRA factors
moved off HF's init), <case>/reference.safetensors (inputs, logits, merged_logits,
"delta.<module path>": HF's get_delta_weight, "indices.<module path>": the support HF chose
by |W|) and case.json ({"base", "trainable"}); gpt2_refusal.txt holds HF's error for a
Conv1D target. check: HF loads each of our adapters strictly with our logits.
Cases:
  st_llama        sparsity 0.9 on HF's default targets (q_proj, v_proj), values only
  st_llama_supra  Supra: r=3, lora_alpha 5, select_top false, sparsity 0.95, init_weights
                  false, lora_dropout 0.1 on o_proj, up_proj, down_proj of a Llama with biases
  st_llama_noidx  save_precomputed_indices false (the support is chosen again at load),
                  r=2 (lora_alpha 2 r), k_proj and gate_proj
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import SupertuningConfig, get_peft_model  # noqa: E402

CASES = [
    ("st_llama", "llama", dict(sparsity=0.9)),
    ("st_llama_supra", "llama_bias",
     dict(sparsity=0.95, select_top=False, r=3, lora_alpha=5, init_weights=False, lora_dropout=0.1,
          target_modules=["o_proj", "up_proj", "down_proj"])),
    ("st_llama_noidx", "llama",
     dict(sparsity=0.9, r=2, save_precomputed_indices=False, target_modules=["k_proj", "gate_proj"])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "supertuning_" in n:
                p.add_(0.1 * torch.randn_like(p))


def layers(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(getattr(m, "supertuning_values", None), torch.nn.ParameterDict) and "default" in m.supertuning_values:
            path = name.removeprefix("base_model.model.")
            with torch.no_grad():
                out["delta." + path] = m.get_delta_weight("default").float().contiguous()
            out["indices." + path] = m.supertuning_indices["default"].clone().contiguous()
    return out


def gpt2_refusal(out):
    try:
        get_peft_model(load_base(os.path.join(out, "gpt2")), SupertuningConfig(target_modules=["c_attn"]))
    except TypeError as e:
        with open(os.path.join(out, "gpt2_refusal.txt"), "w") as f:
            f.write(str(e).splitlines()[-1])
        return
    raise SystemExit("HF PEFT adapted GPT-2's Conv1D with SUPERTUNING: the refusal test is stale")


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, SupertuningConfig(**kw), perturb, layers)
    gpt2_refusal(out)


if __name__ == "__main__":
    fixture_main(__doc__, make)
