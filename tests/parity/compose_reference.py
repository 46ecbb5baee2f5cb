#!/usr/bin/env python
"""Plain-PyTorch reference for run-time adapter compositions (docs/COMPOSITION.md).

Usage:
  python tests/parity/compose_reference.py make OUT_DIR
      writes OUT_DIR/llama, a tiny random LlamaForCausalLM (transformers' LlamaConfig, fp32), and
      one folder per case (stack_bottleneck, stack_lora, fuse_mixed, average_trained,
      adapter_fusion): random adapters written in peft-cpp's format (LoRA as HF PEFT's), a
      composition_config.json (+ composition_model.safetensors with random fusion tensors) and
      reference.safetensors (input_ids, attention_mask, logits of the "ref" computation below).
  python tests/parity/compose_reference.py ref BASE_DIR COMPOSITION_DIR INPUTS.safetensors OUT.safetensors
      BASE_DIR: the transformers checkpoint; COMPOSITION_DIR: composition_config.json,
      composition_model.safetensors (when the composition has tensors) and one adapter folder per
      name in "adapters" (adapter_config.json + adapter_model.safetensors); INPUTS: input_ids,
      attention_mask. Writes "logits" (float32), computed in float64 with forward hooks on the
      transformers model. No peft-cpp or HF PEFT code is used.

Adapters (each gives a change d_i(x, h) of a module's output h for its input x):
  LORA        d = (x A^T B^T) * lora_alpha / r   (plain LoRA: no DoRA, no rsLoRA)
  BOTTLENECK  serial (houlsby, pfeiffer): d = s * up(act(down(h)));  parallel: d = s * up(act(down(x)))
Compositions, for each module that any named adapter targets (adapters absent there are skipped):
  stack           h_0 = h, h_i = h_{i-1} + d_i(x, h_{i-1}), out = h_n
  average / fuse  out = h + sum_i w_i d_i(x, h)     (w from "composition.weights" when trained,
                                                     else the config's weights; average: 1/n)
  adapter_fusion  z_i = d_i(x, h); q = h Q^T + b_Q; k_i = z_i K^T + b_K; v_i = z_i V^T;
                  s = softmax_i(q . k_i / T); out = h + sum_i s_i v_i
                  (tensors "base_model.model.<module>.adapter_fusion.{query,key}.{weight,bias}",
                  ".adapter_fusion.value.weight")
Any tensor in the files that is not used is an error (exit 1).
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tuner_reference import activation, expand_targets, load_base  # noqa: E402

DT = torch.float64
PREFIX = "base_model.model."


class Tensors:
    def __init__(self, path):
        self.t = {k: v.to(DT) for k, v in load_file(path).items()} if os.path.exists(path) else {}
        self.path = path
        self.used = set()

    def get(self, key):
        if key not in self.t:
            raise SystemExit(f"{self.path} lacks {key!r}")
        self.used.add(key)
        return self.t[key]

    def check_all_used(self):
        left = sorted(set(self.t) - self.used)
        if left:
            raise SystemExit(f"{self.path}: unused tensors {left[:3]}")


def adapter_deltas(model, adapter_dir):
    """{module path: d(x, h)} for one adapter folder."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    t = Tensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    out = {}
    for path in expand_targets(model, cfg["target_modules"], False):
        p = PREFIX + path + "."
        if cfg["peft_type"] == "LORA":
            if cfg.get("use_dora") or cfg.get("use_rslora"):
                raise SystemExit("plain LoRA only")
            a, b = t.get(p + "lora_A.weight"), t.get(p + "lora_B.weight")
            scale = cfg["lora_alpha"] / cfg["r"]
            out[path] = lambda x, h, a=a, b=b, scale=scale: (x @ a.T @ b.T) * scale
        elif cfg["peft_type"] == "BOTTLENECK":
            dw, db = t.get(p + "adapter_down.weight"), t.get(p + "adapter_down.bias")
            uw, ub = t.get(p + "adapter_up.weight"), t.get(p + "adapter_up.bias")
            act, s, par = activation(cfg["non_linearity"]), cfg["scaling"], cfg["adapter_type"] == "parallel"
            out[path] = lambda x, h, dw=dw, db=db, uw=uw, ub=ub, act=act, s=s, par=par: s * (
                act((x if par else h) @ dw.T + db) @ uw.T + ub)
        else:
            raise SystemExit(f"unsupported peft_type {cfg['peft_type']}")
    t.check_all_used()
    return out


def combiner(kind, cfg, comp, path, deltas):
    """out(x, h) for one module; deltas: [(adapter index, d)] in composition order."""
    if kind == "stack":
        def f(x, h):
            for _, d in deltas:
                h = h + d(x, h)
            return h
        return f
    if kind in ("average", "fuse"):
        n = len(cfg["adapters"])
        if cfg.get("trainable_weights"):
            w = comp.get("composition.weights")
        elif kind == "fuse":
            w = torch.tensor(cfg["weights"], dtype=DT)
        else:
            w = torch.full((n,), 1.0 / n, dtype=DT)
        return lambda x, h: h + sum(w[i] * d(x, h) for i, d in deltas)
    if kind == "adapter_fusion":
        p = PREFIX + path + ".adapter_fusion."
        qw, qb = comp.get(p + "query.weight"), comp.get(p + "query.bias")
        kw, kb = comp.get(p + "key.weight"), comp.get(p + "key.bias")
        vw = comp.get(p + "value.weight")
        temp = cfg.get("temperature", 1.0)

        def f(x, h):
            z = torch.stack([d(x, h) for _, d in deltas], dim=-2)  # [..., n, d]
            q = h @ qw.T + qb
            k = z @ kw.T + kb
            s = torch.softmax((k * q.unsqueeze(-2)).sum(-1) / temp, dim=-1)
            return h + (s.unsqueeze(-1) * (z @ vw.T)).sum(-2)
        return f
    raise SystemExit(f"unknown composition {kind!r}")


def reference(base_dir, comp_dir, inputs_path, out_path):
    model = load_base(base_dir).to(DT)
    with open(os.path.join(comp_dir, "composition_config.json")) as f:
        cfg = json.load(f)
    comp = Tensors(os.path.join(comp_dir, "composition_model.safetensors"))
    per_module = {}
    for i, name in enumerate(cfg["adapters"]):
        for path, d in adapter_deltas(model, os.path.join(comp_dir, name)).items():
            per_module.setdefault(path, []).append((i, d))
    modules = dict(model.named_modules())
    for path, deltas in per_module.items():
        f = combiner(cfg["composition"], cfg, comp, path, deltas)
        modules[path].register_forward_hook(lambda mod, inp, out, f=f: f(inp[0], out))
    comp.check_all_used()
    inputs = {k: v for k, v in load_file(inputs_path).items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits
    save_file({"logits": logits.float().contiguous()}, out_path)


def write_adapter(path, cfg, tensors):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(path, "adapter_model.safetensors"),
              metadata={"format": "pt"})


def random_lora(model, gen, targets, r, alpha):
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "task_type": "CAUSAL_LM"}
    t = {}
    for path in expand_targets(model, targets, False):
        m = dict(model.named_modules())[path]
        t[PREFIX + path + ".lora_A.weight"] = torch.randn(r, m.in_features, generator=gen) * 0.3
        t[PREFIX + path + ".lora_B.weight"] = torch.randn(m.out_features, r, generator=gen) * 0.3
    return cfg, t


def random_bottleneck(model, gen, adapter_type, targets, m, act, scaling):
    cfg = {"peft_type": "BOTTLENECK", "adapter_type": adapter_type, "bottleneck_size": m, "non_linearity": act,
           "scaling": scaling, "target_modules": targets}
    t = {}
    for path in expand_targets(model, targets, False):
        d = dict(model.named_modules())[path].out_features
        p = PREFIX + path + "."
        t[p + "adapter_down.weight"] = torch.randn(m, d, generator=gen) * 0.3
        t[p + "adapter_down.bias"] = torch.randn(m, generator=gen) * 0.1
        t[p + "adapter_up.weight"] = torch.randn(d, m, generator=gen) * 0.3
        t[p + "adapter_up.bias"] = torch.randn(d, generator=gen) * 0.1
    return cfg, t


def random_fusion(model, gen, adapters):
    """Q/K/V per module any adapter targets, perturbed so the attention is far from uniform."""
    t = {}
    paths = set()
    for cfg, _ in adapters:
        paths.update(expand_targets(model, cfg["target_modules"], False))
    for path in sorted(paths):
        d = dict(model.named_modules())[path].out_features
        p = PREFIX + path + ".adapter_fusion."
        t[p + "query.weight"] = torch.randn(d, d, generator=gen) * 0.4
        t[p + "query.bias"] = torch.randn(d, generator=gen) * 0.1
        t[p + "key.weight"] = torch.randn(d, d, generator=gen) * 0.4
        t[p + "key.bias"] = torch.randn(d, generator=gen) * 0.1
        t[p + "value.weight"] = torch.eye(d) + torch.randn(d, d, generator=gen) * 0.1
    return t


def make(out_dir):
    """The tiny model and one folder per case: a saved composition (our format), its
    inputs and the reference logits (reference.safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    base_dir = os.path.join(out_dir, "llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(base_dir, safe_serialization=True)
    model = load_base(base_dir)
    gen = torch.Generator().manual_seed(1)
    houlsby = lambda m, act: random_bottleneck(model, gen, "houlsby", ["self_attn.o_proj", "mlp.down_proj"], m, act, 1.0)
    pfeiffer = lambda m, act: random_bottleneck(model, gen, "pfeiffer", ["mlp.down_proj"], m, act, 0.5)
    lora_a = lambda: random_lora(model, gen, ["q_proj", "v_proj", "down_proj"], 4, 8)
    lora_b = lambda: random_lora(model, gen, ["v_proj", "o_proj", "down_proj"], 2, 4)
    h1, p1, h2 = houlsby(8, "relu"), pfeiffer(4, "gelu"), houlsby(4, "silu")
    cases = {
        "stack_bottleneck": ({"composition": "stack", "adapters": ["a", "b"]}, {"a": h1, "b": p1}, None),
        "stack_lora": ({"composition": "stack", "adapters": ["b", "a"]}, {"a": lora_a(), "b": lora_b()}, None),
        "fuse_mixed": ({"composition": "fuse", "adapters": ["lora", "bn"], "weights": [0.7, -0.4]},
                       {"lora": lora_a(), "bn": h1}, None),
        "average_trained": ({"composition": "average", "adapters": ["a", "b"], "trainable_weights": True},
                            {"a": h1, "b": h2}, {"composition.weights": torch.tensor([0.3, 1.2])}),
        "adapter_fusion": ({"composition": "adapter_fusion", "adapters": ["a", "b", "c"], "temperature": 2.0},
                           {"a": h1, "b": p1, "c": h2}, "fusion"),
    }
    ids = torch.randint(0, 96, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    for name, (ccfg, adapters, comp) in cases.items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        for an, (acfg, at) in adapters.items():
            write_adapter(os.path.join(d, an), acfg, at)
        with open(os.path.join(d, "composition_config.json"), "w") as f:
            json.dump(ccfg, f, indent=2)
        if comp == "fusion":
            comp = random_fusion(model, gen, [adapters[a] for a in ccfg["adapters"]])
        if comp is not None:
            save_file(comp, os.path.join(d, "composition_model.safetensors"), metadata={"format": "pt"})
        inputs = os.path.join(d, "inputs.safetensors")
        save_file({"input_ids": ids, "attention_mask": mask}, inputs)
        reference(base_dir, d, inputs, os.path.join(d, "reference.safetensors"))
        save_file({"input_ids": ids, "attention_mask": mask,
                   "logits": load_file(os.path.join(d, "reference.safetensors"))["logits"]},
                  os.path.join(d, "reference.safetensors"))
        os.remove(inputs)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "ref":
        reference(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
