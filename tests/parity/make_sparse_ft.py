#!/usr/bin/env python
"""SPARSE_FT (sparse fine-tuning, a format of ours) references in plain PyTorch for
tests/test_sparse_ft.cpp: no PEFT code, the masks and the weight change computed from
their definitions on transformers' models.

Usage: python tests/parity/make_sparse_ft.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors)
and per case <case>/adapter/ (adapter_config.json and adapter_model.safetensors in our
format: "base_model.model.<layer>.sparse_ft_values" [n] fp32, N(0, 0.05²), and
".sparse_ft_indices" int32 [2, n], the mask's rows and columns in row-major order),
<case>/reference.safetensors (inputs; "logits" of the base with W += dW on every target;
"positions.<layer>" the mask; for the gradient case "grad.<layer>" the mean gradient
[out, in] of the calibration loss) and <case>/case.json ({"base", "trainable": HF's
print_trainable_parameters line for these counts, "config"}).
Masks: n = max(1, round(density * out * in)) entries of the [out, in] weight (GPT-2's Conv1D
weight transposed) with the largest score, ties to the lower row-major index (a stable
descending sort): |W| for "magnitude"; for "gradient" |dL/dW| of one forward and backward of
the base on the inputs, L the mean next-token cross entropy with padding labelled -100
(the calibration pass `peft train` runs over training batches).
Cases:
  magnitude_llama  density 0.05 on q_proj, v_proj, down_proj (Linear)
  magnitude_gpt2   density 0.1 on c_attn and mlp.c_proj (Conv1D)
  gradient_llama   density 0.02 on q_proj, k_proj, up_proj
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, logits_of, make_base  # noqa: E402

CASES = [
    ("magnitude_llama", "llama", dict(density=0.05, mask_type="magnitude",
                                      target_modules=["q_proj", "v_proj", "down_proj"])),
    ("magnitude_gpt2", "gpt2", dict(density=0.1, mask_type="magnitude", target_modules=["c_attn", "mlp.c_proj"])),
    ("gradient_llama", "llama", dict(density=0.02, mask_type="gradient",
                                     target_modules=["q_proj", "k_proj", "up_proj"])),
]


def targets(model, names):
    out = []
    for path, m in model.named_modules():
        if any(path == t or path.endswith("." + t) for t in names) and hasattr(m, "weight"):
            out.append((path, m))
    return out


def logical(m):
    """The [out, in] weight: GPT-2's Conv1D stores [in, out]."""
    return m.weight.t() if type(m).__name__ == "Conv1D" else m.weight


def top_positions(score, n):
    order = torch.sort(score.flatten(), stable=True, descending=True).indices[:n]
    flat = torch.sort(order).values
    return torch.stack([flat // score.shape[1], flat % score.shape[1]]).to(torch.int32)


def calibration_grads(model, inputs, paths):
    for p in model.parameters():
        p.requires_grad_(False)
    mods = dict(model.named_modules())
    for path in paths:
        mods[path].weight.requires_grad_(True)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model.train()
    model(**inputs, labels=labels).loss.backward()
    model.eval()
    return {path: (mods[path].weight.grad.t() if type(mods[path]).__name__ == "Conv1D" else mods[path].weight.grad)
            .detach().clone() for path in paths}


def make_case(out, name, base, cfg):
    base_dir = os.path.join(out, base)
    case_dir = os.path.join(out, name)
    adapter = os.path.join(case_dir, "adapter")
    os.makedirs(adapter, exist_ok=True)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = load_base(base_dir)
    found = targets(model, cfg["target_modules"])
    ref = dict(inputs)
    grads = None
    if cfg["mask_type"] == "gradient":
        grads = calibration_grads(load_base(base_dir), inputs, [p for p, _ in found])
    tensors, trained = {}, 0
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for path, m in found:
            w = logical(m)
            out_f, in_f = w.shape
            n = min(out_f * in_f, max(1, round(cfg["density"] * out_f * in_f)))
            score = grads[path].abs() if grads is not None else w.abs()
            pos = top_positions(score, n)
            values = 0.05 * torch.randn(n, generator=g)
            delta = torch.zeros(out_f, in_f)
            delta[pos[0].long(), pos[1].long()] = values
            if type(m).__name__ == "Conv1D":
                m.weight += delta.t()
            else:
                m.weight += delta
            key = "base_model.model." + path
            tensors[key + ".sparse_ft_values"] = values.contiguous()
            tensors[key + ".sparse_ft_indices"] = pos.contiguous()
            ref["positions." + path] = pos.contiguous()
            if grads is not None:
                ref["grad." + path] = grads[path].float().contiguous()
            trained += n
    ref["logits"] = logits_of(model, inputs)
    save_file(tensors, os.path.join(adapter, "adapter_model.safetensors"), metadata={"format": "pt"})
    config = dict(peft_type="SPARSE_FT", **cfg)
    with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    total = sum(p.numel() for p in load_base(base_dir).parameters()) + trained
    trainable = f"trainable params: {trained:,d} || all params: {total:,d} || trainable%: {100 * trained / total:.4f}"
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump({"base": base, "trainable": trainable, "config": config}, f, indent=1)
    print(f"{name}: {trainable}")


def make(out):
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, cfg in CASES:
        make_case(out, name, base, cfg)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    torch.set_num_threads(1)
    os.makedirs(sys.argv[2], exist_ok=True)
    make(sys.argv[2])
