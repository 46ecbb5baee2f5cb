#!/usr/bin/env python
"""EVA references made by HF PEFT for tests/test_eva.cpp.

Usage: python tests/parity/make_eva.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors) and
per case <case>/adapter/ (adapter_config.json and weights as HF's save_pretrained writes
them after initialize_lora_eva_weights, lora_B moved by +0.05 so the logits depend on A)
and <case>/reference.safetensors:
  - "batch<i>.input_ids", ".attention_mask", ".labels": the calibration dataloader, 12
    batches of 4 rows of 5 to 12 tokens (right-padded; labels -100 on padding and on each
    row's first two tokens, so use_label_mask leaves them out);
  - "<path>.eva": get_eva_state_dict's components per target (rank rows; [0, in] for a
    layer EVA gives no rank);
  - the inputs, "logits_init" (the adapter as initialized, B = 0: the base's) and "logits"
    (B + 0.05, the adapter as saved).
case.json holds the base, the user's LoRA config ("method", before EVA rewrites its ranks
and targets) and HF's rank per layer.
Cases:
  eva_llama        r=4, alpha 8, all seven projections (q/k/v and gate/up share inputs),
                   EvaConfig() (rho 2, tau 0.99, label mask, adjust_scaling_factors)
  eva_gpt2         r=4, c_attn, c_fc, c_proj (Conv1D), rho 1.5, tau 0.95, no label mask,
                   adjust_scaling_factors false
  eva_whiten_llama r=3, alpha 6, o_proj and down_proj, rank_pattern down_proj: 2, whiten
                   (no layers share inputs: HF divides shared components once per layer)
  eva_rank0_llama  r=1, alpha 2, rho 4, o_proj and down_proj: EVA gives both down_proj rank
                   0, so HF drops them from target_modules
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

from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora.config import EvaConfig  # noqa: E402
from peft.tuners.lora.eva import get_eva_state_dict, initialize_lora_eva_weights  # noqa: E402

warnings.simplefilter("ignore")

ALL_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = [
    ("eva_llama", "llama", dict(r=4, lora_alpha=8, target_modules=ALL_LLAMA), dict()),
    ("eva_gpt2", "gpt2", dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"]),
     dict(rho=1.5, tau=0.95, use_label_mask=False, adjust_scaling_factors=False)),
    ("eva_whiten_llama", "llama",
     dict(r=3, lora_alpha=6, target_modules=["o_proj", "down_proj"], rank_pattern={"down_proj": 2}),
     dict(whiten=True)),
    ("eva_rank0_llama", "llama", dict(r=1, lora_alpha=2, target_modules=["o_proj", "down_proj"]), dict(rho=4.0)),
]


def calibration_batches():
    g = torch.Generator().manual_seed(21)
    rows = [torch.randint(0, 64, (int(torch.randint(5, 13, (1,), generator=g)),), generator=g).tolist()
            for _ in range(48)]
    out = []
    for i in range(0, len(rows), 4):
        chunk = rows[i:i + 4]
        width = max(len(r) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, r in enumerate(chunk):
            ids[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :2] = -100
        out.append(dict(input_ids=ids, attention_mask=mask, labels=labels))
    return out


def make_case(out, name, base, kw, eva, batches):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    config = LoraConfig(init_lora_weights="eva", eva_config=EvaConfig(**eva), **kw)
    model = get_peft_model(load_base(base_dir), config, low_cpu_mem_usage=True)
    state = get_eva_state_dict(model, batches, show_progress_bar=False)
    components = {k.removeprefix("base_model.model.") + ".eva": v.detach().float().clone().contiguous()
                  for k, v in state.items()}
    initialize_lora_eva_weights(model, eva_state_dict=dict(state))
    model.eval()
    with torch.no_grad():
        initial = model(**inputs).logits.float().contiguous()
        for n, m in model.named_modules():
            if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {}):
                m.lora_B["default"].weight.add_(0.05)
        logits = model(**inputs).logits.float().contiguous()
    assert (logits - initial).abs().max() > 1e-3, name
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    tensors = dict(inputs, logits=logits, logits_init=initial, **components)
    for i, b in enumerate(batches):
        tensors.update({f"batch{i}.{k}": v for k, v in b.items()})
    save_file(tensors, os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        method = dict(peft_type="LORA", init_lora_weights="eva", eva_config=eva, **kw)
        json.dump(dict(base=base, num_batches=len(batches), method=method,
                       ranks={k.removesuffix(".eva"): v.shape[0] for k, v in components.items()}), f, indent=1)
    print(f"{name}: ranks {[v.shape[0] for v in components.values()]}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    batches = calibration_batches()
    for name, base, kw, eva in CASES:
        make_case(out, name, base, kw, eva, batches)


if __name__ == "__main__":
    main()
