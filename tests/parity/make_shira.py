#!/usr/bin/env python
"""SHiRA references made by HF PEFT for tests/test_shira.cpp.

Usage:
  python tests/parity/make_shira.py make OUT_DIR
  python tests/parity/make_shira.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ (a tiny random Llama with inputs.safetensors) and
per case <case>/adapter/ (PeftModel.save_pretrained, shira_weight set to N(0, 0.3^2) values),
<case>/reference.safetensors (inputs, logits, merged_logits, and HF's in-memory
shira_indices [2, n] of every adapted layer under "indices.<module path>") and
<case>/case.json ({"base", "trainable"}).
Cases: shira_llama (mask_type random, r 2, random_seed 42), shira_llama_noseed (random,
r 1, random_seed null: torch.Generator()'s default seed), shira_llama_magnitude (a user mask
function: the r (in + out) largest |W|, saved as mask_type "magnitude"; HF then reads the
positions from the file).

check loads each ADAPTER on BASE with PeftModel.from_pretrained in one process; the file's
tensors must be exactly HF's adapter state dict (keys and values, shira_indices included)
and the logits within 1e-4 of OUTPUTS' (masked positions ignored); exit 1 on any failure.
"""

import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, logits_of, make_base, make_case, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import PeftModel, ShiraConfig  # noqa: E402


def magnitude_mask(base_layer, r, **kwargs):
    w = base_layer.weight
    n = r * (w.shape[0] + w.shape[1])
    mask = torch.zeros_like(w)
    mask.view(-1)[w.abs().flatten().topk(n).indices] = 1.0
    return mask


def magnitude_config():
    c = ShiraConfig(r=2, mask_type="magnitude", target_modules=["k_proj", "up_proj"])
    c.mask_fn = magnitude_mask
    return c


CASES = [
    ("shira_llama", lambda: ShiraConfig(r=2, random_seed=42, target_modules=["q_proj", "v_proj", "down_proj"])),
    ("shira_llama_noseed", lambda: ShiraConfig(r=1, target_modules=["o_proj", "gate_proj", "up_proj"])),
    ("shira_llama_magnitude", magnitude_config),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "shira_weight" in n:
                p.copy_(0.3 * torch.randn_like(p))


def indices(model):
    out = {}
    for name, m in model.named_modules():
        if "default" in getattr(m, "shira_indices", {}):
            out["indices." + name.removeprefix("base_model.model.")] = m.shira_indices["default"].clone().contiguous()
    return out


def check_one(base_dir, adapter_dir, outputs, tol=1e-4):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir)
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = peft.get_peft_model_state_dict(model)
    # HF also files a targeted embedding's base table (save_embedding_layers="auto", for
    # resized vocabularies); we do not copy the frozen table, and HF loads ours without it.
    want = {k: v for k, v in want.items() if k in sd or not k.endswith(".base_layer.weight")}
    if set(sd) != set(want):
        print(f"FAIL {adapter_dir}: keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        return False
    for k, v in sd.items():
        if v.dtype != want[k].dtype or not torch.equal(v, want[k]):
            print(f"FAIL {adapter_dir}: {k} did not load as saved ({v.dtype} vs HF's {want[k].dtype})")
            return False
    d = (logits_of(model.eval(), inputs) - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return diff <= tol


def fixture_main(doc, make, threads=2):
    """The `make OUT_DIR` / `check BASE ADAPTER OUTPUTS ...` entry point the per-method
    scripts share: check runs check_one on every triple (in this one process); make pins the
    hash seed, creates OUT_DIR, sets torch's threads and calls make(OUT_DIR)."""
    args = sys.argv[1:]
    if len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        ok = all([check_one(*args[i:i + 3]) for i in range(1, len(args), 3)])
        sys.exit(0 if ok else 1)
    if len(args) != 2 or args[0] != "make":
        sys.exit(doc)
    pin_hash_seed()
    os.makedirs(args[1], exist_ok=True)
    torch.set_num_threads(threads)
    make(args[1])


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        pin_hash_seed()
        out = args[1]
        os.makedirs(out, exist_ok=True)
        torch.set_num_threads(2)
        make_base("llama", os.path.join(out, "llama"))
        for name, config in CASES:
            make_case(out, name, "llama", config(), perturb, indices)
    elif len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        ok = True
        for i in range(1, len(args), 3):
            ok &= check_one(args[i], args[i + 1], args[i + 2])
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
