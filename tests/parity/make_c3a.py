#!/usr/bin/env python
"""C3A references made by HF PEFT for tests/test_c3a.cpp, and the check of adapters saved there.

Usage:
  python tests/parity/make_c3a.py make OUT_DIR
  python tests/parity/make_c3a.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with inputs.safetensors)
and per case <case>/adapter/ (PeftModel.save_pretrained; c3a_kernel as HF's init_weights drew
it, and with bias="all" the biases moved by N(0, 0.1)), <case>/reference.safetensors (inputs,
logits, merged_logits; per adapted layer "delta.<module path>", HF's get_delta_weight [out, in];
"grad_weights" R and "grad.<path>", the gradient of sum(logits * R * mask) with respect to the
kernel of one layer whose gradient HF computes right: no C3A layer lies after it, so HF's
BlockCircularConvolution.backward, whose input gradient is wrong for block sizes > 2, is not
on its path) and <case>/case.json ({"base", "trainable"}).
Cases:
  c3a_llama          block_size 16 with block_size_pattern {"down_proj": 8 (regex rule),
                     "model.layers.0.self_attn.q_proj": 4 (exact-name rule)}, init "gaussian",
                     on q_proj, v_proj (32 -> 16) and down_proj (48 -> 32)
  c3a_llama_kaiming  block_size 8, init "kaiming_uniform", layers_to_transform [1], on o_proj,
                     gate_proj and up_proj
  c3a_gpt2           GPT-2's lm_head (a Linear, tied to wte; its Conv1D layers are refused by
                     HF and by us), block_size 16, init_weights false (xavier_uniform), bias "all"

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
from make_vera import make_base, make_case  # noqa: E402

from peft import C3AConfig  # noqa: E402
from peft.tuners.c3a.layer import C3ALayer  # noqa: E402

CASES = [
    ("c3a_llama", "llama", "model.layers.1.mlp.down_proj",
     dict(block_size=16, block_size_pattern={"down_proj": 8, "model.layers.0.self_attn.q_proj": 4},
          init_weights="gaussian", target_modules=["q_proj", "v_proj", "down_proj"])),
    ("c3a_llama_kaiming", "llama", "model.layers.1.mlp.up_proj",
     dict(block_size=8, init_weights="kaiming_uniform", target_modules=["o_proj", "gate_proj", "up_proj"],
          layers_to_transform=[1])),
    ("c3a_gpt2", "gpt2", "lm_head", dict(block_size=16, init_weights=False, target_modules=["lm_head"], bias="all")),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def references(out, base, grad_path):
    """extra(model) for make_case: HF's delta weights and one kernel gradient."""
    def extra(model):
        tensors = {}
        for name, m in model.named_modules():
            if isinstance(m, C3ALayer) and "default" in m.c3a_kernel:
                with torch.no_grad():
                    tensors["delta." + name.removeprefix("base_model.model.")] = m.get_delta_weight("default").contiguous()
        inputs = load_file(os.path.join(out, base, "inputs.safetensors"))
        model.eval()
        model.zero_grad()
        logits = model(**inputs).logits
        g = torch.Generator().manual_seed(5)
        weights = torch.randn(logits.shape, generator=g) * inputs["attention_mask"][..., None]
        (logits * weights).sum().backward()
        kernel = model.base_model.model.get_submodule(grad_path).c3a_kernel["default"]
        tensors["grad_weights"] = weights.contiguous()
        tensors["grad." + grad_path] = kernel.grad.clone().contiguous()
        model.zero_grad()
        return tensors
    return extra


def make(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, grad_path, kw in CASES:
        make_case(out, name, base, C3AConfig(**kw), perturb, references(out, base, grad_path))


def check(triples):
    from check_adapter import load_model

    failed = 0
    for base, adapter, outputs in triples:
        data = load_file(outputs)
        inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
        model, problems = load_model(base, adapter)
        if problems:
            print(f"FAIL {adapter}: " + "; ".join(problems))
            failed += 1
            continue
        with torch.no_grad():
            got = model(**inputs).logits.float()
        d = (got - data["logits"]).abs()[inputs["attention_mask"].bool()]
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
