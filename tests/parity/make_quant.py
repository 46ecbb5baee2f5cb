#!/usr/bin/env python
"""4-bit quantization fixtures for tests/test_quant.cpp, made by bitsandbytes' CPU path.

Usage: python tests/parity/make_quant.py OUT_DIR

OUT_DIR/cases.safetensors   for each case <c> (metadata "cases": JSON list of
                            {name, quant_type, blocksize, double_quant, dtype, shape,
                            native}):
  <c>.x                     the input weight (fp32, bf16 or fp16)
  <c>.packed                bnb.functional.quantize_4bit's packed codes, uint8 [ceil(n/2), 1]
  <c>.absmax                its absmax (fp32; uint8 codes with double quant)
  <c>.nested_absmax, <c>.nested_code, <c>.offset     double quant only (fp32)
  <c>.scales                the per-block fp32 scales bnb dequantizes with
                            (nested: dequantize_blockwise(absmax) + offset)
  <c>.deq                   bnb's reference dequantization (backends/default
                            _dequantize_4bit_compute, eager), in the input dtype
  <c>.deq_native            F.dequantize_4bit's output on this machine (libbitsandbytes_cpu),
                            reshaped to the weight's shape; native says how it differs from
                            <c>.deq: same (bit for bit), row_absmax, signed_zero,
                            subnormal_flush (see native_note below) or other.
  blockwise8.x / .codes / .absmax / .deq      bnb's 8-bit dynamic blockwise quantizer
                            (blocksize 256, the one double quantization uses) on its own
OUT_DIR/state_dict.safetensors   bnb.nn.Linear4bit state dicts (as transformers saves
                            them), prefixes lin_nf4_dq. / lin_fp4. / lin_nf4_bs128., and
                            the float weights they were made from under src.<prefix>weight.

native_note: bitsandbytes' native CPU 4-bit dequantizer indexes absmax by row
(row * (in // blocksize) + col // blocksize) on AVX-512 machines when in % 16 == 0, which
is wrong when the blocks do not tile the rows (in % blocksize != 0); it also writes -0.0
for FP4 code 8 in its scalar path, and flushes subnormal bf16 results with AVX512-BF16.
The reference (_dequantize_4bit_compute) has none of these; the C++ follows it.
"""

import json
import logging
import os
import sys
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import torch  # noqa: E402

# bnb wraps its portable kernels in torch.compile; eager runs the same fp32 ops without
# needing a compiler or minutes of Inductor per shape.
torch._dynamo.config.disable = True

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from bitsandbytes.backends.utils import _get_4bit_code  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}

# (blocksize, shape): numel a multiple of the block or not, odd numel, rows that blocks do
# not tile, more than 256 blocks (several nested blocks, the last one partial).
GEOMETRIES = [
    (64, (3, 37)),
    (64, (1000,)),
    (64, (16, 128)),
    (32, (5, 48)),
    (128, (7, 96)),
    (256, (9, 100)),
    (4096, (3, 5001)),
    (64, (300, 130)),
]


def special_blocks(x, blocksize, dtype):
    """Overwrite some blocks: all zero, tiny (absmax below bnb's 1e-38 clamp), large."""
    flat = x.view(-1)
    n = flat.numel()
    blocks = -(-n // blocksize)
    tiny = {torch.float32: 3e-39, torch.bfloat16: 3e-39, torch.float16: 2e-7}[dtype]
    large = {torch.float32: 1e30, torch.bfloat16: 1e30, torch.float16: 2e4}[dtype]
    for b, scale in ((1, 0.0), (2, tiny), (3, large), (4, 1e-38 if dtype != torch.float16 else 1e-6)):
        if b < blocks - 1:
            seg = flat[b * blocksize:(b + 1) * blocksize]
            seg.copy_((torch.randn(seg.numel()) * scale).to(dtype))
    if n % blocksize:  # the short last block, which bnb scales apart: zero or tiny
        rem = flat[(blocks - 1) * blocksize:]
        rem.copy_((torch.randn(rem.numel()) * (0.0 if n % 2 else tiny)).to(dtype))
    return x


def tie_values(quant_type):
    """Inputs on and one ulp around every midpoint bnb compares with (blocksize 32): blocks
    with absmax 1 (exact reciprocal) and 3 (x * (1/3) and x / 3 round differently), and a
    remainder block with absmax 2, which bnb divides by (2m / 2 == m: exact ties)."""
    code = _get_4bit_code(quant_type, "cpu")
    mids = (lambda s: (s[:-1] + s[1:]) / 2)(torch.sort(code).values)

    def around(t):
        return [torch.nextafter(t, torch.tensor(-9.0)), t, torch.nextafter(t, torch.tensor(9.0))]

    ones = torch.stack([v for m in mids for v in around(m)])            # 45 values
    threes = torch.stack([v for m in mids for v in around(m * 3)])      # 45 values
    z = torch.zeros(17)
    blocks = [torch.cat([torch.ones(1), ones[:31]]), torch.cat([ones[31:], torch.ones(1), z]),
              torch.cat([torch.full((1,), 3.0), threes[:31]]), torch.cat([threes[31:], torch.full((1,), 3.0), z]),
              torch.cat([torch.full((1,), 2.0), 2 * ones[:30]])]
    return torch.cat(blocks).float()


def reference_dequant(packed, st):
    scales = st.absmax
    if st.nested:
        scales = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
    code = _get_4bit_code(st.quant_type, "cpu")
    out = _dequantize_4bit_compute(packed.reshape(-1), scales, code, st.blocksize, st.shape, st.dtype)
    return out.reshape(st.shape), scales


def native_difference(native, ref, shape, blocksize):
    """How libbitsandbytes_cpu's dequantization differs from bnb's reference (native_note)."""
    bits = BITS[ref.dtype]
    diff = native.view(bits) != ref.view(bits)
    if not diff.any():
        return "same"
    if len(shape) >= 2 and shape[-1] % blocksize and shape[-1] % 16 == 0:
        return "row_absmax"
    n, r = native[diff].float(), ref[diff].float()
    if bool((n == r).all()):
        return "signed_zero"
    if bool(((n == r) | ((n == 0) & (r.abs() < 1.1754944e-38))).all()):
        return "subnormal_flush"
    return "other"


def add_case(tensors, cases, name, x, quant_type, blocksize, double_quant):
    packed, st = F.quantize_4bit(x, blocksize=blocksize, compress_statistics=double_quant, quant_type=quant_type)
    deq, scales = reference_dequant(packed, st)
    native = F.dequantize_4bit(packed, st).reshape(st.shape)
    note = native_difference(native, deq, x.shape, blocksize)
    tensors.update({f"{name}.x": x, f"{name}.packed": packed, f"{name}.absmax": st.absmax,
                    f"{name}.scales": scales.float(), f"{name}.deq": deq, f"{name}.deq_native": native})
    if double_quant:
        tensors.update({f"{name}.nested_absmax": st.state2.absmax, f"{name}.nested_code": st.state2.code,
                        f"{name}.offset": st.offset.reshape(1).float()})
    cases.append({"name": name, "quant_type": quant_type, "blocksize": blocksize, "double_quant": double_quant,
                  "dtype": str(x.dtype).replace("torch.", ""), "shape": list(x.shape), "native": note})


def make_cases(out):
    tensors, cases = {}, []
    torch.manual_seed(0)
    for quant_type in ("nf4", "fp4"):
        for dq in (False, True):
            for dname, dtype in DTYPES.items():
                for blocksize, shape in GEOMETRIES:
                    x = (torch.randn(shape) * 0.05).to(dtype)
                    x = special_blocks(x, blocksize, dtype)
                    name = f"{quant_type}_{'dq' if dq else 'plain'}_{dname}_bs{blocksize}_{'x'.join(map(str, shape))}"
                    add_case(tensors, cases, name, x, quant_type, blocksize, dq)
        # Midpoint ties (fp32 holds them exactly), with and without the remainder block.
        ties = tie_values(quant_type)
        add_case(tensors, cases, f"{quant_type}_ties", ties.clone(), quant_type, 32, False)
        add_case(tensors, cases, f"{quant_type}_ties_odd", ties[:-1].clone(), quant_type, 32, True)
        # Many blocks: the parallel loops and 64 nested blocks.
        big = (torch.randn(1024, 1024) * 0.02).to(torch.bfloat16)
        add_case(tensors, cases, f"{quant_type}_big", big, quant_type, 64, True)
    # NaN and inf poison their block only (no double quant: the mean would be NaN).
    poison = torch.randn(4, 64)
    poison[1, 5] = float("nan")
    poison[2, 7] = float("inf")
    poison[3, 9] = -float("inf")
    for quant_type in ("nf4", "fp4"):
        add_case(tensors, cases, f"{quant_type}_nan_inf", poison.clone(), quant_type, 64, False)
    make_blockwise8(tensors)
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}  # unshare (scales is absmax)
    save_file(tensors, os.path.join(out, "cases.safetensors"), metadata={"cases": json.dumps(cases)})
    return cases


def make_blockwise8(tensors):
    """bnb's 8-bit dynamic quantizer (libbitsandbytes_cpu, blocksize 256), which double
    quantization runs on the absmax: random blocks of many scales, an all-zero block, and
    blocks of absmax 1 holding every dynamic-map midpoint and its neighbours."""
    mids = (lambda c: (c[:-1] + c[1:]) * 0.5)(F.create_dynamic_map())
    near = torch.cat([torch.nextafter(mids, torch.tensor(-2.0)), mids, torch.nextafter(mids, torch.tensor(2.0))])
    near = torch.cat([near, torch.zeros(-near.numel() % 255)]).view(-1, 255)
    ties = torch.cat([torch.ones(near.shape[0], 1), near], dim=1).view(-1)
    rand = torch.randn(64, 256) * torch.logspace(-6, 3, 64).view(-1, 1)
    rand[5] = 0
    x = torch.cat([ties, rand.view(-1), torch.randn(77)])
    codes, st = F.quantize_blockwise(x, blocksize=256)
    tensors.update({"blockwise8.x": x, "blockwise8.codes": codes, "blockwise8.absmax": st.absmax,
                    "blockwise8.deq": F.dequantize_blockwise(codes, st)})


def linear4bit_state(prefix, weight, quant_type, double_quant, blocksize, out):
    lin = bnb.nn.Linear4bit(weight.shape[1], weight.shape[0], bias=True, compute_dtype=weight.dtype,
                            compress_statistics=double_quant, quant_type=quant_type)
    lin.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, blocksize=blocksize,
                                   compress_statistics=double_quant, quant_type=quant_type)
    lin = lin.to("cpu")  # quantizes
    for k, v in lin.state_dict().items():
        out[prefix + k] = v.detach().clone()
    out["src." + prefix + "weight"] = weight


def make_state_dicts(out):
    torch.manual_seed(1)
    tensors = {}
    linear4bit_state("lin_nf4_dq.", (torch.randn(40, 96) * 0.1).to(torch.bfloat16), "nf4", True, 64, tensors)
    linear4bit_state("lin_fp4.", (torch.randn(24, 64) * 0.1).to(torch.float16), "fp4", False, 64, tensors)
    linear4bit_state("lin_nf4_bs128.", torch.randn(700, 37) * 0.1, "nf4", True, 128, tensors)
    save_file(tensors, os.path.join(out, "state_dict.safetensors"))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)
    cases = make_cases(out)
    make_state_dicts(out)
    notes = {}
    for c in cases:
        notes[c["native"]] = notes.get(c["native"], 0) + 1
    print(f"wrote {out}: {len(cases)} cases, bitsandbytes {bnb.__version__}; native CPU dequantizer "
          f"against bnb's reference: {notes}")


if __name__ == "__main__":
    main()
