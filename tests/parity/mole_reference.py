#!/usr/bin/env python
"""MoLE (mixture of LoRA experts) references for tests/test_mole.cpp, in plain PyTorch.

Usage: python tests/parity/mole_reference.py OUT_DIR

Writes:
  base/                 a tiny random LlamaForCausalLM (transformers' config classes)
  experts/e0, e1, e2    LoRA adapters made by HF PEFT on it (random A and B):
                          e0: q_proj, v_proj      r=4, alpha=8
                          e1: q_proj, down_proj   r=2, alpha=4, rsLoRA
                          e2: k_proj, v_proj      r=4, alpha=16
  cases/<case>/adapter/ a MOLE adapter in our format referencing the experts by relative
                        path, with random routers (mole_router.weight) we export here
  cases/<case>/reference.safetensors
                        input_ids, logits of the equation below, and aux_loss: the mean
                        over the routed layers of transformers' load_balancing_loss_func
                        on each layer's router logits, times router_aux_loss_coef
  bad/...               inputs for the error tests (an expert for another hidden size, an
                        X-LoRA config)

The equation, on every Linear layer some expert adapts (x: the layer input):
  logits = x W_r^T;  p = softmax(logits);  keep the top_k largest p, renormalize (Mixtral)
  out = base(x) + sum_i g_i * scaling_i * B_i A_i x     (experts absent from a layer add 0)
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
from transformers.utils import logging as hf_logging

from peft import LoraConfig, get_peft_model

hf_logging.set_verbosity_error()

EXPERTS = {
    "e0": dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8),
    "e1": dict(target_modules=["q_proj", "down_proj"], r=2, lora_alpha=4, use_rslora=True),
    "e2": dict(target_modules=["k_proj", "v_proj"], r=4, lora_alpha=16),
}
CASES = {"top1": 1, "top2": 2, "dense": 3}
AUX_COEF = 0.5


def tiny_llama(hidden, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def make_expert(base_dir, out_dir, hidden, kw, seed):
    model = tiny_llama(hidden, 0)
    model.load_state_dict(LlamaForCausalLM.from_pretrained(base_dir).state_dict())
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **kw))
    with torch.no_grad():  # larger deltas, so that routing visibly matters
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.mul_(8.0)
    peft_model.save_pretrained(out_dir)


def scaling(kw):
    return kw["lora_alpha"] / (kw["r"] ** 0.5 if kw.get("use_rslora") else kw["r"])


def main(out):
    base_dir = os.path.join(out, "base")
    base = tiny_llama(32, 0)
    base.save_pretrained(base_dir)
    for i, (name, kw) in enumerate(EXPERTS.items()):
        make_expert(base_dir, os.path.join(out, "experts", name), 32, kw, 10 + i)

    # Expert factors by layer path, in expert order.
    factors = {}
    for name, kw in EXPERTS.items():
        t = load_file(os.path.join(out, "experts", name, "adapter_model.safetensors"))
        for k, a in t.items():
            if k.endswith(".lora_A.weight"):
                path = k[len("base_model.model."):-len(".lora_A.weight")]
                b = t[k.replace("lora_A", "lora_B")]
                factors.setdefault(path, {})[name] = (a, b, scaling(kw))
    paths = sorted(factors)
    modules = dict(base.named_modules())
    torch.manual_seed(123)
    routers = {p: torch.randn(len(EXPERTS), modules[p].in_features) for p in paths}
    input_ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(5))

    for case, top_k in CASES.items():
        router_logits = []

        def hook(path):
            def fn(mod, args, output):
                x = args[0]
                logits = x @ routers[path].T
                router_logits.append(logits.reshape(-1, logits.shape[-1]))
                p = torch.softmax(logits, dim=-1)
                top, idx = torch.topk(p, top_k, dim=-1)
                g = torch.zeros_like(p).scatter(-1, idx, top / top.sum(-1, keepdim=True))
                delta = torch.zeros_like(output)
                for i, name in enumerate(EXPERTS):
                    if name in factors[path]:
                        a, b, s = factors[path][name]
                        delta = delta + g[..., i:i + 1] * s * ((x @ a.T) @ b.T)
                return output + delta
            return fn

        handles = [modules[p].register_forward_hook(hook(p)) for p in paths]
        with torch.no_grad():
            logits = base(input_ids=input_ids).logits
        for h in handles:
            h.remove()
        layer_losses = [load_balancing_loss_func((l,), len(EXPERTS), top_k) for l in router_logits]
        aux = AUX_COEF * torch.stack(layer_losses).mean()

        case_dir = os.path.join(out, "cases", case)
        adapter = os.path.join(case_dir, "adapter")
        os.makedirs(adapter, exist_ok=True)
        cfg = {"peft_type": "MOLE", "experts": {n: f"../../../experts/{n}" for n in EXPERTS}, "top_k": top_k,
               "router_aux_loss_coef": AUX_COEF, "task_type": "CAUSAL_LM"}
        with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        save_file({f"base_model.model.{p}.mole_router.weight": routers[p].contiguous() for p in paths},
                  os.path.join(adapter, "adapter_model.safetensors"), metadata={"format": "pt"})
        save_file({"input_ids": input_ids, "logits": logits.contiguous(), "aux_loss": aux.reshape(())},
                  os.path.join(case_dir, "reference.safetensors"))

    # An expert made on another base (hidden 48): same module names, other shapes.
    other = os.path.join(out, "bad", "other_base")
    tiny_llama(48, 1).save_pretrained(other)
    make_expert(other, os.path.join(out, "bad", "wrong_shape"), 48, EXPERTS["e0"], 20)
    # An X-LoRA adapter's config, as HF PEFT's XLoraConfig writes one.
    xlora = os.path.join(out, "bad", "xlora")
    os.makedirs(xlora, exist_ok=True)
    try:
        from peft import XLoraConfig
        xc = XLoraConfig(task_type="CAUSAL_LM", hidden_size=32,
                         adapters={n: os.path.join(out, "experts", n) for n in EXPERTS})
        xc.save_pretrained(xlora)
    except Exception:  # older PEFT without X-LoRA: the fields that name it suffice
        with open(os.path.join(xlora, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "XLORA", "hidden_size": 32, "adapters": {}}, f)
    save_file({"internal_xlora_classifier.layers.0.weight": torch.zeros(3, 32)},
              os.path.join(xlora, "adapter_model.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
