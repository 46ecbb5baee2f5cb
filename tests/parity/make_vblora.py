#!/usr/bin/env python
"""VB-LoRA references made by HF PEFT for tests/test_vblora.cpp.

Usage:
  python tests/parity/make_vblora.py make OUT_DIR
  python tests/parity/make_vblora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random models with
inputs.safetensors) and per case <case>/adapter/ (PeftModel.save_pretrained; the vector bank
set to N(0, 0.5^2) and the logits to N(0, 1), so the adapter moves the logits),
<case>/reference.safetensors (inputs, logits, merged_logits) and <case>/case.json
({"base", "trainable"}). vblora_llama also gets adapter_topk/: the same in-memory adapter
saved with save_only_topk_weights=True.
Cases: vblora_llama (five Linear targets, num_vectors 16: uint8 indices in adapter_topk),
vblora_llama_topk (saved with save_only_topk_weights, num_vectors 300: int16 indices, topk 3,
layers_to_transform [1]), vblora_gpt2 (GPT-2's Conv1D layers, bias "vblora_only").

check loads each ADAPTER on BASE with PeftModel.from_pretrained in one process; the file's
tensors must be HF's adapter state dict (keys, dtypes; values exact, but top-k weights, which
HF recomputes from log(weights), within 1e-6) and the logits within 1e-4 of OUTPUTS' (masked
positions ignored); exit 1 on any failure.
"""

import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, logits_of, make_base, make_case, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import PeftModel, VBLoRAConfig  # noqa: E402

CASES = [
    ("vblora_llama", "llama",
     lambda: VBLoRAConfig(r=4, num_vectors=16, vector_length=16, topk=2,
                          target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"])),
    ("vblora_llama_topk", "llama",
     lambda: VBLoRAConfig(r=2, num_vectors=300, vector_length=8, topk=3, save_only_topk_weights=True,
                          target_modules=["o_proj", "gate_proj"], layers_to_transform=[1])),
    ("vblora_gpt2", "gpt2",
     lambda: VBLoRAConfig(r=3, num_vectors=12, vector_length=32, topk=2, fan_in_fan_out=True, bias="vblora_only",
                          target_modules=["c_attn", "c_proj", "c_fc"])),
]


def perturb(model):
    """A bank and logits far from HF's small init, so the adapter moves the logits."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "vblora_vector_bank" in n:
                p.copy_(0.5 * torch.randn_like(p))
            elif "vblora_logits" in n:
                p.copy_(torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def save_topk_copy(case_dir):
    def extra(model):
        cfg = model.peft_config["default"]
        cfg.save_only_topk_weights = True
        model.save_pretrained(os.path.join(case_dir, "adapter_topk"))
        cfg.save_only_topk_weights = False
        return {}
    return extra


def check_one(base_dir, adapter_dir, outputs, tol=1e-4):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir)
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = peft.get_peft_model_state_dict(model)
    if set(sd) != set(want):
        print(f"FAIL {adapter_dir}: keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        return False
    for k, v in sd.items():
        same = torch.allclose(v, want[k], rtol=0, atol=1e-6) if k.endswith("_topk_weights") else torch.equal(v, want[k])
        if v.dtype != want[k].dtype or not same:
            print(f"FAIL {adapter_dir}: {k} did not load as saved ({v.dtype} vs HF's {want[k].dtype})")
            return False
    d = (logits_of(model.eval(), inputs) - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return diff <= tol


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        pin_hash_seed()
        out = args[1]
        os.makedirs(out, exist_ok=True)
        torch.set_num_threads(2)
        for kind in ("llama", "gpt2"):
            make_base(kind, os.path.join(out, kind))
        for name, base, config in CASES:
            extra = save_topk_copy(os.path.join(out, name)) if name == "vblora_llama" else None
            make_case(out, name, base, config(), perturb, extra)
    elif len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        ok = True
        for i in range(1, len(args), 3):
            ok &= check_one(args[i], args[i + 1], args[i + 2])
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
