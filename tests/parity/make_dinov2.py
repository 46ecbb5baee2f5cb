#!/usr/bin/env python
"""Random-weight DINOv2 models made by transformers, with reference outputs and HF PEFT
adapters, for tests/test_dinov2.cpp.

Usage: python tests/parity/make_dinov2.py OUT_DIR

OUT_DIR/<case>/ holds the model (save_pretrained, float32) and reference.safetensors:
pixel_values/<size> (random float images) with the outputs for each (logits, or
last_hidden_state and pooler_output), num_parameters; OUT_DIR/<case>/lora/ and ia3/ hold
adapters HF PEFT saved (non-trivial weights) with their outputs in the case's reference
under "<adapter>/<output>/<size>".
  dinov2_cls  Dinov2ForImageClassification, image_size 32, patch 8 (a 4 x 4 grid), 3
              labels red/green/blue, layerscale 0.5, and a BitImageProcessor as DINOv2's
              (shortest edge 20, center crop 16: a 2 x 2 grid, so the position embeddings
              are resampled); sizes 32x32 (the table as it is), 16x24 (resampled, not square)
              and 40x40 (resampled up)
  dinov2_swiglu  Dinov2Model with use_swiglu_ffn (as dinov2-giant), no qkv bias, no mask
              token; sizes 24x24 (table as is) and 16x16
transformers 5 saves both under the v4 names (attention.attention.query, attention.output.dense,
and for the SwiGLU mlp.weights_in holding gate and up stacked, mlp.weights_out).
OUT_DIR/colors/: image folders and JSONL of dominant-color images (make_image_processor.py's).
"""

import os
import shutil
import sys

import numpy as np
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification, Dinov2Model
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_image_processor import write_colors  # noqa: E402  (the same color task)

hf_logging.set_verbosity_error()

LABELS = {0: "red", 1: "green", 2: "blue"}


def pixels(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    return {f"{h}x{w}": torch.randn(2, 3, h, w, generator=g) for h, w in sizes}


def outputs(model, pv):
    with torch.no_grad():
        out = model(pixel_values=pv)
    if getattr(out, "logits", None) is not None:
        return {"logits": out.logits.float().contiguous()}
    return {"last_hidden_state": out.last_hidden_state.float().contiguous(),
            "pooler_output": out.pooler_output.float().contiguous()}


def perturb(model, scale):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def record(ref, prefix, model, inputs):
    for size, pv in inputs.items():
        for k, v in outputs(model, pv).items():
            ref[f"{prefix}{k}/{size}"] = v


def make_case(out, name, cls, cfg, sizes, seed, adapters):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    perturb(model, 0.05)
    inputs = pixels(sizes, seed + 1)
    ref = {f"pixel_values/{k}": v for k, v in inputs.items()}
    ref["num_parameters"] = torch.tensor([model.num_parameters()], dtype=torch.int64)
    record(ref, "", model, inputs)
    model.save_pretrained(case_dir)
    for adapter, make_cfg in adapters:
        base = cls.from_pretrained(case_dir, dtype=torch.float32).eval()
        torch.manual_seed(len(adapter))
        peft_model = get_peft_model(base, make_cfg())
        with torch.no_grad():  # (IA)3 starts at ones and a modules_to_save copy equals the head
            for n, p in peft_model.named_parameters():
                if "ia3_l" in n or "modules_to_save" in n:
                    p.add_(torch.randn_like(p) * 0.3)
        peft_model.eval()
        record(ref, f"{adapter}/", peft_model, inputs)
        peft_model.save_pretrained(os.path.join(case_dir, adapter))
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    print(f"{name}: {cls.__name__} params={model.num_parameters()} sizes={list(inputs)}")
    return case_dir


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cls_cfg = Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           mlp_ratio=2, layerscale_value=0.5, num_labels=3, id2label=LABELS,
                           label2id={v: k for k, v in LABELS.items()})
    d = make_case(out, "dinov2_cls", Dinov2ForImageClassification, cls_cfg, [(32, 32), (16, 24), (40, 40)], 31, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"],
                                    modules_to_save=["classifier"])),
        ("ia3", lambda: IA3Config(target_modules=["k_proj", "fc2"], feedforward_modules=["fc2"])),
    ])
    BitImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(d)
    swiglu_cfg = Dinov2Config(image_size=24, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                              mlp_ratio=3, use_swiglu_ffn=True, qkv_bias=False, use_mask_token=False,
                              hidden_act="gelu_new")
    s = make_case(out, "dinov2_swiglu", Dinov2Model, swiglu_cfg, [(24, 24), (16, 16)], 37, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                    target_modules=["q_proj", "o_proj", "gate_proj", "down_proj"])),
    ])
    write_colors(os.path.join(out, "colors"), np.random.default_rng(77))


if __name__ == "__main__":
    main(sys.argv[1])
