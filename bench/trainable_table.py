#!/usr/bin/env python
"""Trainable-parameter counts per PEFT method on real-size models, ours next to HF PEFT's.

Usage: python bench/trainable_table.py [--peft build/peft] [--work /tmp/peft_trainable]

Builds GPT-2 small (124M), ViT-base (86M, 10 classes) and a SmolLM2-135M-shaped Llama
(X-LoRA's rows) with random weights from
transformers' config classes, then for each method prints the line `peft inspect MODEL
--method JSON` gives and, for methods HF PEFT has, the line print_trainable_parameters()
gives for the same config. Output: a markdown table (docs/TUNERS.md keeps one).
"""

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import warnings

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, ViTConfig,
                          ViTForImageClassification)
from transformers.utils import logging as hf_logging

import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

hf_logging.set_verbosity_error()

MODELS = {
    "gpt2-124M": lambda: GPT2LMHeadModel(GPT2Config()),
    "vit-base-86M": lambda: ViTForImageClassification(ViTConfig(num_labels=10)),
    # SmolLM2-135M's shape (GQA 9/3, tied, vocab 49,152), for X-LoRA: neither HF's X-LoRA nor
    # ours runs on GPT-2 (Conv1D) or ViT (no causal LM head).
    "smollm2-135M-shape": lambda: LlamaForCausalLM(LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)),
}

# ViT-base's attention query and value projections, with the new head trained and saved.
VIT_QV = {"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["classifier"]}

# (label, model, config). Configs are adapter_config.json fields; HF gets the same ones.
METHODS = [
    ("LoRA r=8 (c_attn)", "gpt2-124M", {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["c_attn"]}),
    ("LoRA r=8 all-linear", "gpt2-124M", {"peft_type": "LORA", "r": 8, "target_modules": "all-linear"}),
    ("(IA)3", "gpt2-124M", {"peft_type": "IA3"}),
    ("prompt tuning, 20 tokens", "gpt2-124M", {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 20, "task_type": "CAUSAL_LM"}),
    ("P-tuning MLP, 20 tokens", "gpt2-124M",
     {"peft_type": "P_TUNING", "num_virtual_tokens": 20, "encoder_hidden_size": 128, "task_type": "CAUSAL_LM"}),
    ("prefix tuning, 20 tokens", "gpt2-124M", {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20, "task_type": "CAUSAL_LM"}),
    ("LayerNorm tuning", "gpt2-124M", {"peft_type": "LN_TUNING"}),
    ("BitFit", "gpt2-124M", {"peft_type": "BITFIT"}),
    ("SSF", "gpt2-124M", {"peft_type": "SSF"}),
    ("Houlsby adapters, m=64", "gpt2-124M", {"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "bottleneck_size": 64}),
    ("Pfeiffer adapters, m=64", "gpt2-124M", {"peft_type": "BOTTLENECK", "adapter_type": "pfeiffer", "bottleneck_size": 64}),
    ("AdaptFormer, m=64", "gpt2-124M", {"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 64}),
    ("Houlsby adapters, m=256", "gpt2-124M", {"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "bottleneck_size": 256}),
    ("VPT shallow, 10 tokens (+ head)", "vit-base-86M", {"peft_type": "VPT", "num_virtual_tokens": 10}),
    ("VPT deep, 10 tokens (+ head)", "vit-base-86M", {"peft_type": "VPT", "num_virtual_tokens": 10, "deep": True}),
    ("LoRA r=8 q,v (+ head)", "vit-base-86M",
     {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["classifier"]}),
    ("VeRA r=256 (c_attn)", "gpt2-124M", {"peft_type": "VERA", "r": 256, "target_modules": ["c_attn"]}),
    ("FourierFT n=1000 (mlp.c_proj)", "gpt2-124M",
     {"peft_type": "FOURIERFT", "n_frequency": 1000, "target_modules": ["mlp.c_proj"]}),
    ("VeRA r=256 q,v (+ head)", "vit-base-86M", {"peft_type": "VERA", "r": 256, **VIT_QV}),
    ("FourierFT n=3000 q,v (+ head)", "vit-base-86M", {"peft_type": "FOURIERFT", "n_frequency": 3000, **VIT_QV}),
    ("OFT block 32 q,v (+ head)", "vit-base-86M", {"peft_type": "OFT", "r": 0, "oft_block_size": 32, **VIT_QV}),
    ("BOFT block 4 q,v (+ head)", "vit-base-86M", {"peft_type": "BOFT", "boft_block_size": 4, **VIT_QV}),
    ("BOFT block 8 (lm_head)", "gpt2-124M", {"peft_type": "BOFT", "boft_block_size": 8, "target_modules": ["lm_head"]}),
    ("HRA r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "HRA", "r": 8, **VIT_QV}),
    ("MiSS r=64 q,v (+ head)", "vit-base-86M", {"peft_type": "MISS", "r": 64, **VIT_QV}),
    ("SHiRA r=32 q,v (+ head)", "vit-base-86M", {"peft_type": "SHIRA", "r": 32, **VIT_QV}),
    ("AdaLoRA init_r=12 (c_attn)", "gpt2-124M",
     {"peft_type": "ADALORA", "init_r": 12, "total_step": 1000, "target_modules": ["c_attn"]}),
    ("AdaLoRA init_r=12 q,v (+ head)", "vit-base-86M", {"peft_type": "ADALORA", "init_r": 12, "total_step": 1000, **VIT_QV}),
    ("RandLoRA r=32 (c_attn)", "gpt2-124M", {"peft_type": "RANDLORA", "r": 32, "target_modules": ["c_attn"]}),
    ("RandLoRA r=32 q,v (+ head)", "vit-base-86M", {"peft_type": "RANDLORA", "r": 32, **VIT_QV}),
    ("VB-LoRA r=4, 256 vectors of 256 (c_attn)", "gpt2-124M",
     {"peft_type": "VBLORA", "r": 4, "num_vectors": 256, "vector_length": 256, "target_modules": ["c_attn"]}),
    ("VB-LoRA r=4, 256 vectors of 256 q,v (+ head)", "vit-base-86M",
     {"peft_type": "VBLORA", "r": 4, "num_vectors": 256, "vector_length": 256, **VIT_QV}),
    ("C3A block 64 q,v (+ head)", "vit-base-86M", {"peft_type": "C3A", "block_size": 64, **VIT_QV}),
    ("adaption prompts, 10 tokens, 12 layers", "gpt2-124M",
     {"peft_type": "ADAPTION_PROMPT", "adapter_len": 10, "adapter_layers": 12, "task_type": "CAUSAL_LM"}),
    ("trainable tokens, 100 (wte, tied lm_head)", "gpt2-124M",
     {"peft_type": "TRAINABLE_TOKENS", "token_indices": list(range(50157, 50257))}),
    ("LoRA r=8 (c_attn) + 100 trainable tokens", "gpt2-124M",
     {"peft_type": "LORA", "r": 8, "target_modules": ["c_attn"], "trainable_token_indices": list(range(50157, 50257))}),
    ("multitask prompt tuning, 20 tokens, 8 tasks, rank 4", "gpt2-124M",
     {"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 20, "num_tasks": 8, "num_ranks": 4,
      "task_type": "CAUSAL_LM"}),
    ("CARTRIDGE, 20 tokens (1 frozen)", "gpt2-124M",
     {"peft_type": "CARTRIDGE", "num_virtual_tokens": 20, "task_type": "CAUSAL_LM"}),
    ("CPT, 20-token template", "gpt2-124M",
     {"peft_type": "CPT", "cpt_token_ids": list(range(1000, 1020)),
      "cpt_tokens_type_mask": [1, 2, 2, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 6, 6, 7, 8, 8, 8], "task_type": "CAUSAL_LM"}),
    ("BEFT, v_proj (+ head)", "vit-base-86M",
     {"peft_type": "BEFT", "target_modules": ["v_proj"], "modules_to_save": ["classifier"]}),
    ("DeLoRA r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "DELORA", "r": 8, **VIT_QV}),
    ("RoAd road_1 q,v (+ head)", "vit-base-86M", {"peft_type": "ROAD", **VIT_QV}),
    ("PVeRA r=256 (c_attn)", "gpt2-124M", {"peft_type": "PVERA", "r": 256, "target_modules": ["c_attn"]}),
    ("PVeRA r=256 q,v (+ head)", "vit-base-86M", {"peft_type": "PVERA", "r": 256, **VIT_QV}),
    ("GraLoRA r=32, k=2 (c_attn)", "gpt2-124M", {"peft_type": "GRALORA", "r": 32, "target_modules": ["c_attn"]}),
    ("GraLoRA r=32, k=2 q,v (+ head)", "vit-base-86M", {"peft_type": "GRALORA", "r": 32, **VIT_QV}),
    ("HiRA r=32 (c_attn)", "gpt2-124M", {"peft_type": "HIRA", "r": 32, "target_modules": ["c_attn"]}),
    ("HiRA r=32 q,v (+ head)", "vit-base-86M", {"peft_type": "HIRA", "r": 32, **VIT_QV}),
    ("DEFT r=8 (c_attn)", "gpt2-124M", {"peft_type": "DEFT", "r": 8, "target_modules": ["c_attn"]}),
    ("DEFT r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "DEFT", "r": 8, **VIT_QV}),
    ("FRoD sparse_rate 0.01 (c_attn)", "gpt2-124M", {"peft_type": "FROD", "target_modules": ["c_attn"]}),
    ("FRoD sparse_rate 0.01 q,v (+ head)", "vit-base-86M", {"peft_type": "FROD", **VIT_QV}),
    ("OSF effective_rank=736 q,v (+ head)", "vit-base-86M", {"peft_type": "OSF", "effective_rank": 736, **VIT_QV}),
    ("PSOFT r=32 q,v (+ head)", "vit-base-86M", {"peft_type": "PSOFT", "r": 32, **VIT_QV}),
    ("TinyLoRA r=2, u=64 (c_attn)", "gpt2-124M", {"peft_type": "TINYLORA", "target_modules": ["c_attn"]}),
    ("TinyLoRA r=2, u=64 q,v (+ head)", "vit-base-86M", {"peft_type": "TINYLORA", **VIT_QV}),
    ("ADAMSS r=100, 5 subspaces q,v (+ head)", "vit-base-86M", {"peft_type": "ADAMSS", **VIT_QV}),
    ("WaveFT n=2592 (mlp.c_proj)", "gpt2-124M", {"peft_type": "WAVEFT", "target_modules": ["mlp.c_proj"]}),
    ("WaveFT n=3000 q,v (+ head)", "vit-base-86M", {"peft_type": "WAVEFT", "n_frequency": 3000, **VIT_QV}),
    ("LILY r=32, 2 experts q,v (+ head)", "vit-base-86M",
     {"peft_type": "LILY", "r": 32, **VIT_QV}),
    ("GLoRA r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "GLORA", "r": 8, **VIT_QV}),
    ("GLoRA vector A-E q,v (+ head)", "vit-base-86M",
     {"peft_type": "GLORA", "config_A_B": "vector", "config_C": "vector", "config_D_E": "vector", **VIT_QV}),
    ("Poly r=8, 8 tasks, 4 skills q,v (+ head)", "vit-base-86M",
     {"peft_type": "POLY", "r": 8, "n_tasks": 8, "n_skills": 4, **VIT_QV}),
    ("UniLoRA r=4, theta_d 256 (c_attn)", "gpt2-124M", {"peft_type": "UNILORA", "r": 4, "target_modules": ["c_attn"]}),
    ("UniLoRA r=4, theta_d 23,040 q,v (+ head)", "vit-base-86M",
     {"peft_type": "UNILORA", "r": 4, "theta_d_length": 23040, **VIT_QV}),
    # PEANuT on ViT only: HF's PEANuT refuses GPT-2's Conv1D, and so do we.
    ("PEANUT r=32 q,v (+ head)", "vit-base-86M", {"peft_type": "PEANUT", "r": 32, **VIT_QV}),
    ("PEANUT r=32, depth 2 q,v (+ head)", "vit-base-86M", {"peft_type": "PEANUT", "r": 32, "depth": 2, **VIT_QV}),
    # SuperTuning on ViT only: HF's Super-Tuning refuses GPT-2's Conv1D, and so do we.
    ("SuperTuning sparsity 0.99 q,v (+ head)", "vit-base-86M", {"peft_type": "SUPERTUNING", **VIT_QV}),
    ("SuperTuning Supra r=8, sparsity 0.99 q,v (+ head)", "vit-base-86M",
     {"peft_type": "SUPERTUNING", "r": 8, **VIT_QV}),
    ("sparse FT, density 0.01, magnitude mask (c_attn)", "gpt2-124M",
     {"peft_type": "SPARSE_FT", "density": 0.01, "target_modules": ["c_attn"]}),
    ("sparse FT, density 0.01, magnitude mask q,v (+ head)", "vit-base-86M",
     {"peft_type": "SPARSE_FT", "density": 0.01, **VIT_QV}),
    ("LoHa r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "LOHA", "r": 8, **VIT_QV}),
    ("LoKr r=8 q,v (+ head)", "vit-base-86M", {"peft_type": "LOKR", "r": 8, **VIT_QV}),
    ("ShadowPEFT r=8, 1-layer mirror", "gpt2-124M", {"peft_type": "SHADOW", "r": 8, "task_type": "CAUSAL_LM"}),
    ("ShadowPEFT r=8, 2-layer mirror of width 384", "gpt2-124M",
     {"peft_type": "SHADOW", "r": 8, "shadow_num_hidden_layers": 2, "shadow_hidden_size": 384,
      "shadow_num_attention_heads": 6, "task_type": "CAUSAL_LM"}),
    ("MoLE over 2 LoRA r=8 (q_proj, v_proj), top 2, routers only", "smollm2-135M-shape",
     {"peft_type": "MOLE", "experts": "LORA_EXPERTS", "top_k": 2}),
    # X-LoRA mixes LoRA adapters saved in folders: main() writes two r=8 q_proj/v_proj LoRAs
    # (LORA_EXPERTS) beside the models and fills in "adapters".
    ("X-LoRA over 2 LoRA r=8 (q_proj, v_proj), classifier depth 1", "smollm2-135M-shape",
     {"peft_type": "XLORA", "hidden_size": 576, "task_type": "CAUSAL_LM", "adapters": "LORA_EXPERTS"}),
    ("X-LoRA over 2 LoRA r=8 (q_proj, v_proj), depth 2, size 256, layerwise", "smollm2-135M-shape",
     {"peft_type": "XLORA", "hidden_size": 576, "xlora_depth": 2, "xlora_size": 256, "layerwise_scalings": True,
      "task_type": "CAUSAL_LM", "adapters": "LORA_EXPERTS"}),
]

# HF PEFT's config class of each type it has (BitFit, SSF, bottleneck adapters and VPT are ours).
HF_CONFIGS = {str(k.value) if hasattr(k, "value") else str(k): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}

LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)")


def lora_experts(work, model_dir, n=2):
    """Two LoRA adapters (r=8, q_proj and v_proj) in folders named "0", "1" (X-LoRA's names)."""
    out = {}
    for i in range(n):
        d = os.path.join(work, "xlora_experts_" + os.path.basename(model_dir), str(i))
        if not os.path.exists(os.path.join(d, "adapter_config.json")):
            from transformers import AutoModelForCausalLM
            torch.manual_seed(i)
            m = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                                    peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
            m.save_pretrained(d)
        out[str(i)] = d
    return out


def hf_line(model_fn, cfg):
    cls = HF_CONFIGS.get(cfg["peft_type"])
    if cls is None:
        return None
    kwargs = {k: v for k, v in cfg.items() if k != "peft_type"}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = model_fn()
        if cfg["peft_type"] == "XLORA":
            base.config.use_cache = False  # HF's X-LoRA refuses a model that caches
        m = peft.get_peft_model(base, cls(**kwargs))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        m.print_trainable_parameters()
    return buf.getvalue().strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peft", default="build/peft")
    ap.add_argument("--work", default="/tmp/peft_trainable")
    ap.add_argument("--only", default="", help="only the methods whose label contains this text")
    args = ap.parse_args()
    dirs = {}
    for name, fn in MODELS.items():
        d = os.path.join(args.work, name)
        if not os.path.exists(os.path.join(d, "config.json")):
            torch.manual_seed(0)
            fn().save_pretrained(d)
        dirs[name] = d
    print("| method | model | trainable | % of all (ours) | HF PEFT's line agrees |")
    print("|---|---|---:|---:|---|")
    for label, model, cfg in METHODS:
        if args.only not in label:
            continue
        for key in ("adapters", "experts"):  # X-LoRA's and MoLE's LoRA folders
            if cfg.get(key) == "LORA_EXPERTS":
                cfg = {**cfg, key: lora_experts(args.work, dirs[model])}
        out = subprocess.run([args.peft, "inspect", dirs[model], "--method", json.dumps(cfg)], capture_output=True,
                             text=True, check=True).stdout
        ours = LINE.search(out)
        hf = hf_line(MODELS[model], cfg)
        agree = "-" if hf is None else ("yes" if hf == ours.group(0) else f"no: {hf}")
        print(f"| {label} | {model} | {ours.group(1)} | {float(ours.group(3)):.4f} | {agree} |")


if __name__ == "__main__":
    main()
