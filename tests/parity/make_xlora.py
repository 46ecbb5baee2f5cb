#!/usr/bin/env python
"""X-LoRA references made by HF PEFT for tests/test_xlora.cpp.

Usage: python tests/parity/make_xlora.py make OUT_DIR
       python tests/parity/make_xlora.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes llama/ (make_vera.py's tiny random Llama with inputs.safetensors), three LoRA
adapters made by HF PEFT with factors moved off their init, loras/lora_<i>/ (different
targets, ranks, alphas, rsLoRA), and per case <case>/adapter/ (XLoraModel's save_pretrained:
adapter_config.json whose `adapters` name the LoRA folders, the classifier, set to N(0, 0.5^2)
values, in adapter_model.safetensors), <case>/reference.safetensors (inputs, logits, and HF's
get_latest_scalings() of that forward as "scalings" [batch, seq, n_layers, n_classes]; HF's
greedy generate without a cache: gen_prompt_ids [2, 5] left-padded with 0, gen_prompt_mask,
gen_ids [2, 5 + 5]) and
<case>/case.json ({"base", "trainable": get_peft_model's print_trainable_parameters line,
"n_layers", "n_classes"}). Every case is also replayed in plain PyTorch (forward hooks on
the base model: the scaling pass, the classifier, the real pass, as the C++ port computes
it) and must give HF's scalings and logits.
Cases:
  xlora_llama        adapters "0", "1", "2", HF's defaults (one Linear, softmax over the
                     adapters, scalings broadcast to every layer, scaling pass value 0)
  xlora_llama_opts   xlora_depth 2 (xlora_size 16, dropout 0.1), layerwise_scalings,
                     top_k_lora 2 with enable_softmax_topk, softmax_temperature 0.5,
                     global_scaling_weight 1.5
  xlora_llama_pass   two adapters, xlora_depth 3 (xlora_size 8, no dropout), no softmax,
                     scaling_pass_value 0.25 (the scaling pass runs the experts too),
                     global_scaling_weight 0.7
HF's failure on adapter names other than their indices (it loads the LoRA adapters as "0",
"1", ... and then looks the names up) is checked at make time: test_xlora expects our refusal.

check loads each ADAPTER on BASE with PeftModel.from_pretrained in one process: the file's
keys must be HF's state dict's, and the logits within 1e-4 of OUTPUTS'.
"""

import contextlib
import io
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import greedy_generation  # noqa: E402
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base as load_plain_base  # noqa: E402
from make_vera import logits_of, make_base  # noqa: E402

import peft  # noqa: E402
from peft import LoraConfig, PeftModel, XLoraConfig, get_peft_model  # noqa: E402

LORAS = [
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    dict(r=6, lora_alpha=6, target_modules=["k_proj", "o_proj", "up_proj"], use_rslora=True),
    dict(r=2, lora_alpha=4, target_modules=["q_proj", "gate_proj", "down_proj"], layers_to_transform=[1]),
]


def cases(loras):
    three = {str(i): p for i, p in enumerate(loras)}
    return [
        ("xlora_llama", dict(adapters=three)),
        ("xlora_llama_opts", dict(adapters=three, xlora_depth=2, xlora_size=16, xlora_dropout_p=0.1,
                                  layerwise_scalings=True, top_k_lora=2, enable_softmax_topk=True,
                                  softmax_temperature=0.5, global_scaling_weight=1.5)),
        ("xlora_llama_pass", dict(adapters={"0": loras[0], "1": loras[1]}, xlora_depth=3, xlora_size=8,
                                  xlora_dropout_p=0.0, enable_softmax=False, scaling_pass_value=0.25,
                                  global_scaling_weight=0.7)),
    ]


def load_base(base_dir):
    model = load_plain_base(base_dir)
    model.config.use_cache = False  # XLoraModel refuses use_cache
    return model


def make_loras(out, base_dir):
    paths = []
    for i, kw in enumerate(LORAS):
        torch.manual_seed(100 + i)
        m = get_peft_model(load_base(base_dir), LoraConfig(**kw))
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.3 * torch.randn_like(p))
        path = os.path.join(out, "loras", f"lora_{i}")
        shutil.rmtree(path, ignore_errors=True)
        m.save_pretrained(path)
        paths.append(os.path.abspath(path))
    return paths


def classifier_of(model):
    return model.base_model.internal_xlora_classifier


# --- the replay: the C++ port's algorithm in plain PyTorch ----------------------------------

def replay(base_dir, cfg, inputs):
    """Our computation from the files alone: the experts from the LoRA folders, the classifier
    from the X-LoRA file; returns (scalings, logits)."""
    model = load_base(base_dir)
    adapters = list(cfg["adapters"].items())
    n_classes = len(adapters)
    experts = []  # per expert: {path: (A, B, scaling)}
    for _, folder in adapters:
        lc = json.load(open(os.path.join(folder, "adapter_config.json")))
        sd = load_file(os.path.join(folder, "adapter_model.safetensors"))
        mine = {}
        for k in sd:
            if k.endswith(".lora_A.weight"):
                path = k[len("base_model.model."):-len(".lora_A.weight")]
                r = sd[k].shape[0]
                alpha = lc["lora_alpha"]
                scale = alpha / r ** 0.5 if lc.get("use_rslora") else alpha / r
                mine[path] = (sd[k], sd[k.replace("lora_A", "lora_B")], scale)
        experts.append(mine)
    # Column n applies the expert whose index is the n-th name (HF's quirk).
    column_expert = [int(name) if name in [str(i) for i in range(n_classes)] else -1 for name, _ in adapters]
    adapted = set().union(*[set(e) for e in experts])
    order = [n for n, _ in model.named_modules() if n in adapted]  # HF's layer numbers
    n_layers = len(order)
    state = {}

    def hook(path, number):
        def f(module, args, out):
            x = args[0]
            s = state["scalings"][:, :, number, :]
            if cfg.get("top_k_lora") is not None:
                idx = torch.topk(s, cfg["top_k_lora"], dim=-1).indices
                s = s * torch.zeros_like(s, dtype=torch.bool).scatter(-1, idx, True).to(s.dtype)
            if cfg.get("enable_softmax_topk", False):
                nz = s != 0
                s = torch.softmax(s.masked_fill(~nz, float("-inf")), -1).masked_fill(~nz, 0.0)
            for n, j in enumerate(column_expert):
                if j < 0 or path not in experts[j]:
                    continue
                a, b, scale = experts[j][path]
                out = out + ((x * s[..., n:n + 1]) @ a.T @ b.T) * scale * cfg.get("global_scaling_weight", 1.0)
            return out
        return f

    handles = [model.get_submodule(p).register_forward_hook(hook(p, i)) for i, p in enumerate(order)]
    sd = load_file(os.path.join(cfg["dir"], "adapter_model.safetensors"))
    prefix = "base_model.internal_xlora_classifier.layers."
    idx = sorted({int(k[len(prefix):].split(".")[0]) for k in sd})
    b, s = inputs["input_ids"].shape
    with torch.no_grad():
        state["scalings"] = torch.full((b, s, n_layers, n_classes), float(cfg.get("scaling_pass_value", 0.0)))
        # The C++ port reads the body's output (after the final norm): HF's hidden_states[-1].
        h = model.model(**inputs).last_hidden_state
        for k, i in enumerate(idx):
            h = torch.nn.functional.linear(h, sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"])
            if k + 1 < len(idx):
                h = torch.relu(h)
        if not cfg.get("layerwise_scalings", False):
            h = h.unsqueeze(2).expand(-1, -1, n_layers, -1)
        scalings = h.reshape(b, s, n_layers, n_classes)
        if cfg.get("enable_softmax", True):
            scalings = torch.softmax(scalings / cfg.get("softmax_temperature", 1.0), -1)
        state["scalings"] = scalings
        logits = model(**inputs).logits
    for h_ in handles:
        h_.remove()
    return scalings, logits


GEN_NEW = 5  # HF's X-LoRA generates without a cache: both passes rerun every step


# --- cases -----------------------------------------------------------------------------------

def make_xlora_case(out, name, kw, base="llama"):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    torch.manual_seed(21)
    model = get_peft_model(load_base(base_dir), XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, **kw))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    trainable = buf.getvalue().strip()
    with torch.no_grad():
        for p in classifier_of(model).parameters():
            p.copy_(0.5 * torch.randn_like(p))
    model.eval()
    logits = logits_of(model, inputs)
    scalings = model.get_latest_scalings().float().contiguous()
    base_logits = logits_of(load_base(base_dir), inputs)
    changes = (logits - base_logits).abs().max().item()
    assert changes > 1e-2, f"{name}: the X-LoRA changes nothing"
    adapter = os.path.join(case_dir, "adapter")
    model.save_pretrained(adapter)
    # HF PEFT 0.21 saves an incomplete classifier: the LoRA adapters share peft_config with
    # the X-LoRA ("0", "1", ...), so get_peft_model_state_dict's adapter-name filter drops
    # every key containing ".0.", ".1.", ... -- "layers.0.weight" among them. Keep HF's file
    # for the test of our message, and file the whole classifier under HF's keys, which HF
    # loads (checked just below).
    raw = os.path.join(adapter, "adapter_model.safetensors")
    shutil.copy(raw, os.path.join(case_dir, "hf_saved_adapter_model.safetensors"))
    full = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "internal_xlora_classifier" in k}
    save_file(full, raw, metadata={"format": "pt"})
    again = PeftModel.from_pretrained(load_base(base_dir), adapter).eval()
    diff = (logits_of(again, inputs) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    saved = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r_scal, r_logits = replay(base_dir, dict(saved, dir=adapter), inputs)
    ds = (r_scal - scalings).abs().max().item()
    dl = (r_logits - logits).abs().max().item()
    assert ds <= 1e-5 and dl <= 1e-4, f"{name}: the replay differs from HF (scalings {ds}, logits {dl})"
    save_file(dict(inputs, logits=logits, scalings=scalings, **greedy_generation(model, GEN_NEW, use_cache=False)),
              os.path.join(case_dir, "reference.safetensors"))
    info = dict(base=base, trainable=trainable, n_layers=scalings.shape[2], n_classes=scalings.shape[3],
                keys=sorted(load_file(os.path.join(adapter, "adapter_model.safetensors"))))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"{name}: {trainable}; scalings {tuple(scalings.shape)}; reload diff {diff:.1e}; "
          f"replay scalings {ds:.1e} logits {dl:.1e}")


def make(out):
    make_base("llama", os.path.join(out, "llama"))
    loras = make_loras(out, os.path.join(out, "llama"))
    for name, kw in cases(loras):
        make_xlora_case(out, name, kw)
    # Adapter names that are not their indices: HF's forward fails looking them up.
    named = get_peft_model(load_base(os.path.join(out, "llama")),
                           XLoraConfig(task_type="CAUSAL_LM", hidden_size=32,
                                       adapters={"math": loras[0], "code": loras[2]}))
    try:
        logits_of(named.eval(), load_file(os.path.join(out, "llama", "inputs.safetensors")))
    except KeyError as e:
        print(f"named adapters: HF fails ({e!r})")
    else:
        raise AssertionError("HF now runs X-LoRA adapters named other than '0', '1', ...: update test_xlora")
    # HF refuses a depth of 0 at construction.
    try:
        get_peft_model(load_base(os.path.join(out, "llama")),
                       XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters={"0": loras[0]}, xlora_depth=0))
    except ValueError as e:
        print(f"xlora_depth 0: HF refuses ({e})")
    else:
        raise AssertionError("HF now accepts xlora_depth 0: update test_xlora's error")


def check_one(base_dir, adapter_dir, outputs, tol=1e-4):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir).eval()
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    # The whole classifier (HF's own get_peft_model_state_dict drops some of it, see make).
    want = {k: v for k, v in model.state_dict().items() if "internal_xlora_classifier" in k}
    if set(sd) != set(want):
        print(f"FAIL {adapter_dir}: keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        return False
    for k, v in sd.items():
        if not torch.equal(v, want[k]):
            print(f"FAIL {adapter_dir}: {k} did not load as saved")
            return False
    d = (logits_of(model, inputs) - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return diff <= tol


if __name__ == "__main__":
    # Our check_one (the base needs use_cache off); make through the shared entry point.
    argv = sys.argv[1:]
    if len(argv) >= 4 and argv[0] == "check" and len(argv) % 3 == 1:
        sys.exit(0 if all([check_one(*argv[i:i + 3]) for i in range(1, len(argv), 3)]) else 1)
    fixture_main(__doc__, make, threads=1)
