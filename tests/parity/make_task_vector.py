#!/usr/bin/env python
"""Fine-tuned checkpoints with known deltas, and torch's SVD of those deltas, for `peft extract`.

Usage: python tests/parity/make_task_vector.py PARITY_DIR OUT_DIR

The base is PARITY_DIR/llama_mha (tests/parity/make_models.py). Two "fine-tuned" models are
written with save_pretrained (float32):
  OUT_DIR/ft_lowrank/  base + an exactly rank-2 delta on four matrices (LOWRANK), every
                       other parameter equal; reference.safetensors holds the base's
                       reference inputs and this model's logits (transformers).
  OUT_DIR/ft_noisy/    ft_lowrank plus full-rank noise on one matrix (NOISY) and changes
                       outside the Linear layers (NOT_LINEAR: final norm, an embedding
                       row, the output head), which a LoRA on the Linears cannot carry.
OUT_DIR/energies.json, per model and per rank in RANKS, from torch.linalg.svd in float64 of
W_ft - W_base of every Linear but lm_head ("all-linear"): each matrix's energy
sum(S[:r]^2) / sum(S^2) (null when the delta is exactly zero) and the total
sum_matrices sum(S[:r]^2) / sum_matrices sum(S^2); and the max |diff| of every other
parameter that differs.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

BASE = "llama_mha"
TRUE_RANK = 2
LOWRANK = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",
    "model.layers.0.mlp.gate_proj",  # 96 x 64
    "model.layers.1.mlp.down_proj",  # 64 x 96
]
NOISY = "model.layers.0.self_attn.o_proj"
NOT_LINEAR = ["model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"]
RANKS = [1, 2, 3]
SEED = 4321


def load(path):
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


def linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]


def add_low_rank(model, gen):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in LOWRANK:
            w = params[name + ".weight"]
            u = torch.randn(w.shape[0], TRUE_RANK, generator=gen, dtype=torch.float64) * 0.15
            v = torch.randn(TRUE_RANK, w.shape[1], generator=gen, dtype=torch.float64) * 0.15
            w.copy_((w.double() + u @ v).float())


def add_noise(model, gen):
    params = dict(model.named_parameters())
    with torch.no_grad():
        w = params[NOISY + ".weight"]
        w.add_(torch.randn(w.shape, generator=gen) * 0.01)
        params["model.norm.weight"].add_(0.05)
        params["model.embed_tokens.weight"][3].add_(0.1)
        params["lm_head.weight"][:, 5].add_(-0.02)


def energies(base, ft):
    b, f = dict(base.named_parameters()), dict(ft.named_parameters())
    linears = linear_names(base)
    out = {"ranks": {}, "not_captured": {}}
    spectra = {}
    for name in linears:
        delta = f[name + ".weight"].double() - b[name + ".weight"].double()
        spectra[name] = None if not delta.any() else torch.linalg.svd(delta, full_matrices=False).S
    for r in RANKS:
        per, kept, total = {}, 0.0, 0.0
        for name, s in spectra.items():
            if s is None:
                per[name] = None
                continue
            sq = s**2
            per[name] = (sq[:r].sum() / sq.sum()).item()
            kept += sq[:r].sum().item()
            total += sq.sum().item()
        out["ranks"][str(r)] = {"matrices": per, "total": kept / total}
    weights = {n + ".weight" for n in linears}
    for name, p in b.items():
        if name in weights:
            continue
        d = (f[name].double() - p.double()).abs().max().item()
        if d != 0:
            out["not_captured"][name] = d
    return out


def main():
    parity_dir, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    base_dir = os.path.join(parity_dir, BASE)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    gen = torch.Generator().manual_seed(SEED)
    base = load(base_dir)
    ref = load_file(os.path.join(base_dir, "reference.safetensors"))
    inputs = {k: ref[k] for k in ("input_ids", "attention_mask") if k in ref}

    ft = load(base_dir)
    add_low_rank(ft, gen)
    ft.save_pretrained(os.path.join(out_dir, "ft_lowrank"), safe_serialization=True)
    with torch.no_grad():
        logits = ft(**inputs).logits.float().contiguous()
    save_file(dict(inputs, logits=logits), os.path.join(out_dir, "ft_lowrank", "reference.safetensors"))
    report = {"base": BASE, "true_rank": TRUE_RANK, "lowrank": LOWRANK, "noisy": NOISY, "ft_lowrank": energies(base, ft)}

    add_noise(ft, gen)
    ft.save_pretrained(os.path.join(out_dir, "ft_noisy"), safe_serialization=True)
    report["ft_noisy"] = energies(base, ft)
    with open(os.path.join(out_dir, "energies.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"fine-tuned checkpoints and SVD energies in {out_dir}")


if __name__ == "__main__":
    main()
