#!/usr/bin/env python
"""QLoRA fixtures for tests/test_qlora.cpp, made by transformers + bitsandbytes + HF PEFT on CPU.

Usage:
  python tests/parity/make_qlora.py make PARITY_DIR OUT_DIR
  python tests/parity/make_qlora.py check BASE ADAPTER_OR_- OUTPUTS.safetensors
         [--quant-type nf4|fp4 [--double-quant] [--compute-dtype float32|bfloat16]] [--tol 1e-4]

make: for every case in CASES, OUT_DIR/<case>/ holds
  hf4bit/                  the model loaded 4-bit by transformers (BitsAndBytesConfig) and
                           written by save_pretrained: bnb's packed codes and quant-state keys
                           and config.json's quantization_config (our loader must read it)
  adapter/                 (LoRA cases) a LoRA made by HF PEFT on the 4-bit model, with
                           init_lora_weights=False (random, seeded, non-zero A and B)
  reference.safetensors    input_ids, attention_mask (make_models.py's ragged batch),
                           logits (the 4-bit model), lora_logits (with the adapter),
                           merged_logits (after PEFT's merge into the 4-bit weights, which
                           requantizes them), short_input_ids / short_logits (the first
                           row's first 5 tokens alone: decode-sized products)
  merged4bit/              (LoRA cases) PEFT's merge_and_unload() saved: the requantized codes
  trainable.txt            (LoRA cases) PEFT's print_trainable_parameters line
  case.json                base, quant_type, double_quant, dtype, compute_dtype, lora config

check: loads BASE with transformers (4-bit: with --quant-type, quantized now with those
settings and --skip-modules as llm_int8_skip_modules, else BASE must itself be a 4-bit
folder, loaded with no extra arguments; a *ForSequenceClassification or
*ForTokenClassification config loads as that classifier), the
adapter with PeftModel.from_pretrained (missing or unexpected adapter keys fail), runs the
inputs of OUTPUTS.safetensors and fails (exit 1) when max |logits - expected| over the real
(unmasked) positions exceeds --tol.

The reference 4-bit path. bitsandbytes 0.50.2 has three ways to run a Linear4bit on CPU:
  1. In inference (eval(), no grad) on a CPU with AVX512-BF16 (this one has it),
     Linear4bit.forward first repacks the weight for a fused kernel
     (_convert_weight_packed_for_cpu): the product then runs in bf16 with bf16 scales, a
     different computation from the fp32 one asked for with bnb_4bit_compute_dtype=float32,
     and the repacking itself fails on layers whose row is not a whole number of blocks
     (llama_mha's down_proj: 96 inputs, blocksize 64: "shape '[64, 1]' is invalid").
  2. Otherwise gemm_4bit: libbitsandbytes_cpu dequantizes, then F.linear. That native
     dequantizer indexes the scales by row (row * (in // blocksize) + col // blocksize) on
     AVX-512 machines when in % 16 == 0, wrong when blocks do not tile the rows (max error
     0.4 in llama_mha's down_proj, 2.0 in its logits; see make_quant.py's native_note).
  3. bnb's own portable reference, backends/default _dequantize_4bit_compute: flat blocks
     over the row-major weight, exactly the layout the codes were quantized in and the one
     bnb's CUDA kernels use.
The fixtures use 3: every Linear4bit gets support_avx512bf16_for_cpu = False (no repacking)
and the CPU dequantize_4bit kernel is re-registered to the reference. Then a 4-bit layer is
"dequantize bnb's codes into the compute dtype, F.linear", which our C++ does with
bit-identical dequantized weights, so outputs agree up to the order of the matmul's sums.
make also asserts that, on every layer where the native kernel is correct (rows tiled by
blocks), it gives the same dequantized weight as the reference.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import torch  # noqa: E402

# bnb wraps its portable kernels in torch.compile; eager runs the same ops without a compiler.
torch._dynamo.config.disable = True

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from bitsandbytes.backends.utils import _get_4bit_code  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def reference_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
    if A.dtype != torch.uint8:
        A = A.view(torch.uint8)
    return _dequantize_4bit_compute(A.reshape(-1), absmax, _get_4bit_code(quant_type, A.device), blocksize, shape,
                                    dtype)


_reference_registered = False


def use_reference_kernel():
    """Routes bnb's CPU dequantize_4bit to its portable reference (see the module docstring)."""
    global _reference_registered
    if not _reference_registered:
        torch.library.register_kernel("bitsandbytes::dequantize_4bit", "cpu")(reference_dequantize_4bit)
        _reference_registered = True


def reference_path(model):
    """No AVX512-BF16 repacking on any Linear4bit; returns how many there are."""
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    use_reference_kernel()
    return n


def bnb_config(quant_type, double_quant, compute_dtype, skip_modules=None):
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=DTYPES[compute_dtype],
                              llm_int8_skip_modules=skip_modules or None)


def auto_class(base_dir):
    """The Auto class for config.json's architecture: classifiers load as classifiers."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    with open(os.path.join(base_dir, "config.json")) as f:
        arch = (json.load(f).get("architectures") or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return AutoModelForSequenceClassification
    if arch.endswith("ForTokenClassification"):
        return AutoModelForTokenClassification
    return AutoModelForCausalLM


def load_4bit(base_dir, quant_type, double_quant, dtype, compute_dtype):
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=bnb_config(quant_type, double_quant, compute_dtype), dtype=DTYPES[dtype],
        device_map="cpu", attn_implementation="eager")
    model.eval()
    return model


# (case, base, quant_type, double_quant, dtype, compute_dtype, LoRA config or None)
CASES = [
    ("llama_mha_nf4", "llama_mha", "nf4", False, "float32", "float32",
     dict(target_modules=["q_proj", "v_proj", "down_proj"], r=4, lora_alpha=8)),
    ("llama_mha_fp4_dq", "llama_mha", "fp4", True, "float32", "float32",
     dict(target_modules="all-linear", r=2, lora_alpha=4)),
    ("llama_gqa_tied_nf4_dq", "llama_gqa_tied", "nf4", True, "float32", "float32",
     dict(target_modules=["k_proj", "o_proj", "gate_proj"], r=4, lora_alpha=4)),
    ("qwen2_fp4", "qwen2", "fp4", False, "float32", "float32",
     dict(target_modules=["q_proj", "k_proj", "v_proj", "up_proj"], r=4, lora_alpha=16, use_rslora=True)),
    ("qwen2_nf4_dq", "qwen2", "nf4", True, "float32", "float32", None),
    # bf16 weights quantized (the quant state records bf16), computing in bf16.
    ("llama_mha_nf4_bf16", "llama_mha", "nf4", False, "bfloat16", "bfloat16", None),
]
SEED = 9100


def check_native_agrees(model):
    """bnb's native CPU dequantizer equals the reference wherever blocks tile the rows."""
    checked = bugged = 0
    for name, m in model.named_modules():
        if not isinstance(m, bnb.nn.Linear4bit):
            continue
        qs = m.weight.quant_state
        ref = reference_dequantize_4bit(m.weight.data,
                                        F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset if qs.nested
                                        else qs.absmax, qs.blocksize, qs.quant_type, qs.shape, qs.dtype)
        if qs.shape[1] % qs.blocksize == 0:
            nat = F.dequantize_4bit(m.weight.data, qs)
            # Known, harmless departures: -0.0 for FP4's code 8 (== compares values) and
            # bf16 subnormals flushed to zero.
            bad = (nat != ref) & (ref.abs() >= torch.finfo(ref.dtype).tiny)
            assert not bad.any(), name
            checked += 1
        else:
            bugged += 1
    return checked, bugged


def make_case(parity_dir, out_root, idx, name, base_name, quant_type, double_quant, dtype, compute_dtype, lora):
    from peft import LoraConfig, get_peft_model

    t0 = time.time()
    case_dir = os.path.join(out_root, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    base_dir = os.path.join(parity_dir, base_name)
    src = load_file(os.path.join(base_dir, "reference.safetensors"))
    inputs = {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"]}

    model = load_4bit(base_dir, quant_type, double_quant, dtype, compute_dtype)
    # Native kernel first (before the override): where it is right, it agrees bit for bit.
    checked, bugged = check_native_agrees(model)
    n4 = reference_path(model)
    model.save_pretrained(os.path.join(case_dir, "hf4bit"))
    with torch.no_grad():
        logits = model(**inputs).logits.float().contiguous()
        # One short row: 5 rows of activations, the size our decode GEMV takes.
        short_ids = inputs["input_ids"][:1, :5].clone()
        short_logits = model(input_ids=short_ids).logits.float().contiguous()
    ref = dict(inputs, logits=logits, short_input_ids=short_ids, short_logits=short_logits)
    note = ""
    if lora is not None:
        torch.manual_seed(SEED + idx)
        cfg = LoraConfig(**lora, lora_dropout=0.0, init_lora_weights=False)
        peft_model = get_peft_model(model, cfg)
        peft_model.eval()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            peft_model.print_trainable_parameters()  # counts a 4-bit weight as 2 x its packed bytes
        with open(os.path.join(case_dir, "trainable.txt"), "w") as f:
            f.write(buf.getvalue().strip() + "\n")
        peft_model.save_pretrained(os.path.join(case_dir, "adapter"), safe_serialization=True)
        with torch.no_grad():
            ref["lora_logits"] = peft_model(**inputs).logits.float().contiguous()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                merged = peft_model.merge_and_unload()
            reference_path(merged)
            merged.eval()
            merged.save_pretrained(os.path.join(case_dir, "merged4bit"))
            ref["merged_logits"] = merged(**inputs).logits.float().contiguous()
        mask = inputs["attention_mask"].bool()
        effect = (ref["lora_logits"] - logits).abs()[mask].max().item()
        merge_err = (ref["merged_logits"] - ref["lora_logits"]).abs()[mask].max().item()
        assert effect > 1e-2, (name, effect)
        note = f" max|lora-base|={effect:.3g} max|merged-lora|={merge_err:.3g}"
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump({"base": base_name, "quant_type": quant_type, "double_quant": double_quant, "dtype": dtype,
                   "compute_dtype": compute_dtype, "lora": lora, "linear4bit": n4}, f, indent=2)
        f.write("\n")
    print(f"{name:24s} {n4} Linear4bit (native kernel == reference on {checked}; {bugged} with rows not "
          f"tiled by blocks not compared)"
          f"{note} ({time.time() - t0:.1f}s)")


def cmd_make(args):
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    for idx, case in enumerate(CASES):
        make_case(args.parity_dir, args.out_dir, idx, *case)
    print(f"done: {len(CASES)} cases in {time.time() - t0:.1f}s, bitsandbytes {bnb.__version__} -> {args.out_dir}")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def cmd_check(args):
    from peft import PeftModel
    import peft.peft_model as peft_model_mod

    torch.set_num_threads(2)
    data = load_file(args.outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    if "input_ids" not in inputs:
        fail(f"{args.outputs} holds no input_ids")
    expected = data["logits"]
    try:
        auto = auto_class(args.base)
        if args.quant_type:
            model = auto.from_pretrained(
                args.base, quantization_config=bnb_config(args.quant_type, args.double_quant, args.compute_dtype,
                                                          args.skip_modules),
                dtype=torch.float32, device_map="cpu", attn_implementation="eager")
        else:
            # A folder saved 4-bit: exactly what a user would type.
            model = auto.from_pretrained(args.base)
    except Exception as e:
        fail(f"loading {args.base} raised {type(e).__name__}: {str(e)[:2000]}")
    n4 = reference_path(model)
    if n4 == 0:
        fail(f"{args.base}: transformers loaded no Linear4bit layer")
    if args.adapter != "-":
        results = []
        orig = peft_model_mod.set_peft_model_state_dict

        def recording(*a, **kw):
            res = orig(*a, **kw)
            results.append(res)
            return res

        peft_model_mod.set_peft_model_state_dict = recording
        try:
            model = PeftModel.from_pretrained(model, args.adapter)
        finally:
            peft_model_mod.set_peft_model_state_dict = orig
        if len(results) != 1:
            fail(f"expected one adapter state dict load, saw {len(results)}")
        missing = [k for k in results[0].missing_keys if ".default." in k or k.endswith(".default")]
        if missing or results[0].unexpected_keys:
            fail(f"adapter keys: missing {sorted(missing)}, unexpected {sorted(results[0].unexpected_keys)}")
    model.eval()
    with torch.no_grad():
        actual = model(**inputs).logits.float()
    if actual.shape != expected.shape:
        fail(f"shape {tuple(actual.shape)} vs expected {tuple(expected.shape)}")
    diff = (actual - expected).abs()
    if "attention_mask" in inputs and diff.dim() == 3:
        diff = diff[inputs["attention_mask"].bool()]
    max_diff = diff.max().item()
    ok = max_diff <= args.tol
    print(f"{'OK' if ok else 'FAIL'}: logits{list(expected.shape)} max|diff|={max_diff:.3e} tol={args.tol:g} "
          f"({n4} Linear4bit)")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("parity_dir")
    mk.add_argument("out_dir")
    ck = sub.add_parser("check")
    ck.add_argument("base")
    ck.add_argument("adapter")
    ck.add_argument("outputs")
    ck.add_argument("--quant-type", choices=["nf4", "fp4"])
    ck.add_argument("--double-quant", action="store_true")
    ck.add_argument("--compute-dtype", default="float32", choices=sorted(DTYPES))
    ck.add_argument("--tol", type=float, default=1e-4)
    ck.add_argument("--skip-modules", nargs="*", default=None, help="llm_int8_skip_modules")
    args = ap.parse_args()
    cmd_make(args) if args.cmd == "make" else cmd_check(args)


if __name__ == "__main__":
    main()
