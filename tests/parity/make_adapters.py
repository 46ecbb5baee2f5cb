#!/usr/bin/env python
"""Generate PEFT LoRA adapters plus reference outputs for C++ parity tests.

Usage: python tests/parity/make_adapters.py PARITY_DIR OUT_DIR

PARITY_DIR is the output of tests/parity/make_models.py (base models).
For every case a directory OUT_DIR/<case>/ is (re)created with:
  * trainable.txt           the line printed by print_trainable_parameters()
  * case.json               {"base": <base dir name>, "config": <LoraConfig kwargs>}
  * adapter/                PeftModel.save_pretrained (adapter_config.json +
                            adapter_model.safetensors)
  * merged/                 merge_and_unload().save_pretrained (full model)
  * reference.safetensors   inputs copied from PARITY_DIR/<base>/reference.safetensors
                            (input_ids, attention_mask, token_type_ids / pixel_values)
                            plus outputs of the adapted model:
                              logits + merged_logits                       (LM / cls heads)
                              last_hidden_state + merged_last_hidden_state (bare encoders)

Every adapter parameter is perturbed after creation so that the adapter is
non-trivial (lora_B is non-zero, DoRA magnitudes differ from the weight norms,
modules_to_save copies and trainable biases differ from the base).
"""

import contextlib
import io
import json
import os
import shutil
import sys
import time
import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

from check_adapter import model_class_for  # same folder: one rule for which class a base is
from peft import LoraConfig, get_peft_model

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
MIN_EFFECT = 1e-3

# name -> (base dir, LoraConfig kwargs). lora_dropout=0.0 is added to every case.
CASES = [
    ("lora_list", "llama_mha", dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8)),
    (
        "lora_regex_rs",
        "llama_gqa_tied",
        dict(
            target_modules=r".*\.(k_proj|o_proj|down_proj)",
            r=8,
            lora_alpha=16,
            use_rslora=True,
            rank_pattern={"o_proj": 2},
            alpha_pattern={"down_proj": 3},
        ),
    ),
    (
        "lora_dora",
        "llama3_rope",
        dict(
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            r=4,
            lora_alpha=8,
            use_dora=True,
        ),
    ),
    ("lora_all_linear_bias", "mistral", dict(target_modules="all-linear", r=2, lora_alpha=4, bias="all")),
    (
        "lora_layers",
        "qwen2",
        dict(
            target_modules=["q_proj", "v_proj"],
            layers_to_transform=[1],
            layers_pattern="layers",
            bias="lora_only",
            r=4,
            lora_alpha=4,
        ),
    ),
    ("lora_gpt2", "gpt2", dict(target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, r=4, lora_alpha=8)),
    (
        "lora_gpt2_dora",
        "gpt2_odd",
        dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, use_dora=True, r=3, lora_alpha=6),
    ),
    ("lora_embedding", "llama_mha", dict(target_modules=["embed_tokens", "q_proj"], r=4, lora_alpha=8)),
    (
        "lora_bert_cls",
        "bert_cls",
        dict(
            task_type="SEQ_CLS",
            target_modules=["query", "value"],
            modules_to_save=["classifier"],
            r=4,
            lora_alpha=8,
        ),
    ),
    (
        "lora_vit_cls",
        "vit_cls",
        dict(target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"], r=4, lora_alpha=8),
    ),
    ("lora_exclude", "gpt2_odd", dict(target_modules="all-linear", exclude_modules=["c_proj"], r=2, lora_alpha=2)),
    ("lora_sharded_base", "llama_sharded", dict(target_modules=["gate_proj", "up_proj"], r=2, lora_alpha=4)),
]

BASE_SEED = 4321


def load_base(base_dir):
    cls = model_class_for(base_dir)
    model = cls.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


def load_inputs(base_dir):
    ref = load_file(os.path.join(base_dir, "reference.safetensors"))
    return {k: ref[k] for k in INPUT_KEYS if k in ref}


def output_of(out):
    """(key, tensor): logits for heads, last_hidden_state for bare encoders."""
    logits = getattr(out, "logits", None)
    if logits is not None:
        return "logits", logits.float().contiguous()
    return "last_hidden_state", out.last_hidden_state.float().contiguous()


def perturb(peft_model, bias):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if any(s in name for s in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")):
                p.add_(torch.randn_like(p) * 0.1)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
            elif bias in ("all", "lora_only") and p.requires_grad and name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.05)


def make_case(parity_dir, out_root, idx, name, base_name, kwargs):
    t0 = time.time()
    case_dir = os.path.join(out_root, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    base_dir = os.path.join(parity_dir, base_name)
    cfg_kwargs = dict(kwargs, lora_dropout=0.0)

    inputs = load_inputs(base_dir)
    base = load_base(base_dir)
    with torch.no_grad():
        out_key, base_out = output_of(base(**inputs))

    torch.manual_seed(BASE_SEED + 100 * idx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = get_peft_model(base, LoraConfig(**cfg_kwargs))
    peft_warnings = sorted({str(w.message).splitlines()[0] for w in caught})
    peft_model.eval()

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        peft_model.print_trainable_parameters()
    trainable = buf.getvalue().strip()
    assert trainable and "\n" not in trainable, repr(buf.getvalue())
    with open(os.path.join(case_dir, "trainable.txt"), "w") as f:
        f.write(trainable + "\n")

    torch.manual_seed(BASE_SEED + 100 * idx + 1)
    perturb(peft_model, cfg_kwargs.get("bias", "none"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model.save_pretrained(os.path.join(case_dir, "adapter"), safe_serialization=True)
    peft_warnings += sorted({str(w.message).splitlines()[0] for w in caught})

    with torch.no_grad():
        k, adapted = output_of(peft_model(**inputs))
        assert k == out_key
        merged = peft_model.merge_and_unload()
        merged.eval()
        k, merged_out = output_of(merged(**inputs))
        assert k == out_key
    merged.save_pretrained(os.path.join(case_dir, "merged"), safe_serialization=True)

    ref = dict(inputs)
    ref[out_key] = adapted
    ref["merged_" + out_key] = merged_out
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(case_dir, "reference.safetensors"))

    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump({"base": base_name, "config": cfg_kwargs}, f, indent=2)
        f.write("\n")

    effect = (adapted - base_out).abs().max().item()
    merge_err = (adapted - merged_out).abs().max().item()
    assert effect > MIN_EFFECT, (name, effect)
    print(
        f"{name:22s} base={base_name:15s} {out_key}{list(adapted.shape)} "
        f"max|adapted-base|={effect:.4g} max|merged-adapted|={merge_err:.3g} "
        f"({time.time() - t0:.2f}s) | {trainable}"
    )
    for w in peft_warnings:
        print(f"    peft warning: {w}")


def reproducible(script):
    """Makes fixture generation byte-reproducible: PEFT stores set-valued fields (e.g.
    target_modules) as lists in set iteration order, which depends on string hashing, so the
    script re-executes itself with a pinned hash seed; torch runs deterministic on 2 threads."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, os.path.abspath(script)] + sys.argv[1:], env)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    reproducible(__file__)
    parity_dir, out_root = sys.argv[1], sys.argv[2]
    os.makedirs(out_root, exist_ok=True)
    t0 = time.time()
    for idx, (name, base_name, kwargs) in enumerate(CASES):
        make_case(parity_dir, out_root, idx, name, base_name, kwargs)
    print(f"done: {len(CASES)} cases in {time.time() - t0:.1f}s -> {out_root}")


if __name__ == "__main__":
    main()
