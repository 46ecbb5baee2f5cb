#!/usr/bin/env python
"""SHADOW (ShadowPEFT) references made by HF PEFT for tests/test_shadow.cpp.

Usage: python tests/parity/make_shadow.py make OUT_DIR
       python tests/parity/make_shadow.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (every trainable tensor moved off HF's init:
W_up drawn N(0, 0.3²), the rest nudged), <case>/reference.safetensors (inputs, logits, no
merged logits: HF refuses to merge SHADOW; "s0": HF's initial shadow state of that forward;
"labels" (input_ids, padding -100), "loss_with_shadow" (HF's loss with them, the shadow
head's auxiliary loss included) and, for CAUSAL_LM cases, "shadow_loss" (that auxiliary
loss, unweighted);
"init.<file key>": the adapter file HF's get_peft_model makes right after
torch.manual_seed(case.json's "seed"), to check that a new adapter draws HF's values) and
case.json ({"base", "trainable", "seed"}).
check: HF loads each of our adapters strictly with our logits.
Cases:
  shadow_llama       HF's defaults (every decoder block, r 8, shadow_alpha 0.1, a one-layer
                     mirror fed the base's embeddings: no embed_tokens in the file),
                     task_type CAUSAL_LM
  shadow_llama_opts  a Llama with biases, block 1 only (regex target), r 4, shadow_alpha
                     0.7, update_hidden_size 12, init_weights false, a two-layer mirror of
                     width 16 (2 heads, intermediate 24): its own embed_tokens and a
                     projection 16 -> 32
  shadow_gpt2        GPT-2, r 6, update_hidden_size 10 (the mirror keeps and files its wte)
  shadow_gpt2_own    GPT-2, share_embeddings false (the mirror embeds input_ids itself),
                     two mirror layers, shadow_alpha 0.3, target_modules ["h.0", "h.1"]
(HF's layers_to_transform cannot pick blocks: its layer-index pattern wants a dot after
the index, which a block's own name lacks.)
It also checks that HF refuses to merge SHADOW and refuses non-mirror overrides.
"""

import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import ShadowConfig, get_peft_model, get_peft_model_state_dict  # noqa: E402

SEED = 5

CASES = [
    ("shadow_llama", "llama", dict(task_type="CAUSAL_LM")),
    ("shadow_llama_opts", "llama_bias",
     dict(target_modules=r".*\.layers\.1$", r=4, shadow_alpha=0.7, update_hidden_size=12, init_weights=False,
          shadow_num_hidden_layers=2, shadow_hidden_size=16, shadow_num_attention_heads=2,
          shadow_intermediate_size=24)),
    ("shadow_gpt2", "gpt2", dict(r=6, update_hidden_size=10, task_type="CAUSAL_LM")),
    ("shadow_gpt2_own", "gpt2",
     dict(r=4, shadow_alpha=0.3, share_embeddings=False, shadow_num_hidden_layers=2, target_modules=["h.0", "h.1"])),
]


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "shadow_up" in n:
                p.normal_(0, 0.3)
            else:
                scale = p.std().item() if p.numel() > 1 and p.std().item() > 0 else 1.0
                p.add_(0.2 * scale * torch.randn_like(p))


def init_file(base_dir, config):
    base = load_base(base_dir)
    torch.manual_seed(SEED)
    model = get_peft_model(base, copy.deepcopy(config))
    return {"init." + k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def extras(base_dir, config):
    def extra(model):
        out = init_file(base_dir, config)
        from safetensors.torch import load_file
        inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
        model.eval()
        with torch.no_grad():
            model(**inputs)
            out["s0"] = model.base_model._seed_shadow_state.detach().float().contiguous()
            # With labels (padding -100): HF's loss adds auxiliary_loss_weight times the
            # shadow head's loss (CAUSAL_LM only); "shadow_loss" is that unweighted loss.
            labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
            output = model(**inputs, labels=labels)
        out["labels"] = labels.contiguous()
        out["loss_with_shadow"] = output.loss.detach().float().reshape(1)
        if getattr(output, "shadow_loss", None) is not None:
            out["shadow_loss"] = output.shadow_loss.float().reshape(1)
        return out
    return extra


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    import json
    for name, base, kw in CASES:
        config = ShadowConfig(**kw)
        make_case(out, name, base, config, perturb, extras(os.path.join(out, base), config), merge=False)
        with open(os.path.join(out, name, "case.json")) as f:
            info = json.load(f)
        info["seed"] = SEED
        with open(os.path.join(out, name, "case.json"), "w") as f:
            json.dump(info, f, indent=1)
    model = get_peft_model(load_base(os.path.join(out, "llama")), ShadowConfig())
    try:
        model.merge_and_unload()
    except NotImplementedError as e:
        print(f"llama: HF refuses to merge SHADOW ({str(e)[:50]}...)")
    else:
        raise AssertionError("HF's SHADOW now merges: update test_shadow")
    try:
        ShadowConfig(shadow_model="some/model", shadow_hidden_size=16)
    except ValueError as e:
        print(f"HF refuses mirror overrides with a checkpoint ({str(e)[:50]}...)")


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)
