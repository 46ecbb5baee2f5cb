#!/usr/bin/env python
"""RandLoRA references made by HF PEFT for tests/test_randlora.cpp, and the check of adapters saved there.

Usage:
  python tests/parity/make_randlora.py make OUT_DIR
  python tests/parity/make_randlora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with inputs.safetensors) and
per case <case>/adapter/ (PeftModel.save_pretrained with randlora_lambda set to N(0, 0.3) and
randlora_gamma to HF's init times 1 + N(0, 0.5), and with bias="randlora_only" the adapted layers'
biases moved by N(0, 0.1), instead of HF's zero-delta init), <case>/reference.safetensors (inputs,
logits, merged_logits after merge_and_unload(), and HF's in-memory randlora_A / randlora_B, whether
or not the file holds them) and <case>/case.json ({"base", "trainable", "config", "r",
"projection_prng_key", "max_out", "max_in"}).
Cases:
  randlora_llama_saved       r 8 on q/k/v (32 -> 32, 16), up (32 -> 48), down (48 -> 32): layers of
                             three shapes slice the shared bases; save_projection, alpha 16
  randlora_llama_unsaved     r 6 (32 / 6: a partial last basis), negative key, save_projection false,
                             o_proj, gate_proj, down_proj, layers_to_transform [1]
  randlora_llama_sparse      sparse ternary bases, r 5, save_projection false
  randlora_llama_very_sparse very_sparse ternary bases, r 4, save_projection false
  randlora_gpt2              GPT-2's Conv1D c_attn (32 -> 96), c_fc, mlp.c_proj, fan_in_fan_out,
                             bias="randlora_only", save_projection
Each adapter is reloaded with PeftModel.from_pretrained into a fresh base and must reproduce the
logits to 1e-6 before it is written.

check: make_boft.py's check (strict loading, logits within 1e-4, all triples in one process).
"""

import os
import sys

if sys.argv[1:2] == ["make"] and os.environ.get("PYTHONHASHSEED") != "0":
    # make_vera.pin_hash_seed's re-exec (set-valued fields are saved in hash order), done
    # before the heavy imports so that they run once
    os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:],
              dict(os.environ, PYTHONHASHSEED="0"))

import json  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case  # noqa: E402

from peft import RandLoraConfig  # noqa: E402

LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
CASES = [
    ("randlora_llama_saved", "llama",
     dict(r=8, target_modules=LLAMA_ALL, projection_prng_key=1234, save_projection=True, randlora_alpha=16)),
    ("randlora_llama_unsaved", "llama",
     dict(r=6, target_modules=["o_proj", "gate_proj", "down_proj"], projection_prng_key=-7, save_projection=False,
          randlora_alpha=12, layers_to_transform=[1])),
    ("randlora_llama_sparse", "llama",
     dict(r=5, target_modules=LLAMA_ALL, projection_prng_key=77, save_projection=False, sparse=True,
          randlora_alpha=10)),
    ("randlora_llama_very_sparse", "llama",
     dict(r=4, target_modules=["q_proj", "v_proj", "down_proj"], projection_prng_key=5, save_projection=False,
          very_sparse=True, randlora_alpha=8)),
    ("randlora_gpt2", "gpt2",
     dict(r=8, target_modules=["c_attn", "c_fc", "mlp.c_proj"], projection_prng_key=99, save_projection=True,
          fan_in_fan_out=True, bias="randlora_only", randlora_alpha=16)),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "randlora_lambda" in n:
                p.normal_(0.0, 0.3)
            elif "randlora_gamma" in n:
                p.mul_(1.0 + 0.5 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def bases(model):
    return dict(randlora_A=model.base_model.randlora_A["default"].clone().contiguous(),
                randlora_B=model.base_model.randlora_B["default"].clone().contiguous())


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        info, t = make_case(out, name, base, RandLoraConfig(**kw), perturb, bases)
        # The bases depend on min / max of the largest (out, in) only.
        info.update(config=kw, r=kw["r"], projection_prng_key=kw["projection_prng_key"],
                    max_out=t["randlora_B"].shape[0], max_in=t["randlora_A"].shape[2])
        with open(os.path.join(out, name, "case.json"), "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check" and (len(sys.argv) - 2) % 3 == 0:
        from make_boft import check

        torch.set_num_threads(2)
        args = sys.argv[2:]
        check([args[i:i + 3] for i in range(0, len(args), 3)])
    else:
        sys.exit(__doc__)
