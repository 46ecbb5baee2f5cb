#!/usr/bin/env python
"""LoftQ-initialized LoRA adapters made by HF PEFT, for tests/test_loftq.cpp.

Usage: python tests/parity/make_loftq.py OUT_DIR

OUT_DIR/base/: a random tiny LlamaForCausalLM (transformers: hidden 64, 2 layers, MLP
  160, vocabulary 128) and input_ids.
OUT_DIR/iterN/ (N = 1, 2): get_peft_model(base, LoraConfig(r=4, lora_alpha=8,
  target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights="loftq",
  loftq_config=LoftQConfig(loftq_bits=4, loftq_iter=N))) saved with save_pretrained, and
  reference.safetensors: the logits right after init and every targeted base weight as
  LoftQ replaced it (key "base.<module>.weight").

HF PEFT 0.21's loftq_init runs on CUDA or XPU only; it runs here from its own source with
its compute device set to the CPU (the algorithm untouched: bitsandbytes' NF4 with
blocksize 64 on the CPU, then torch.linalg.svd), dequantizing over the flattened weight
(see flat_dequantize_4bit: bitsandbytes' AVX-512 CPU kernel gets rows that are not whole
blocks wrong).
"""
import inspect
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()


def flat_dequantize_4bit():
    """bitsandbytes' dequantize_4bit with the blocks laid over the flattened weight, as they
    are quantized. bitsandbytes 0.50's native CPU kernel (taken where torch's CPU capability
    is AVX512) dequantizes an [m, n] weight whose rows are not whole blocks (n % 64 != 0,
    e.g. down_proj's 160) with the wrong block scales after the first row; the packed bytes
    and scales are right, so dequantizing the flat tensor gives the reference values."""
    import copy

    import bitsandbytes.functional as F

    def dequantize(A, quant_state):
        flat = copy.copy(quant_state)
        flat.shape = torch.Size([quant_state.shape.numel()])
        return F.dequantize_4bit(A, flat).view(quant_state.shape)
    return dequantize


def patch_loftq_to_cpu():
    import peft.utils.loftq_utils as lu
    src = inspect.getsource(lu.loftq_init)
    device_line = 'compute_device = "xpu" if is_xpu_available() else "cuda"'
    assert device_line in src, "peft's loftq_init changed; update this patch"
    dequant_call = "bnb.functional.dequantize_4bit(qweight.data, qweight.quant_state)"
    assert dequant_call in src, "peft's loftq_init changed; update this patch"
    src = src.replace(dequant_call, "_flat_dequantize_4bit(qweight.data, qweight.quant_state)")
    ns = dict(vars(lu))
    ns["_flat_dequantize_4bit"] = flat_dequantize_4bit()
    exec(src.replace(device_line, 'compute_device = "cpu"'), ns)
    lu.loftq_init = ns["loftq_init"]
    import peft.tuners.lora.layer as lora_layer
    if hasattr(lora_layer, "loftq_init"):  # imported by name there
        lora_layer.loftq_init = ns["loftq_init"]


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    patch_loftq_to_cpu()
    from peft import LoftQConfig, LoraConfig, get_peft_model
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    base_dir = os.path.join(out, "base")
    LlamaForCausalLM(cfg).eval().save_pretrained(base_dir)
    ids = torch.randint(0, 128, (2, 9))
    for iters in (1, 2):
        model = LlamaForCausalLM.from_pretrained(base_dir).eval()
        peft_model = get_peft_model(model, LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights="loftq",
            loftq_config=LoftQConfig(loftq_bits=4, loftq_iter=iters))).eval()
        with torch.no_grad():
            logits = peft_model(input_ids=ids).logits.contiguous()
        d = os.path.join(out, f"iter{iters}")
        peft_model.save_pretrained(d)
        ref = {"input_ids": ids, "logits": logits}
        for name, module in peft_model.base_model.model.named_modules():
            if hasattr(module, "base_layer"):
                ref[f"base.{name}.weight"] = module.base_layer.weight.detach().contiguous()
        save_file(ref, os.path.join(d, "reference.safetensors"))
        print(f"loftq_iter {iters}: {len(ref) - 2} layers, logits mean |x| {logits.abs().mean():.4f}")


if __name__ == "__main__":
    main()
