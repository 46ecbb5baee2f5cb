#!/usr/bin/env python
"""VeRA references made by HF PEFT for tests/test_vera.cpp.

Usage:
  python tests/parity/make_vera.py make OUT_DIR
  python tests/parity/make_vera.py check BASE_DIR ADAPTER_DIR OUTPUTS.safetensors [--tol 1e-4]

make writes:
  llama/, gpt2/            tiny random LlamaForCausalLM / GPT2LMHeadModel (transformers' config
                           classes, fp32) and inputs.safetensors (input_ids, attention_mask with
                           right padding in row 1)
  <case>/adapter/          PeftModel.save_pretrained of a VeRA adapter whose lambdas (and, with
                           bias="vera_only", the adapted layers' biases) were set to random
                           non-trivial values
  <case>/reference.safetensors
                           inputs, logits of the adapted model, merged_logits after
                           merge_and_unload(), and HF's in-memory vera_A / vera_B (whether or
                           not the file holds them)
  <case>/case.json         {"base", "config": VeraConfig kwargs, "r", "max_out", "max_in",
                            "projection_prng_key", "trainable": print_trainable_parameters line}
  peft_types.json          every peft.PeftType value -> the adapter_config.json HF writes for it
                           with default fields (where the config class builds without arguments)
  Cases: vera_llama_saved (save_projection=True, five projections of three shapes, so vera_A /
  vera_B are sliced), vera_llama_unsaved (save_projection=False, a negative prng key,
  layers_to_transform=[1]), vera_gpt2 (Conv1D layers, bias="vera_only").
  Each adapter is reloaded with PeftModel.from_pretrained into a fresh base and must reproduce
  the logits to 1e-6 before it is written.

check loads ADAPTER_DIR on BASE_DIR with PeftModel.from_pretrained (any missing or unexpected
adapter key fails) and compares the logits with OUTPUTS' (masked positions ignored); exit 1 on
failure.
"""

import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

import peft
from peft import PeftModel, VeraConfig, get_peft_model

hf_logging.set_verbosity_error()
warnings.simplefilter("ignore")

CASES = [
    ("vera_llama_saved", "llama",
     dict(r=8, target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], projection_prng_key=1234,
          save_projection=True)),
    ("vera_llama_unsaved", "llama",
     dict(r=6, target_modules=["o_proj", "gate_proj", "down_proj"], projection_prng_key=-7, save_projection=False,
          layers_to_transform=[1])),
    ("vera_gpt2", "gpt2",
     dict(r=4, target_modules=["c_attn", "c_proj", "c_fc"], projection_prng_key=99, save_projection=True,
          fan_in_fan_out=True, bias="vera_only")),
]


def make_base(kind, out_dir):
    """kind: llama, llama_bias (the same shape with attention and MLP biases, drawn N(0, 0.1²)
    so that merging into them shows) or gpt2."""
    torch.manual_seed({"llama": 7, "gpt2": 8, "llama_bias": 9}[kind])
    if kind.startswith("llama"):
        bias = kind == "llama_bias"
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False, attention_bias=bias, mlp_bias=bias)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if bias and n.endswith(".bias"):
                    p.normal_(0, 0.1)
    else:
        cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(out_dir)
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(out_dir, "inputs.safetensors"))


def load_base(base_dir):
    return AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", dtype=torch.float32).eval()


def logits_of(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits.float().contiguous()


def perturb_vera(model):
    """Random lambdas (and, with bias="vera_only", biases) instead of HF's zero-delta init."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "vera_lambda_b" in n:
                p.copy_(0.5 * torch.randn_like(p))
            elif "vera_lambda_d" in n:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def make_case(out, name, base, config, perturb, extra=None, merge=True):
    """Writes <name>/adapter, reference.safetensors (inputs, logits, merged_logits unless
    merge is false, extra tensors of extra(model)) and case.json for an adapter of `config`
    on `base`."""
    import contextlib
    import io

    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = get_peft_model(load_base(base_dir), config)
    torch.manual_seed(11)
    perturb(model)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    trainable = buf.getvalue().strip()
    tensors = extra(model) if extra else {}
    model.eval()
    logits = logits_of(model, inputs)
    base_logits = logits_of(load_base(base_dir), inputs)
    assert (logits - base_logits).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter")).eval()
    diff = (logits_of(again, inputs) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    merged = dict(merged_logits=logits_of(model.merge_and_unload(), inputs)) if merge else {}
    save_file(dict(inputs, logits=logits, **merged, **tensors),
              os.path.join(case_dir, "reference.safetensors"))
    info = dict(base=base, trainable=trainable)
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"{name}: {trainable}; reload diff {diff:.1e}")
    return info, tensors


def make_vera_case(out, name, base, kw):
    projections = lambda m: dict(vera_A=m.base_model.vera_A["default"].clone().contiguous(),
                                 vera_B=m.base_model.vera_B["default"].clone().contiguous())
    info, t = make_case(out, name, base, VeraConfig(**kw), perturb_vera, projections)
    info.update(config=kw, r=kw["r"], max_out=t["vera_B"].shape[0], max_in=t["vera_A"].shape[1],
                projection_prng_key=kw["projection_prng_key"])
    with open(os.path.join(out, name, "case.json"), "w") as f:
        json.dump(info, f, indent=1)


def peft_types():
    out = {}
    for t in peft.PeftType:
        cls = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING.get(t)
        try:
            cfg = cls()
            d = cfg.to_dict()
            out[t.value] = json.loads(json.dumps(d, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
        except Exception:  # some configs need arguments; the type is still listed
            out[t.value] = {"peft_type": t.value}
    return out


def pin_hash_seed():
    """PEFT writes set-valued fields (target_modules) in hash order: pin it, so files repeat."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:],
                  dict(os.environ, PYTHONHASHSEED="0"))


def make(out):
    pin_hash_seed()
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_vera_case(out, name, base, kw)
    with open(os.path.join(out, "peft_types.json"), "w") as f:
        json.dump(peft_types(), f, indent=1, sort_keys=True)


def check(base_dir, adapter_dir, outputs, tol):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir)
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = peft.get_peft_model_state_dict(model)
    if set(sd) != set(want):
        print(f"FAIL: adapter keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        sys.exit(1)
    for k, v in sd.items():
        if not torch.equal(v, want[k]):
            print(f"FAIL: {k} did not load as saved")
            sys.exit(1)
    got = logits_of(model.eval(), inputs)
    d = (got - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    sys.exit(0 if diff <= tol else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) in (5, 7) and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[6]) if len(sys.argv) == 7 else 1e-4)
    else:
        sys.exit(__doc__)
