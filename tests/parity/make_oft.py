#!/usr/bin/env python
"""OFT references made by HF PEFT for tests/test_oft.cpp.

Usage:
  python tests/parity/make_oft.py make OUT_DIR
  (checking an adapter saved here: tests/parity/make_vera.py check BASE ADAPTER OUTPUTS)

make writes, as make_vera.py does: llama/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (PeftModel.save_pretrained with the
oft_R / oft_embedding_R weights set to N(0, 0.1) values (N(0, 0.3) with coft) instead of HF's zero init),
<case>/reference.safetensors (inputs, logits, merged_logits, and "rotation.<module path>",
HF's block-diagonal rotation of every adapted layer from get_delta_weight) and
<case>/case.json ({"base", "trainable"}).
Cases:
  oft_llama        HF's defaults (Cayley-Neumann, 5 terms) with oft_block_size 8 on q_proj,
                   v_proj and down_proj (48 inputs: 6 blocks)
  oft_llama_exact  r=4 (block size from the layer), exact Cayley, block_share, on
                   embed_tokens (an Embedding: its output rotates), o_proj and gate_proj
  oft_llama_coft   coft with eps 3.0 (the projection bites), oft_block_size 20 (HF adjusts it to
                   16 on 32 and on 48 inputs: a tie goes to the smaller), 7 Neumann terms, layers_to_transform [1]
GPT-2's Conv1D layers are not in any case: HF's OFT refuses them (so does ours, by name).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import make_base, make_case, pin_hash_seed  # noqa: E402

from peft import OFTConfig  # noqa: E402

CASES = [
    ("oft_llama", "llama", dict(oft_block_size=8, target_modules=["q_proj", "v_proj", "down_proj"])),
    ("oft_llama_exact", "llama",
     dict(r=4, oft_block_size=0, use_cayley_neumann=False, block_share=True,
          target_modules=["embed_tokens", "o_proj", "gate_proj"])),
    ("oft_llama_coft", "llama",
     dict(oft_block_size=20, coft=True, eps=3.0, num_cayley_neumann_terms=7, target_modules=["k_proj", "down_proj"],
          layers_to_transform=[1])),
]


def perturb(model, std):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "oft_R" in n or "oft_embedding_R" in n:
                p.normal_(0.0, std)


def rotations(model):
    out = {}
    for name, m in model.named_modules():
        for attr in ("oft_R", "oft_embedding_R"):
            d = getattr(m, attr, None)
            if isinstance(d, torch.nn.ModuleDict) and "default" in d:
                with torch.no_grad():
                    out["rotation." + name.removeprefix("base_model.model.")] = d["default"].get_weight().contiguous()
    return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):  # gpt2: its Conv1D layers must be refused by name
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        # COFT's ball is small: larger values, so that the projection moves them.
        std = 0.3 if kw.get("coft") else 0.1
        make_case(out, name, base, OFTConfig(**kw), lambda m: perturb(m, std), rotations)


if __name__ == "__main__":
    main()
