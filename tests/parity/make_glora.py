#!/usr/bin/env python
"""GLoRA references made by HF PEFT for tests/test_glora.cpp.

Usage: python tests/parity/make_glora.py make OUT_DIR
       python tests/parity/make_glora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ (the same Llama with attention and
MLP biases) and gpt2/ (tiny random bases with inputs.safetensors) and per case
<case>/adapter/ (every GLoRA parameter moved off HF's init, which starts at the base; the
"none" paths' zero buffers stay zero), <case>/reference.safetensors (inputs, logits,
merged_logits) and case.json ({"base", "trainable"}). HF's GLoRA has no get_delta_weight,
so there are no per-layer deltas; it refuses GPT-2's Conv1D, which make asserts.
check: HF loads each of our adapters strictly with our logits.
Cases:
  glora_llama           r=4, the defaults (A/B lora, C lora, D/E constant) on HF's default
                        targets (q_proj, v_proj) of the Llama without biases: C, D, E are
                        zero buffers there
  glora_bias_vector     Llama with biases: A/B vector, C lora, D/E vector, r=2, bias
                        glora_only, init_weights false on k_proj, o_proj, down_proj
  glora_bias_constant   A/B constant, C vector, D/E constant on q_proj and up_proj
  glora_bias_none       A/B none, C none (zero buffers, filed), D/E constant on v_proj and
                        gate_proj
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import GloraConfig, get_peft_model  # noqa: E402

CASES = [
    ("glora_llama", "llama", dict(r=4)),
    ("glora_bias_vector", "llama_bias",
     dict(r=2, config_A_B="vector", config_C="lora", config_D_E="vector", bias="glora_only", init_weights=False,
          target_modules=["k_proj", "o_proj", "down_proj"])),
    ("glora_bias_constant", "llama_bias",
     dict(config_A_B="constant", config_C="vector", config_D_E="constant", target_modules=["q_proj", "up_proj"])),
    ("glora_bias_none", "llama_bias",
     dict(config_A_B="none", config_C="none", config_D_E="constant", target_modules=["v_proj", "gate_proj"])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "glora_" in n:
                p.add_(0.3 * torch.randn_like(p))


def assert_conv1d_refused(out):
    try:
        get_peft_model(load_base(os.path.join(out, "gpt2")), GloraConfig(target_modules=["c_attn"]))
    except ValueError as e:
        assert "not a plain torch.nn.Linear" in str(e), e
        print(f"gpt2 c_attn refused by HF: {e}")
        return
    raise AssertionError("HF's GLoRA accepted GPT-2's Conv1D")


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    assert_conv1d_refused(out)
    for name, base, kw in CASES:
        make_case(out, name, base, GloraConfig(**kw), perturb)


if __name__ == "__main__":
    fixture_main(__doc__, make)
