#!/usr/bin/env python
"""CorDA, LoRA-GA and fast-PiSSA references made by HF PEFT for tests/test_corda.cpp.

Usage: python tests/parity/make_corda.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors),
calibration.jsonl (24 lines {"input_ids": [...]}, 5 to 12 tokens, the samples HF's
run_model feeds one per forward, as CorDA's hook expects) and per case <case>/adapter/
(adapter_config.json as HF writes it; prune_temporary_fields false keeps the
covariances in memory for the reference) and <case>/reference.safetensors: the inputs, the
logits of the model preprocess_corda + get_peft_model make (B = 0 effects aside: the
adapter is exact at init, so these equal the base's within rounding; "logits_shifted":
with 0.05 added to every lora_B, which depends on A, B and the residual), and per adapted
module "<path>.lora_A", "<path>.lora_B", "<path>.residual" (the weight as stored) and
"<path>.covariance" (HF's averaged input covariance).
Cases:
  corda_ipm_llama   ipm, r=4, q_proj, v_proj, down_proj
  corda_kpm_llama   kpm, r=3, o_proj, up_proj, rank_pattern up_proj: 2
  corda_ipm_gpt2    ipm, r=4, c_attn, c_fc (Conv1D: the weights stored [in, out])
  loraga_llama      LoRA-GA (direction ArB2r, scale stable: HF's defaults), r=2, q_proj,
                    v_proj, down_proj; gradients from preprocess_loraga with a train_step
                    of the calibration rows in batches of 4 (right-padded, labels -100 on
                    padding, each batch's mean loss backward), then get_peft_model right
                    after torch.manual_seed(13); the reference holds "<path>.gradient" too
  loraga_gpt2       LoRA-GA ArBr / weight_svd, r=2, c_attn and c_fc (Conv1D; dropouts at 0,
                    since HF estimates the gradients in training mode)
  loraga_llama_rand LoRA-GA random / gd_scale, r=3, o_proj, up_proj
  lora_bias_gpt2    LoRA with lora_bias on c_attn and c_fc (Conv1D), lora_B weights and biases
                    set to random values; reference: logits and merged_logits
  pissa_niter_llama init_lora_weights "pissa_niter_2" (torch.svd_lowrank), r=4, q_proj,
                    v_proj, down_proj (a wide weight), get_peft_model right after
                    torch.manual_seed(13); the reference holds A, B and residual per module
"""

import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, make_base, pin_hash_seed  # noqa: E402

# peft's corda.py imports `dataclass` from the attrs package (for one plain record,
# CordaEigens) without declaring it: the standard library's dataclass does that job.
if "attr" not in sys.modules:
    try:
        import attr  # noqa: F401
    except ImportError:
        import dataclasses
        import types
        sys.modules["attr"] = types.SimpleNamespace(dataclass=dataclasses.dataclass)

from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora.config import CordaConfig  # noqa: E402
from peft.tuners.lora.corda import preprocess_corda  # noqa: E402

warnings.simplefilter("ignore")

CASES = [
    ("corda_ipm_llama", "llama", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]), "ipm"),
    ("corda_kpm_llama", "llama",
     dict(r=3, lora_alpha=6, target_modules=["o_proj", "up_proj"], rank_pattern={"up_proj": 2}), "kpm"),
    ("corda_ipm_gpt2", "gpt2", dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]), "ipm"),
]


def calibration(out):
    g = torch.Generator().manual_seed(21)
    rows = [torch.randint(0, 64, (int(torch.randint(5, 13, (1,), generator=g)),), generator=g).tolist()
            for _ in range(24)]
    with open(os.path.join(out, "calibration.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r}) + "\n")
    return rows


def fresh_case_dir(out, name):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    return case_dir


def lora_factors(peft_model):
    """Per adapted module "<path>.lora_A", ".lora_B" and ".residual" (the weight as stored)."""
    tensors = {}
    for n, m in peft_model.named_modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            path = n.removeprefix("base_model.model.")
            tensors[path + ".lora_A"] = m.lora_A["default"].weight.detach().clone()
            tensors[path + ".lora_B"] = m.lora_B["default"].weight.detach().clone()
            tensors[path + ".residual"] = m.base_layer.weight.detach().clone()
    return tensors


def write_case_json(case_dir, base, tensors, **extra):
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base=base, **extra, layers=sorted({k.rsplit(".", 1)[0] for k in tensors})), f, indent=1)


def make_case(out, name, base, kw, method, rows):
    case_dir = fresh_case_dir(out, name)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = load_base(base_dir)
    config = LoraConfig(init_lora_weights="corda", corda_config=CordaConfig(corda_method=method, prune_temporary_fields=False), **kw)

    def run_model():
        for r in rows:
            model(input_ids=torch.tensor([r]))

    preprocess_corda(model, config, run_model=run_model, hooked_model=None)
    covariances = {n + ".covariance": m.covariance_matrix.clone().contiguous()
                   for n, m in model.named_modules() if hasattr(m, "covariance_matrix")}
    peft_model = get_peft_model(model, config).eval()
    tensors = lora_factors(peft_model)
    with torch.no_grad():
        logits = peft_model(**inputs).logits.float().contiguous()
        for n, m in peft_model.named_modules():
            if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {}):
                m.lora_B["default"].weight.add_(0.05)
        shifted = peft_model(**inputs).logits.float().contiguous()
    assert (shifted - logits).abs().max() > 1e-2, name
    peft_model.save_pretrained(os.path.join(case_dir, "adapter"))
    save_file(dict(inputs, logits=logits, logits_shifted=shifted, **tensors, **covariances),
              os.path.join(case_dir, "reference.safetensors"))
    write_case_json(case_dir, base, tensors)
    print(f"{name}: {len(tensors) // 3} layers; B + 0.05 moves logits {(shifted - logits).abs().max().item():.3g}")


LORAGA_CASES = [
    ("loraga_llama", "llama", dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"]),
     dict()),
    ("loraga_gpt2", "gpt2", dict(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"]),
     dict(direction="ArBr", scale="weight_svd")),
    ("loraga_llama_rand", "llama", dict(r=3, lora_alpha=6, target_modules=["o_proj", "up_proj"]),
     dict(direction="random", scale="gd_scale")),
]


def batches(rows, size=4):
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        width = max(len(r) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for k, r in enumerate(chunk):
            ids[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r)] = 1
        yield ids, mask, ids.masked_fill(mask == 0, -100)


def make_loraga(out, name, base, kw, ga, rows):
    from peft.tuners.lora.config import LoraGAConfig
    from peft.tuners.lora.loraga import preprocess_loraga
    case_dir = fresh_case_dir(out, name)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = load_base(base_dir)
    config = LoraConfig(init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig(**ga), **kw)

    def train_step():
        for ids, mask, labels in batches(rows):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    # estimate_gradients puts the model in training mode: GPT-2's dropouts (p 0.1) would draw
    # masks no other program can repeat, so they are set to 0 here.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    preprocess_loraga(model, config, train_step)
    gradients = {n + ".gradient": (m._peft_loraga_grad.T if base == "gpt2" else m._peft_loraga_grad).contiguous()
                 for n, m in model.named_modules() if hasattr(m, "_peft_loraga_grad")}
    torch.manual_seed(13)
    peft_model = get_peft_model(model, config).eval()
    tensors = lora_factors(peft_model)
    with torch.no_grad():
        logits = peft_model(**inputs).logits.float().contiguous()
    peft_model.save_pretrained(os.path.join(case_dir, "adapter"))
    save_file(dict(inputs, logits=logits, **tensors, **gradients), os.path.join(case_dir, "reference.safetensors"))
    write_case_json(case_dir, base, tensors, seed=13)
    print(f"{name}: {len(tensors) // 3} layers")


def make_lora_bias(out):
    name = "lora_bias_gpt2"
    case_dir = fresh_case_dir(out, name)
    inputs = load_file(os.path.join(out, "gpt2", "inputs.safetensors"))
    model = get_peft_model(load_base(os.path.join(out, "gpt2")),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], lora_bias=True))
    torch.manual_seed(17)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits.float().contiguous()
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    with torch.no_grad():
        merged = model.merge_and_unload()(**inputs).logits.float().contiguous()
    save_file(dict(inputs, logits=logits, merged_logits=merged), os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base="gpt2"), f, indent=1)
    print(f"{name}: written")


def make_pissa_niter(out):
    name = "pissa_niter_llama"
    case_dir = fresh_case_dir(out, name)
    inputs = load_file(os.path.join(out, "llama", "inputs.safetensors"))
    model = load_base(os.path.join(out, "llama"))
    torch.manual_seed(13)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa_niter_2",
                                                  target_modules=["q_proj", "v_proj", "down_proj"])).eval()
    tensors = lora_factors(peft_model)
    with torch.no_grad():
        logits = peft_model(**inputs).logits.float().contiguous()
    peft_model.save_pretrained(os.path.join(case_dir, "adapter"))
    save_file(dict(inputs, logits=logits, **tensors), os.path.join(case_dir, "reference.safetensors"))
    write_case_json(case_dir, "llama", tensors, seed=13)
    print(f"{name}: {len(tensors) // 3} layers")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    rows = calibration(out)
    for name, base, kw, method in CASES:
        make_case(out, name, base, kw, method, rows)
    make_pissa_niter(out)
    make_lora_bias(out)
    for name, base, kw, ga in LORAGA_CASES:
        make_loraga(out, name, base, kw, ga, rows)


if __name__ == "__main__":
    main()
