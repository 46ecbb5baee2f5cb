#!/usr/bin/env python
"""Reference safetensors file for dtype / layout parity with the C++ reader/writer.

Usage:
  python tests/parity/safetensors_ref.py write OUT.safetensors
  python tests/parity/safetensors_ref.py check FILE.safetensors

Tensors (shape [2,3,5], flat row-major index i = 0..29):
  F32, F16, BF16, F64 : (i - 7) * 0.375          (exact in every float type)
  I64                 : (i - 7) * 1000000007
  I32                 : (i - 7) * 100003
  I16                 : (i - 7) * 1009
  I8                  : i - 7
  U8                  : i * 8
  BOOL                : i % 3 == 0
  SCALAR_F32          : shape [], value 2.5
  EMPTY_F32           : shape [0, 4]
Metadata written: {"format": "pt", "source": "python"}; `check` requires key "source".
"""

import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SHAPE = (2, 3, 5)
N = 30


def expected():
    i64 = torch.arange(N, dtype=torch.int64)
    fl = (i64 - 7).to(torch.float64) * 0.375
    t = {
        "F32": fl.to(torch.float32),
        "F16": fl.to(torch.float16),
        "BF16": fl.to(torch.bfloat16),
        "F64": fl.clone(),
        "I64": (i64 - 7) * 1000000007,
        "I32": ((i64 - 7) * 100003).to(torch.int32),
        "I16": ((i64 - 7) * 1009).to(torch.int16),
        "I8": (i64 - 7).to(torch.int8),
        "U8": (i64 * 8).to(torch.uint8),
        "BOOL": (i64 % 3) == 0,
    }
    t = {k: v.reshape(SHAPE).contiguous() for k, v in t.items()}
    # exactness guard: every float value must round-trip through float64
    for k in ("F32", "F16", "BF16"):
        assert torch.equal(t[k].to(torch.float64), t["F64"]), k
    assert torch.equal(t["I32"].to(torch.int64), (i64 - 7).reshape(SHAPE) * 100003)
    assert torch.equal(t["I16"].to(torch.int64), (i64 - 7).reshape(SHAPE) * 1009)
    assert torch.equal(t["U8"].to(torch.int64), i64.reshape(SHAPE) * 8)
    t["SCALAR_F32"] = torch.tensor(2.5, dtype=torch.float32)
    t["EMPTY_F32"] = torch.zeros((0, 4), dtype=torch.float32)
    return t


def raw_bytes(t):
    t = t.contiguous()
    if t.numel() == 0:
        return b""
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def cmd_write(path):
    save_file(expected(), path, metadata={"format": "pt", "source": "python"})
    print(f"wrote {len(expected())} tensors to {path}")
    return 0


def cmd_check(path):
    exp = expected()
    errors = []
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if "source" not in meta:
            errors.append(f"metadata lacks 'source' key: {meta!r}")
        keys = set(f.keys())
        for name, want in exp.items():
            if name not in keys:
                errors.append(f"{name}: missing")
                continue
            got = f.get_tensor(name)
            if got.dtype != want.dtype:
                errors.append(f"{name}: dtype {got.dtype} != expected {want.dtype}")
                continue
            if tuple(got.shape) != tuple(want.shape):
                errors.append(f"{name}: shape {list(got.shape)} != expected {list(want.shape)}")
                continue
            if raw_bytes(got) != raw_bytes(want):
                errors.append(
                    f"{name}: bytes differ\n  got      {got.reshape(-1).tolist()}\n  expected {want.reshape(-1).tolist()}"
                )
        extra = sorted(keys - set(exp))
    if errors:
        for e in errors:
            print("MISMATCH", e)
        return 1
    msg = f"OK {len(exp)} tensors"
    if extra:
        msg += f" (plus {len(extra)} extra: {', '.join(extra)})"
    print(msg)
    return 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    return cmd_write(sys.argv[2]) if sys.argv[1] == "write" else cmd_check(sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
