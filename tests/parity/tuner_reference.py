#!/usr/bin/env python
"""Independent plain-PyTorch reference for PEFT methods that Hugging Face PEFT does not implement.

Usage:
  python tests/parity/tuner_reference.py BASE_DIR ADAPTER_DIR INPUTS.safetensors OUT.safetensors
  python tests/parity/tuner_reference.py --selftest [PARITY_DIR]     (default: build/parity)

* BASE_DIR: a transformers checkpoint (config.json + safetensors); the class is chosen from
  config.json "architectures"[0] (BertModel / BertForSequenceClassification / ViTModel /
  ViTForImageClassification, otherwise AutoModelForCausalLM); eager attention, float32, eval().
* ADAPTER_DIR: adapter_config.json + adapter_model.safetensors. Tensor keys are
  "base_model.model." + <module path as in the loaded model's named_modules()> + "." + <name>.
* INPUTS.safetensors: input_ids, attention_mask, token_type_ids, pixel_values (those present).
* OUT.safetensors: "logits" (models with a head) or "last_hidden_state" (bare encoders), float32.

Methods (written from the papers' equations; applied with hooks on the transformers model, no
PEFT code is used):
  BOTTLENECK  adapter_type houlsby | pfeiffer (serial):  h -> h + s * up(act(down(h)))
              adapter_type parallel (AdaptFormer):      h -> h + s * up(act(down(x)))
              h = module output, x = module's first input. Special case for BERT, which has no single
              MLP module: a parallel target of class BertOutput / BertSelfOutput (forward(hidden, input_tensor)
              = LayerNorm(dense(hidden) + input_tensor)) uses x = input_tensor (the FFN block input, i.e. the
              attention output) and adds the delta to dense(hidden) *before* the residual + LayerNorm:
              LayerNorm(dense(hidden) + s * up(act(down(input_tensor))) + input_tensor).
              Tensors P.adapter_down.{weight [m,d], bias [m]}, P.adapter_up.{weight [d,m], bias [d]}.
  SSF         h -> h * P.ssf_scale + P.ssf_shift (last dim).
  BITFIT      P.bias replaces the module's bias (added if the module has bias=None).
  VPT         ViT only. e = embeddings(pixels) -> cat(e[:, :1], prompts[0], e[:, 1:]); if deep, before layer
              i >= 1: h -> cat(h[:, :1], prompts[i], h[:, 1+n:]). Tensor "vpt_prompts" (top level, as HF's "prompt_embeddings")
              [L_p, n, hidden].
  modules_to_save: any other key "base_model.model.<path>.<param>" (".modules_to_save.default" infix tolerated)
  whose module path equals or ends with ("." +) an entry of modules_to_save replaces that base parameter.
ViT checkpoints/adapters written with the legacy names (encoder.layer.N.attention.attention.query, ...)
are renamed to transformers v5 names (layers.N.attention.q_proj, ...) the same way transformers does.
Any adapter key that is not consumed, or any expected tensor that is missing, is an error (exit 1).
"""

import json
import os
import re
import shutil
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    BertForSequenceClassification,
    BertModel,
    ViTForImageClassification,
    ViTModel,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

# The command line computes in float64, so the reference carries no fp32 rounding of its own:
# fp32 runs of the same model differ from process to process by up to ~1e-4 on strongly
# perturbed adapters (seen with SSF on GPT-2), while float64 is ~1e-6 from every fp32 run.
# The selftest builds its own fp32 tensors and stays in fp32.
COMPUTE_DTYPE = torch.float32

PREFIX = "base_model.model."
TOP_LEVEL_KEYS = ("vpt_prompts",)
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
VIT_ARCHS = ("ViTModel", "ViTForImageClassification")

# transformers' legacy -> v5 key renames for ViT (applied in order)
VIT_RENAMES = [
    (r"encoder\.layer\.", "layers."),
    (r"attention\.query", "q_proj"),
    (r"attention\.key", "k_proj"),
    (r"attention\.value", "v_proj"),
    (r"attention\.output\.dense", "attention.o_proj"),
    (r"intermediate\.dense", "mlp.fc1"),
    (r"output\.dense", "mlp.fc2"),
]


class RefError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# model loading
# ---------------------------------------------------------------------------------------------


def architecture(base_dir):
    with open(os.path.join(base_dir, "config.json")) as f:
        return json.load(f)["architectures"][0]


def model_class_for(base_dir):
    # same rule as tests/parity/check_adapter.py (not imported: that module imports peft)
    return {
        "BertModel": BertModel,
        "BertForSequenceClassification": BertForSequenceClassification,
        "ViTModel": ViTModel,
        "ViTForImageClassification": ViTForImageClassification,
    }.get(architecture(base_dir), AutoModelForCausalLM)


def load_base(base_dir):
    model = model_class_for(base_dir).from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32)
    model.to(COMPUTE_DTYPE)
    model.eval()
    return model


def run_model(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    if getattr(out, "logits", None) is not None:
        return "logits", out.logits.float().contiguous()
    return "last_hidden_state", out.last_hidden_state.float().contiguous()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def activation(name):
    name = (name or "relu").lower()
    table = {
        "relu": F.relu,
        "gelu": lambda t: F.gelu(t),  # exact (erf) GELU
        "gelu_new": lambda t: F.gelu(t, approximate="tanh"),
        "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu,
        "swish": F.silu,
        "tanh": torch.tanh,
    }
    if name not in table:
        raise RefError(f"unsupported non_linearity {name!r}")
    return table[name]


def vit_rename(path):
    for pat, rep in VIT_RENAMES:
        path = re.sub(pat, rep, path)
    return path


class Adapter:
    """Adapter tensors keyed by the path after "base_model.model."; tracks which keys were used."""

    def __init__(self, adapter_dir, is_vit):
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            self.config = json.load(f)
        raw = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        self.tensors = {}
        for k, v in raw.items():
            if k in TOP_LEVEL_KEYS:  # like HF's "prompt_embeddings": no module path
                k = PREFIX + k
            if not k.startswith(PREFIX):
                raise RefError(f"adapter key {k!r} does not start with {PREFIX!r}")
            k = k[len(PREFIX):].replace(".modules_to_save.default.", ".")
            if is_vit:
                k = vit_rename(k)
            if k in self.tensors:
                raise RefError(f"adapter key {k!r} appears twice (after renaming)")
            if v.dtype != COMPUTE_DTYPE:
                v = v.to(COMPUTE_DTYPE)
            self.tensors[k] = v
        self.used = set()
        self.is_vit = is_vit

    def get(self, key):
        if key not in self.tensors:
            raise RefError(f"adapter file lacks {PREFIX + key!r}")
        self.used.add(key)
        return self.tensors[key]

    def unused(self):
        return sorted(set(self.tensors) - self.used)


def expand_targets(model, targets, is_vit):
    """target_modules as PEFT matches them: a regex string full-matches a module name; a list
    entry is a full name or a ".entry" suffix. Returns module names."""
    if targets is None:
        raise RefError("target_modules is null; the adapter must name its modules")
    names = [n for n, _ in model.named_modules() if n]
    if is_vit:
        targets = [vit_rename(t) for t in targets] if isinstance(targets, list) else targets
    if isinstance(targets, str):
        out = [n for n in names if re.fullmatch(targets, n)]
    else:
        out = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
    if not out:
        raise RefError(f"target_modules {targets!r} match no module")
    return out


def resolve(model, path, is_vit):
    modules = dict(model.named_modules())
    if path in modules:
        return path, modules[path]
    if is_vit and vit_rename(path) in modules:
        return vit_rename(path), modules[vit_rename(path)]
    raise RefError(f"target module {path!r} not found in the model")


def first_input(args, kwargs):
    if args:
        return args[0]
    if kwargs:
        return next(iter(kwargs.values()))
    raise RefError("module called without inputs")


def check_last_dim(t, d, what):
    if t.shape[-1] != d:
        raise RefError(f"{what}: feature size {t.shape[-1]} but tensor expects {d}")


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


def apply_bottleneck(model, ad, handles):
    cfg = ad.config
    kind = cfg.get("adapter_type", "houlsby")
    if kind not in ("houlsby", "pfeiffer", "parallel"):
        raise RefError(f"unknown adapter_type {kind!r}")
    act = activation(cfg.get("non_linearity", "relu"))
    s = float(cfg.get("scaling", 1.0))
    m = int(cfg["bottleneck_size"])
    for target in expand_targets(model, cfg["target_modules"], ad.is_vit):
        path, mod = resolve(model, target, ad.is_vit)
        Wd = ad.get(f"{path}.adapter_down.weight")
        bd = ad.get(f"{path}.adapter_down.bias")
        Wu = ad.get(f"{path}.adapter_up.weight")
        bu = ad.get(f"{path}.adapter_up.bias")
        if Wd.dim() != 2 or Wd.shape[0] != m or tuple(bd.shape) != (m,):
            raise RefError(f"{path}: adapter_down shapes {tuple(Wd.shape)}/{tuple(bd.shape)} vs bottleneck {m}")
        if Wu.dim() != 2 or Wu.shape[1] != m or tuple(bu.shape) != (Wu.shape[0],):
            raise RefError(f"{path}: adapter_up shapes {tuple(Wu.shape)}/{tuple(bu.shape)} vs bottleneck {m}")

        def delta(x, Wd=Wd, bd=bd, Wu=Wu, bu=bu, path=path):
            check_last_dim(x, Wd.shape[1], f"{path} adapter input")
            return s * F.linear(act(F.linear(x, Wd, bd)), Wu, bu)

        if kind in ("houlsby", "pfeiffer"):

            def hook(module, args, out, delta=delta):
                return out + delta(out)

            handles.append(mod.register_forward_hook(hook))
        elif type(mod).__name__ in ("BertOutput", "BertSelfOutput"):
            # post-LN FFN block: LayerNorm(dense(hidden) + input_tensor); add the parallel branch before LN
            state = {}

            def pre(module, args, kwargs, state=state, delta=delta):
                if len(args) >= 2:
                    block_in = args[1]
                elif "input_tensor" in kwargs:
                    block_in = kwargs["input_tensor"]
                else:
                    raise RefError("BertOutput called without input_tensor")
                state["d"] = delta(block_in)

            def dense_hook(module, args, out, state=state):
                return out + state.pop("d")

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(mod.dense.register_forward_hook(dense_hook))
        else:

            def hook(module, args, kwargs, out, delta=delta):
                return out + delta(first_input(args, kwargs))

            handles.append(mod.register_forward_hook(hook, with_kwargs=True))


def apply_ssf(model, ad, handles):
    for target in expand_targets(model, ad.config["target_modules"], ad.is_vit):
        path, mod = resolve(model, target, ad.is_vit)
        scale = ad.get(f"{path}.ssf_scale")
        shift = ad.get(f"{path}.ssf_shift")
        if scale.dim() != 1 or scale.shape != shift.shape:
            raise RefError(f"{path}: ssf_scale {tuple(scale.shape)} / ssf_shift {tuple(shift.shape)}")

        def hook(module, args, out, scale=scale, shift=shift, path=path):
            check_last_dim(out, scale.shape[0], f"{path} SSF")
            return out * scale + shift

        handles.append(mod.register_forward_hook(hook))


def apply_bitfit(model, ad):
    for target in expand_targets(model, ad.config["target_modules"], ad.is_vit):
        path, mod = resolve(model, target, ad.is_vit)
        b = ad.get(f"{path}.bias")
        if not hasattr(mod, "bias"):
            raise RefError(f"{path} ({type(mod).__name__}) has no bias attribute")
        old = mod.bias
        if old is not None and tuple(old.shape) != tuple(b.shape):
            raise RefError(f"{path}.bias: adapter {tuple(b.shape)} vs model {tuple(old.shape)}")
        mod.bias = nn.Parameter(b.clone(), requires_grad=False)


def vit_parts(model):
    core = model.vit if hasattr(model, "vit") else model
    layers = core.layers if hasattr(core, "layers") else core.encoder.layer
    return core, core.embeddings, layers


def apply_vpt(model, ad, handles):
    if not ad.is_vit:
        raise RefError("VPT is only defined for ViTModel / ViTForImageClassification")
    n = int(ad.config["num_virtual_tokens"])
    deep = bool(ad.config.get("deep", False))
    P = ad.get("vpt_prompts")
    _, emb, layers = vit_parts(model)
    lp = len(layers) if deep else 1
    if P.dim() != 3 or P.shape[0] != lp or P.shape[1] != n:
        raise RefError(f"vpt_prompts shape {tuple(P.shape)}, expected [{lp}, {n}, hidden]")

    def emb_hook(module, args, out):
        return torch.cat([out[:, :1], P[0].unsqueeze(0).expand(out.shape[0], -1, -1), out[:, 1:]], dim=1)

    handles.append(emb.register_forward_hook(emb_hook))
    if deep:
        for i in range(1, len(layers)):

            def pre(module, args, kwargs, i=i):
                if args:
                    h, rest = args[0], args[1:]
                else:
                    h = kwargs.pop("hidden_states")
                    rest = ()
                p = P[i].unsqueeze(0).expand(h.shape[0], -1, -1)
                h = torch.cat([h[:, :1], p, h[:, 1 + n:]], dim=1)
                if args:
                    return (h,) + tuple(rest), kwargs
                kwargs["hidden_states"] = h
                return args, kwargs

            handles.append(layers[i].register_forward_pre_hook(pre, with_kwargs=True))


def apply_modules_to_save(model, ad):
    entries = ad.config.get("modules_to_save") or []
    if not entries:
        return
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    matched = [name for name in modules if name and any(name == e or name.endswith("." + e) for e in entries)]
    with torch.no_grad():
        for name in matched:
            for pname, p in modules[name].named_parameters(recurse=True):
                key = f"{name}.{pname}"
                t = ad.get(key)
                if tuple(t.shape) != tuple(p.shape):
                    raise RefError(f"modules_to_save {key}: adapter {tuple(t.shape)} vs model {tuple(p.shape)}")
                params[key].copy_(t)


METHODS = ("BOTTLENECK", "SSF", "BITFIT", "VPT")


def apply_adapter(model, adapter_dir, base_dir):
    """Installs the adapter on `model` in place; returns the hook handles."""
    ad = Adapter(adapter_dir, architecture(base_dir) in VIT_ARCHS)
    ptype = ad.config.get("peft_type")
    handles = []
    # modules_to_save first: BitFit biases of a saved module then win (both hold the same values anyway)
    apply_modules_to_save(model, ad)
    if ptype == "BOTTLENECK":
        apply_bottleneck(model, ad, handles)
    elif ptype == "SSF":
        apply_ssf(model, ad, handles)
    elif ptype == "BITFIT":
        apply_bitfit(model, ad)
    elif ptype == "VPT":
        apply_vpt(model, ad, handles)
    else:
        raise RefError(f"unsupported peft_type {ptype!r} (supported: {METHODS})")
    left = ad.unused()
    if left:
        raise RefError(f"adapter keys not used: {[PREFIX + k for k in left]}")
    return handles


def reference_output(base_dir, adapter_dir, inputs):
    model = load_base(base_dir)
    apply_adapter(model, adapter_dir, base_dir)
    return run_model(model, inputs)


def read_inputs(path):
    data = load_file(path)
    inputs = {k: data[k] for k in INPUT_KEYS if k in data}
    if not inputs:
        raise RefError(f"{path} holds none of {INPUT_KEYS}")
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(COMPUTE_DTYPE)
    return inputs


def main_cli(argv):
    if len(argv) != 4:
        print(__doc__)
        return 2
    base_dir, adapter_dir, inputs_path, out_path = argv
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    try:
        key, out = reference_output(base_dir, adapter_dir, read_inputs(inputs_path))
    except RefError as e:
        print(f"FAIL: {e}")
        return 1
    save_file({key: out}, out_path)
    print(f"OK: wrote {key}{list(out.shape)} to {out_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# selftest
# ---------------------------------------------------------------------------------------------

# per case: (attention out proj, MLP out proj, MLP module (parallel), norms), using layer index {i}
PATHS = {
    "llama_mha": dict(
        attn_out="model.layers.{i}.self_attn.o_proj",
        mlp_out="model.layers.{i}.mlp.down_proj",
        mlp="model.layers.{i}.mlp",
        norms=["model.layers.{i}.input_layernorm", "model.layers.{i}.post_attention_layernorm", "model.norm"],
        linears=["model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.v_proj",
                 "model.layers.{i}.mlp.down_proj", "model.layers.{i}.mlp.gate_proj"],
        bias=[],
    ),
    "gpt2": dict(
        attn_out="transformer.h.{i}.attn.c_proj",
        mlp_out="transformer.h.{i}.mlp.c_proj",
        mlp="transformer.h.{i}.mlp",
        norms=["transformer.h.{i}.ln_1", "transformer.h.{i}.ln_2", "transformer.ln_f"],
        linears=["transformer.h.{i}.attn.c_attn", "transformer.h.{i}.attn.c_proj",
                 "transformer.h.{i}.mlp.c_fc", "transformer.h.{i}.mlp.c_proj"],
        bias=["transformer.h.{i}.attn.c_attn", "transformer.h.{i}.mlp.c_proj", "transformer.h.{i}.ln_2"],
    ),
    "bert_cls": dict(
        attn_out="bert.encoder.layer.{i}.attention.output.dense",
        mlp_out="bert.encoder.layer.{i}.output.dense",
        mlp="bert.encoder.layer.{i}.output",
        norms=["bert.embeddings.LayerNorm", "bert.encoder.layer.{i}.attention.output.LayerNorm",
               "bert.encoder.layer.{i}.output.LayerNorm"],
        linears=["bert.encoder.layer.{i}.attention.self.query", "bert.encoder.layer.{i}.attention.output.dense",
                 "bert.encoder.layer.{i}.intermediate.dense", "bert.encoder.layer.{i}.output.dense",
                 "bert.pooler.dense"],
        bias=["bert.encoder.layer.{i}.attention.self.value", "bert.encoder.layer.{i}.output.dense",
              "bert.encoder.layer.{i}.output.LayerNorm"],
        head="classifier",
    ),
    "vit_cls": dict(
        attn_out="vit.layers.{i}.attention.o_proj",
        mlp_out="vit.layers.{i}.mlp.fc2",
        mlp="vit.layers.{i}.mlp",
        norms=["vit.layers.{i}.layernorm_before", "vit.layers.{i}.layernorm_after", "vit.layernorm"],
        linears=["vit.layers.{i}.attention.q_proj", "vit.layers.{i}.attention.o_proj",
                 "vit.layers.{i}.mlp.fc1", "vit.layers.{i}.mlp.fc2"],
        bias=["vit.layers.{i}.attention.k_proj", "vit.layers.{i}.mlp.fc1", "vit.layers.{i}.layernorm_after"],
        head="classifier",
    ),
    "vit": dict(
        attn_out="layers.{i}.attention.o_proj",
        mlp_out="layers.{i}.mlp.fc2",
        mlp="layers.{i}.mlp",
        norms=["layers.{i}.layernorm_before", "layers.{i}.layernorm_after", "layernorm"],
        linears=["layers.{i}.attention.v_proj", "layers.{i}.mlp.fc1", "layers.{i}.mlp.fc2", "pooler.dense"],
        bias=["layers.{i}.attention.q_proj", "layers.{i}.mlp.fc2"],
    ),
}


def expand(paths, n_layers):
    out = []
    for p in paths:
        if "{i}" in p:
            out += [p.format(i=i) for i in range(n_layers)]
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def out_features(mod):
    if isinstance(mod, nn.Linear):
        return mod.out_features
    if type(mod).__name__ == "Conv1D":
        return mod.nf
    if hasattr(mod, "weight") and mod.weight is not None and mod.weight.dim() == 1:
        return mod.weight.shape[0]
    raise RefError(f"cannot tell the output size of {type(mod).__name__}")


def write_adapter(dirpath, config, tensors):
    os.makedirs(dirpath, exist_ok=True)
    full = dict(task_type=None, base_model_name_or_path="base", modules_to_save=None)
    full.update(config)
    with open(os.path.join(dirpath, "adapter_config.json"), "w") as f:
        json.dump(full, f, indent=1)
    save_file({PREFIX + k: v.contiguous() for k, v in tensors.items()}, os.path.join(dirpath, "adapter_model.safetensors"))


def head_tensors(model, head, perturb, gen):
    if not head:
        return {}
    out = {}
    for pname, p in dict(model.named_modules())[head].named_parameters():
        t = p.detach().clone()
        if perturb:
            t = t + 0.5 * torch.randn(t.shape, generator=gen)
        out[f"{head}.{pname}"] = t
    return out


def manual_vit(model, pixel_values, prompts, deep):
    """ViT forward from the equations (pre-LN transformer), with VPT prompts; independent of hooks."""
    cfg = model.config
    core, emb, layers = vit_parts(model)
    x = emb.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2)
    b = x.shape[0]
    x = torch.cat([emb.cls_token.expand(b, -1, -1), x], dim=1) + emb.position_embeddings
    n = prompts.shape[1]
    x = torch.cat([x[:, :1], prompts[0].expand(b, -1, -1), x[:, 1:]], dim=1)
    H = cfg.num_attention_heads
    hd = cfg.hidden_size // H
    for i, layer in enumerate(layers):
        if deep and i >= 1:
            x = torch.cat([x[:, :1], prompts[i].expand(b, -1, -1), x[:, 1 + n:]], dim=1)
        a = layer.attention
        h = F.layer_norm(x, (cfg.hidden_size,), layer.layernorm_before.weight, layer.layernorm_before.bias,
                         cfg.layer_norm_eps)

        def heads(t):
            return t.view(b, -1, H, hd).transpose(1, 2)

        q, k, v = heads(a.q_proj(h)), heads(a.k_proj(h)), heads(a.v_proj(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1) @ v
        x = x + a.o_proj(att.transpose(1, 2).reshape(b, -1, H * hd))
        h = F.layer_norm(x, (cfg.hidden_size,), layer.layernorm_after.weight, layer.layernorm_after.bias,
                         cfg.layer_norm_eps)
        x = x + layer.mlp.fc2(F.gelu(layer.mlp.fc1(h)))
    x = F.layer_norm(x, (cfg.hidden_size,), core.layernorm.weight, core.layernorm.bias, cfg.layer_norm_eps)
    if hasattr(model, "classifier"):
        return "logits", model.classifier(x[:, 0])
    return "last_hidden_state", x


def selftest(parity_dir):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    failures = []
    n_checks = 0

    def check(cond, msg):
        nonlocal n_checks
        n_checks += 1
        print(f"  {'ok  ' if cond else 'FAIL'} {msg}")
        if not cond:
            failures.append(msg)

    def rnd(*shape, std=0.3):
        return std * torch.randn(*shape, generator=gen)

    tmp = tempfile.mkdtemp(prefix="tuner_ref_")
    for case, paths in PATHS.items():
        base_dir = os.path.join(parity_dir, case)
        if not os.path.isdir(base_dir):
            print(f"[{case}] missing in {parity_dir}, skipped")
            continue
        print(f"[{case}]")
        inputs = read_inputs(os.path.join(base_dir, "reference.safetensors"))
        base = load_base(base_dir)
        key, base_out = run_model(base, inputs)
        n_layers = base.config.num_hidden_layers
        modules = dict(base.named_modules())
        head = paths.get("head")

        def run(name, config, tensors):
            d = os.path.join(tmp, f"{case}_{name}")
            write_adapter(d, config, tensors)
            # go through the CLI path (files in, file out)
            inp = os.path.join(d, "inputs.safetensors")
            outp = os.path.join(d, "out.safetensors")
            save_file(inputs, inp)
            rc = main_cli([base_dir, d, inp, outp])
            if rc != 0:
                raise RefError(f"CLI failed for {case}/{name}")
            return load_file(outp)[key]

        def diff(a):
            return (a - base_out).abs().max().item()

        # sanity: the chosen paths exist
        for p in expand([paths["attn_out"], paths["mlp_out"], paths["mlp"]] + paths["norms"] + paths["linears"]
                        + paths["bias"], n_layers):
            if p not in modules:
                raise RefError(f"{case}: module {p} not found")

        # ---- BOTTLENECK ----
        m = 3
        for kind, targets in (
            ("houlsby", expand([paths["attn_out"], paths["mlp_out"]], n_layers)),
            ("pfeiffer", expand([paths["mlp_out"]], n_layers)),
            ("parallel", expand([paths["mlp"]], n_layers)),
        ):
            for act in ("relu", "gelu"):
                cfg = dict(peft_type="BOTTLENECK", adapter_type=kind, bottleneck_size=m, non_linearity=act,
                           scaling=0.7, target_modules=targets, modules_to_save=[head] if head else None)
                d_model = base.config.hidden_size
                zero, nonzero = {}, {}
                for t in targets:
                    Wd, bd = rnd(m, d_model), rnd(m)
                    zero.update({f"{t}.adapter_down.weight": Wd, f"{t}.adapter_down.bias": bd,
                                 f"{t}.adapter_up.weight": torch.zeros(d_model, m),
                                 f"{t}.adapter_up.bias": torch.zeros(d_model)})
                    nonzero.update({f"{t}.adapter_down.weight": Wd, f"{t}.adapter_down.bias": bd,
                                    f"{t}.adapter_up.weight": rnd(d_model, m), f"{t}.adapter_up.bias": rnd(d_model)})
                zero.update(head_tensors(base, head, False, gen))
                nonzero.update(head_tensors(base, head, False, gen))
                o = run(f"bn_{kind}_{act}_zero", cfg, zero)
                check(torch.equal(o, base_out), f"BOTTLENECK {kind}/{act} zero up-projection == base (exact)")
                o = run(f"bn_{kind}_{act}_rand", cfg, nonzero)
                check(diff(o) > 1e-3, f"BOTTLENECK {kind}/{act} nonzero adapter changes output ({diff(o):.3e})")

        # BERT parallel: independent manual check of the LN(dense + delta + input) placement
        if case == "bert_cls":
            t = "bert.encoder.layer.0.output"
            Wd, bd, Wu, bu = rnd(m, 32), rnd(m), rnd(32, m), rnd(32)
            cfg = dict(peft_type="BOTTLENECK", adapter_type="parallel", bottleneck_size=m, non_linearity="relu",
                       scaling=0.5, target_modules=[t])
            o = run("bn_bert_parallel_manual", cfg, {f"{t}.adapter_down.weight": Wd, f"{t}.adapter_down.bias": bd,
                                                     f"{t}.adapter_up.weight": Wu, f"{t}.adapter_up.bias": bu})
            mdl = load_base(base_dir)
            bo = mdl.bert.encoder.layer[0].output

            def patched(hidden, input_tensor, bo=bo):
                d = 0.5 * F.linear(F.relu(F.linear(input_tensor, Wd, bd)), Wu, bu)
                return bo.LayerNorm(bo.dense(hidden) + d + input_tensor)

            bo.forward = patched
            _, ref = run_model(mdl, inputs)
            check((o - ref).abs().max().item() < 1e-5, "BOTTLENECK parallel on BertOutput == manual LN(dense+delta+x)")

        # ---- SSF ----
        ssf_targets = expand(paths["linears"] + paths["norms"], n_layers)
        ident, rand = {}, {}
        for t in ssf_targets:
            d = out_features(modules[t])
            ident.update({f"{t}.ssf_scale": torch.ones(d), f"{t}.ssf_shift": torch.zeros(d)})
            rand.update({f"{t}.ssf_scale": 1 + rnd(d), f"{t}.ssf_shift": rnd(d)})
        cfg = dict(peft_type="SSF", target_modules=ssf_targets)
        o = run("ssf_ident", cfg, ident)
        check(torch.equal(o, base_out), "SSF identity (scale 1, shift 0) == base (exact)")
        o_ssf = run("ssf_rand", cfg, rand)
        check(diff(o_ssf) > 1e-3, f"SSF random changes output ({diff(o_ssf):.3e})")
        # folding into Linear / Conv1D weights (norm targets cannot be folded into a following layer generally,
        # so fold only linear targets and keep the norms as SSF hooks)
        lin_targets = expand(paths["linears"], n_layers)
        norm_targets = expand(paths["norms"], n_layers)
        cfg_lin = dict(peft_type="SSF", target_modules=lin_targets)
        o_lin = run("ssf_lin", cfg_lin, {k: v for k, v in rand.items() if k.rsplit(".", 1)[0] in lin_targets})
        folded = load_base(base_dir)
        fmods = dict(folded.named_modules())
        with torch.no_grad():
            for t in lin_targets:
                mod = fmods[t]
                sc, sh = rand[f"{t}.ssf_scale"], rand[f"{t}.ssf_shift"]
                if isinstance(mod, nn.Linear):
                    mod.weight.mul_(sc[:, None])
                else:  # GPT-2 Conv1D: weight [in, out]
                    mod.weight.mul_(sc[None, :])
                if mod.bias is None:
                    mod.bias = nn.Parameter(sh.clone(), requires_grad=False)
                else:
                    mod.bias.copy_(sc * mod.bias + sh)
        _, o_fold = run_model(folded, inputs)
        fd = (o_fold - o_lin).abs().max().item()
        check(fd < 1e-4, f"SSF on linear layers == folded W'=diag(s)W, b'=s*b+t ({fd:.3e})")
        check(diff(o_lin) > 1e-3, f"SSF on linear layers changes output ({diff(o_lin):.3e})")
        # norms: fold into the LayerNorm/RMSNorm affine parameters (weight*s, bias*s+t)
        o_norm = run("ssf_norm", dict(peft_type="SSF", target_modules=norm_targets),
                     {k: v for k, v in rand.items() if k.rsplit(".", 1)[0] in norm_targets})
        folded = load_base(base_dir)
        fmods = dict(folded.named_modules())
        with torch.no_grad():
            for t in norm_targets:
                mod = fmods[t]
                sc, sh = rand[f"{t}.ssf_scale"], rand[f"{t}.ssf_shift"]
                mod.weight.mul_(sc)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(sc * mod.bias + sh)
                else:  # RMSNorm has no bias: add the shift with a hook on the folded model
                    mod.register_forward_hook(lambda _m, _a, out, sh=sh: out + sh)
        _, o_fold = run_model(folded, inputs)
        fd = (o_fold - o_norm).abs().max().item()
        check(fd < 1e-4, f"SSF on norms == folded affine parameters ({fd:.3e})")

        # ---- BITFIT ----
        bias_targets = expand(paths["bias"], n_layers)
        if not bias_targets:  # llama has no biases: add zero biases to linear layers
            bias_targets = expand(["model.layers.{i}.self_attn.o_proj", "model.layers.{i}.mlp.down_proj"], n_layers)
        same, changed = {}, {}
        for t in bias_targets:
            mod = modules[t]
            b = mod.bias.detach().clone() if mod.bias is not None else torch.zeros(out_features(mod))
            same[f"{t}.bias"] = b
            changed[f"{t}.bias"] = b + rnd(b.shape[0])
        cfg = dict(peft_type="BITFIT", target_modules=bias_targets, modules_to_save=[head] if head else None)
        same.update(head_tensors(base, head, False, gen))
        o = run("bitfit_same", cfg, same)
        if all(modules[t].bias is not None for t in bias_targets):
            check(torch.equal(o, base_out), "BITFIT unchanged biases (+ unchanged head) == base (exact)")
        else:
            check(diff(o) < 1e-5, f"BITFIT zero biases on bias-free layers == base ({diff(o):.3e})")
        changed.update(head_tensors(base, head, False, gen))
        o = run("bitfit_changed", cfg, changed)
        check(diff(o) > 1e-3, f"BITFIT changed biases change output ({diff(o):.3e})")
        if head:
            same_b = {k: v for k, v in same.items() if not k.startswith(head + ".")}
            same_b.update(head_tensors(base, head, True, gen))
            o = run("bitfit_head", cfg, same_b)
            check(diff(o) > 1e-3, f"modules_to_save {head} replaced from the adapter changes output ({diff(o):.3e})")

        # ---- VPT ----
        if case.startswith("vit"):
            hid, n = base.config.hidden_size, 2
            for deep in (False, True):
                P = rnd(n_layers if deep else 1, n, hid, std=1.0)
                cfg = dict(peft_type="VPT", num_virtual_tokens=n, deep=deep,
                           modules_to_save=[head] if head else None)
                tensors = {"vpt_prompts": P}
                tensors.update(head_tensors(base, head, False, gen))
                o = run(f"vpt_{deep}", cfg, tensors)
                with torch.no_grad():
                    _, ref = manual_vit(base, inputs["pixel_values"], P, deep)
                md = (o - ref).abs().max().item()
                check(o.shape == ref.shape and md < 1e-4,
                      f"VPT deep={deep} == manual ViT forward with prompts ({md:.3e}, shape {list(o.shape)})")
                if key == "last_hidden_state":
                    check(o.shape[1] == base_out.shape[1] + n, "VPT last_hidden_state includes prompt positions")
                    dd = (o[:, [0] + list(range(1 + n, o.shape[1]))] - base_out).abs().max().item()
                else:
                    dd = diff(o)
                check(dd > 1e-3, f"VPT deep={deep} changes output ({dd:.3e})")
            # manual forward without prompts (n = 0) reproduces the base model: validates manual_vit itself
            with torch.no_grad():
                _, ref0 = manual_vit(base, inputs["pixel_values"], torch.zeros(1, 0, hid), False)
            check((ref0 - base_out).abs().max().item() < 1e-4, "manual ViT forward (no prompts) == transformers")

        # ---- legacy ViT names are accepted ----
        if case == "vit_cls":
            t_new, t_old = "vit.layers.0.mlp.fc2", "vit.encoder.layer.0.output.dense"
            sc, sh = 1 + rnd(hid), rnd(hid)
            o_new = run("ssf_new_name", dict(peft_type="SSF", target_modules=[t_new]),
                        {f"{t_new}.ssf_scale": sc, f"{t_new}.ssf_shift": sh})
            o_old = run("ssf_old_name", dict(peft_type="SSF", target_modules=[t_old]),
                        {f"{t_old}.ssf_scale": sc, f"{t_old}.ssf_shift": sh})
            check(torch.equal(o_new, o_old), "ViT legacy module names map to v5 names")

        # ---- strictness: unused keys are rejected ----
        t = expand([paths["mlp_out"]], n_layers)[0]
        d = out_features(modules[t])
        print("  (the next FAIL line is expected)")
        try:
            run("strict", dict(peft_type="SSF", target_modules=[t]),
                {f"{t}.ssf_scale": torch.ones(d), f"{t}.ssf_shift": torch.zeros(d), "bogus.weight": torch.zeros(1)})
            check(False, "unused adapter key is rejected")
        except RefError:
            check(True, "unused adapter key is rejected")

    print(f"selftest: {n_checks - len(failures)}/{n_checks} checks passed")
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"adapters kept in {tmp}")
        for f in failures:
            print(f"FAIL: {f}")
        return 1
    return 0


def main():
    argv = sys.argv[1:]
    if argv and argv[0] == "--selftest":
        here = os.path.dirname(os.path.abspath(__file__))
        parity_dir = argv[1] if len(argv) > 1 else os.path.join(here, "..", "..", "build", "parity")
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        return selftest(os.path.normpath(parity_dir))
    global COMPUTE_DTYPE
    COMPUTE_DTYPE = torch.float64
    return main_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
