#!/usr/bin/env python
"""BOFT references made by HF PEFT for tests/test_boft.cpp, and the check of adapters saved there.

Usage:
  python tests/parity/make_boft.py make OUT_DIR
  python tests/parity/make_boft.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, gpt2/ and vit/ (tiny random bases with
inputs.safetensors; vit/ a ViTForImageClassification with pixel_values) and per case <case>/adapter/ (PeftModel.save_pretrained with boft_R set to
N(0, 0.2) and boft_s to 1 + N(0, 0.1), and with bias="all" the biases moved by N(0, 0.1), instead
of HF's identity init), <case>/reference.safetensors (inputs, logits, merged_logits, and per
adapted layer "rotation.<module path>" / "scale.<module path>": HF's get_delta_weight, the
block-diagonal rotation [in, in] and boft_s) and <case>/case.json ({"base", "trainable"}).
Cases:
  boft_llama        boft_block_size 4 on q_proj, v_proj and down_proj (48 inputs: 12 blocks)
  boft_llama_num    boft_block_num 4 (block size from the layer: 8 and 12), boft_n_butterfly_factor 2
                    (HF without its CUDA kernel uses one factor, and so do we), boft_dropout 0.1 (off
                    in eval), layers_to_transform [1], on o_proj, gate_proj and up_proj
  boft_gpt2         GPT-2's lm_head (a Linear; its Conv1D layers are refused by HF and by us), bias="all"
  boft_vit          boft_block_size 8 on a ViT classifier's q_proj, v_proj and fc2 (40 inputs), with
                    modules_to_save ["classifier"]
HF's fbd_cuda extension is not built here: its loader is replaced by the `None` it returns when
the build fails (the PyTorch path HF falls back to), which skips one failing compile per layer.

check loads each ADAPTER on BASE with tests/parity/check_adapter.py's strict loader (any
missing or unexpected key fails) and compares the logits with OUTPUTS' (masked positions
ignored, tol 1e-4); all triples in one process; exit 1 if any fails.
"""

import os
import sys

if sys.argv[1:2] == ["make"] and os.environ.get("PYTHONHASHSEED") != "0":
    # make_vera.pin_hash_seed's re-exec (set-valued fields are saved in hash order), done
    # before the heavy imports so that they run once
    os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:],
              dict(os.environ, PYTHONHASHSEED="0"))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_vera  # noqa: E402
from make_vera import make_base, make_case  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, ViTConfig, ViTForImageClassification  # noqa: E402

import peft.tuners.boft.layer as boft_layer  # noqa: E402
from peft import BOFTConfig  # noqa: E402

boft_layer.get_fbd_cuda = lambda: None

CASES = [
    ("boft_llama", "llama", dict(boft_block_size=4, target_modules=["q_proj", "v_proj", "down_proj"])),
    ("boft_llama_num", "llama",
     dict(boft_block_size=0, boft_block_num=4, boft_n_butterfly_factor=2, boft_dropout=0.1,
          target_modules=["o_proj", "gate_proj", "up_proj"], layers_to_transform=[1])),
    ("boft_gpt2", "gpt2", dict(boft_block_size=8, target_modules=["lm_head"], bias="all")),
    ("boft_vit", "vit", dict(boft_block_size=8, target_modules=["q_proj", "v_proj", "fc2"], modules_to_save=["classifier"])),
]


def make_vit(out_dir):
    torch.manual_seed(9)
    cfg = ViTConfig(image_size=12, patch_size=4, num_channels=3, hidden_size=24, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=40, num_labels=5)
    ViTForImageClassification(cfg).save_pretrained(out_dir)
    save_file({"pixel_values": torch.randn(2, 3, 12, 12)}, os.path.join(out_dir, "inputs.safetensors"))


def load_base(base_dir):
    # make_vera's loader, for the ViT classifier too
    with open(os.path.join(base_dir, "config.json")) as f:
        vit = "ViTForImageClassification" in f.read()
    cls = ViTForImageClassification if vit else AutoModelForCausalLM
    return cls.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32).eval()


make_vera.load_base = load_base


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "boft_R" in n:
                p.normal_(0.0, 0.2)
            elif "boft_s" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def rotations(model):
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, boft_layer.BOFTLayer) and "default" in m.boft_R:
            with torch.no_grad():
                rot, s = m.get_delta_weight("default")
            path = name.removeprefix("base_model.model.")
            out["rotation." + path] = rot.contiguous()
            out["scale." + path] = s.contiguous()
    return out


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    make_vit(os.path.join(out, "vit"))
    for name, base, kw in CASES:
        make_case(out, name, base, BOFTConfig(**kw), perturb, rotations)


def check(triples):
    from check_adapter import load_model

    failed = 0
    for base, adapter, outputs in triples:
        data = load_file(outputs)
        inputs = {k: data[k] for k in ("input_ids", "attention_mask", "pixel_values") if k in data}
        model, problems = load_model(base, adapter)
        if problems:
            print(f"FAIL {adapter}: " + "; ".join(problems))
            failed += 1
            continue
        with torch.no_grad():
            got = model(**inputs).logits.float()
        d = (got - data["logits"]).abs()
        if "attention_mask" in inputs:
            d = d[inputs["attention_mask"].bool()]
        diff = d.max().item()
        ok = diff <= 1e-4
        failed += not ok
        print(f"{'OK' if ok else 'FAIL'} {adapter}: max|logits diff| = {diff:.3e} (tol 1e-4)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check" and (len(sys.argv) - 2) % 3 == 0:
        torch.set_num_threads(2)
        args = sys.argv[2:]
        check([args[i:i + 3] for i in range(0, len(args), 3)])
    else:
        sys.exit(__doc__)
