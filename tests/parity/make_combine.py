#!/usr/bin/env python
"""Weighted merges of LoRA adapters made by HF PEFT's add_weighted_adapter, for C++ parity tests.

Usage: python tests/parity/make_combine.py PARITY_DIR OUT_DIR

On PARITY_DIR/llama_mha (tests/parity/make_models.py) three LoRA adapters are made with
get_peft_model and perturbed so that B is non-zero:
  a: embed_tokens, q_proj, v_proj; r=4, alpha=8
  b: q_proj, k_proj, v_proj;       r=4, alpha=16, rsLoRA
  c: q_proj, v_proj, down_proj;    r=8, alpha=8
  d: q_proj, v_proj;               r=4, alpha=4, init_lora_weights="gaussian"
  e: q_proj, k_proj;               r=4, alpha=8, init_lora_weights=False
and saved as OUT_DIR/adapters/<name>/, and three (IA)3 adapters (IA3_ADAPTERS, vectors
perturbed away from their init). The adapters of each method are loaded onto one base as a user would
(PeftModel.from_pretrained, load_adapter), and for every case of CASES the script calls
torch.manual_seed(seed) and then add_weighted_adapter, and writes OUT_DIR/cases/<case>/:
  * adapter/                 the combined adapter (save_pretrained)
  * reference.safetensors    the base's reference inputs and the logits with the combined
                             adapter active
OUT_DIR/cases.json lists the cases with their arguments (the C++ test replays them):
"cases" the LoRA ones, "ia3_cases" the IA3 ones (IA3Model.add_weighted_adapter, no
combination type).
"""

import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from peft import IA3Config, LoraConfig, PeftModel, get_peft_model

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

BASE = "llama_mha"
ADAPTERS = {
    "a": dict(target_modules=["embed_tokens", "q_proj", "v_proj"], r=4, lora_alpha=8),
    "b": dict(target_modules=["q_proj", "k_proj", "v_proj"], r=4, lora_alpha=16, use_rslora=True),
    "c": dict(target_modules=["q_proj", "v_proj", "down_proj"], r=8, lora_alpha=8),
    # other inits: the merged adapter takes the first adapter's, and HF's injection of it
    # draws other random numbers before the DARE masks
    "d": dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=4, init_lora_weights="gaussian"),
    "e": dict(target_modules=["q_proj", "k_proj"], r=4, lora_alpha=8, init_lora_weights=False),
}
SAME_RANK = ["a", "b"]
ALL = ["a", "b", "c"]
# name -> add_weighted_adapter arguments (besides adapter_name) and the seed set before it.
CASES = {
    "linear": dict(adapters=SAME_RANK, weights=[0.7, -0.4], combination_type="linear"),
    "cat": dict(adapters=ALL, weights=[0.5, 0.3, -0.8], combination_type="cat"),
    "svd": dict(adapters=ALL, weights=[1.0, -0.5, 0.6], combination_type="svd"),
    "svd_rank_clamp_reduced": dict(
        adapters=ALL, weights=[0.8, 0.4, 0.6], combination_type="svd", svd_rank=5, svd_clamp=0.9,
        svd_full_matrices=False,
    ),
    "ties": dict(adapters=SAME_RANK, weights=[0.6, 0.9], combination_type="ties", density=0.5),
    "ties_frequency": dict(
        adapters=SAME_RANK, weights=[1.0, -0.7], combination_type="ties", density=0.4,
        majority_sign_method="frequency",
    ),
    "ties_svd": dict(adapters=ALL, weights=[0.5, 0.5, 0.5], combination_type="ties_svd", density=0.6),
    "dare_linear": dict(adapters=SAME_RANK, weights=[0.7, 0.6], combination_type="dare_linear", density=0.5, seed=11),
    "dare_ties": dict(adapters=SAME_RANK, weights=[0.9, 0.4], combination_type="dare_ties", density=0.5, seed=12),
    "dare_linear_svd": dict(
        adapters=ALL, weights=[0.6, -0.3, 0.9], combination_type="dare_linear_svd", density=0.7, seed=13
    ),
    "dare_ties_svd": dict(
        adapters=ALL, weights=[1.0, 0.5, 0.5], combination_type="dare_ties_svd", density=0.5, seed=14, svd_rank=4,
        majority_sign_method="frequency",
    ),
    "magnitude_prune": dict(adapters=SAME_RANK, weights=[0.8, 0.5], combination_type="magnitude_prune", density=0.3),
    "magnitude_prune_svd": dict(
        adapters=ALL, weights=[0.4, 0.7, 0.2], combination_type="magnitude_prune_svd", density=0.5
    ),
    "dare_linear_gaussian_init": dict(
        adapters=["d", "a"], weights=[0.8, 0.5], combination_type="dare_linear", density=0.6, seed=15
    ),
    "dare_ties_svd_false_init": dict(
        adapters=["e", "b"], weights=[0.5, 0.9], combination_type="dare_ties_svd", density=0.5, seed=16
    ),
    # one adapter: HF merges linearly whatever the type says; task arithmetic: a weight
    # scales it, -1 negates it (sqrt(|w s|) on both factors, the sign on A)
    "single": dict(adapters=["c"], weights=[0.5], combination_type="svd"),
    "single_negate": dict(adapters=["a"], weights=[-1.0], combination_type="cat"),
}
# (IA)3 adapters (IA3Model.add_weighted_adapter: no combination type), perturbed away from
# their init so that every vector entry differs.
IA3_ADAPTERS = {
    "ia3_x": dict(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    "ia3_y": dict(target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], feedforward_modules=["up_proj", "down_proj"]),
    "ia3_z": dict(target_modules=["v_proj", "o_proj"], feedforward_modules=[], init_ia3_weights=False),
}
IA3_CASES = {
    "ia3_pair": dict(adapters=["ia3_x", "ia3_y"], weights=[0.6, 0.7]),
    "ia3_three": dict(adapters=["ia3_x", "ia3_y", "ia3_z"], weights=[0.5, -0.3, 0.9]),
    "ia3_negate": dict(adapters=["ia3_y"], weights=[-1.0]),
    "ia3_scale": dict(adapters=["ia3_x"], weights=[0.5]),
}
SEED = 1234


def load_base(base_dir):
    model = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


def make_adapter(base_dir, out_dir, idx, name, config):
    torch.manual_seed(SEED + idx)
    model = get_peft_model(load_base(base_dir), config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or "ia3_l" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(os.path.join(out_dir, "adapters", name), safe_serialization=True)


def run_cases(model, cases, inputs, out_dir, first):
    """add_weighted_adapter for every case (seeded), saving the adapter and its logits."""
    listed = {}
    for case, spec in cases.items():
        args = {k: v for k, v in spec.items() if k != "seed"}
        seed = spec.get("seed", 0)
        torch.manual_seed(seed)
        model.add_weighted_adapter(adapter_name=case, **args)
        case_dir = os.path.join(out_dir, "cases", case)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, selected_adapters=[case], safe_serialization=True)
            shutil.move(os.path.join(tmp, case), os.path.join(case_dir, "adapter"))
        model.set_adapter(case)
        with torch.no_grad():
            logits = model(**inputs).logits.float().contiguous()
        save_file(dict(inputs, logits=logits), os.path.join(case_dir, "reference.safetensors"))
        model.set_adapter(first)
        model.delete_adapter(case)
        listed[case] = dict(args, seed=seed)
    return listed


def load_all(base_dir, out_dir, names):
    model = PeftModel.from_pretrained(load_base(base_dir), os.path.join(out_dir, "adapters", names[0]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(os.path.join(out_dir, "adapters", name), adapter_name=name)
    model.eval()
    return model


def main():
    parity_dir, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    base_dir = os.path.join(parity_dir, BASE)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    for idx, (name, kwargs) in enumerate(ADAPTERS.items()):
        make_adapter(base_dir, out_dir, idx, name, LoraConfig(lora_dropout=0.0, **kwargs))
    for idx, (name, kwargs) in enumerate(IA3_ADAPTERS.items()):
        make_adapter(base_dir, out_dir, 100 + idx, name, IA3Config(**kwargs))

    ref = load_file(os.path.join(base_dir, "reference.safetensors"))
    inputs = {k: ref[k] for k in ("input_ids", "attention_mask") if k in ref}
    names, ia3_names = list(ADAPTERS), list(IA3_ADAPTERS)
    listed = run_cases(load_all(base_dir, out_dir, names), CASES, inputs, out_dir, names[0])
    ia3_listed = run_cases(load_all(base_dir, out_dir, ia3_names), IA3_CASES, inputs, out_dir, ia3_names[0])

    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(
            {"base": BASE, "adapters": names, "cases": listed, "ia3_adapters": ia3_names, "ia3_cases": ia3_listed},
            f, indent=2,
        )
        f.write("\n")
    print(f"{len(CASES)} combined LoRA and {len(IA3_CASES)} combined IA3 adapters in {out_dir}")


if __name__ == "__main__":
    main()
