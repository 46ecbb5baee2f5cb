#!/usr/bin/env python
"""CPT (Context-aware Prompt Tuning) references made by HF PEFT for tests/test_cpt.cpp.

Usage:
  python tests/parity/make_cpt.py make OUT_DIR
  python tests/parity/make_cpt.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes llama/ and gpt2/ (make_vera.py's tiny random models with inputs.safetensors)
and per case <case>/adapter/ (save_pretrained after the delta embedding was set to rows of
very different norms, so that the epsilon projection clips some rows and leaves others),
<case>/case.json ({"base", "trainable", "config"}) and <case>/reference.safetensors:
  input_ids, attention_mask       make_base's inputs
  logits, logits_nomask           eval-mode logits of the real tokens (the prompt's
                                  positions cut off), with and without the attention mask
  init_embedding                  HF's frozen embedding at creation (cpt_token_ids' word rows)
  raw_delta, projected_delta      the delta set, and get_projection() of it
  epsilon                         get_epsilon()
  labels, input_type_mask         one training batch (labels -100 on padding)
  loss, delta_grad                HF's CPT loss of that batch from the raw delta (eval
                                  mode: no dropout) and the gradient of delta_embedding.weight (masked
                                  by HF's backward hook)
  loss_default                    the loss without input_type_mask (HF's default: 4 everywhere)
Cases:
  cpt_llama   a 10-token template of two examples (types 1 2 2 3 4 4 | 5 6 7 8),
              epsilons 0.2 (input) / 0.1 (format), loss type none
  cpt_gpt2    the same template on GPT-2, epsilons 0.5 / 0.05, loss type decay, factor 0.5
check loads each ADAPTER on BASE with PeftModel.from_pretrained: the file must hold HF's
state dict exactly and the real tokens' logits must be OUTPUTS' (1e-4); exit 1 on failure.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, make_base, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import CPTConfig, PeftModel, get_peft_model  # noqa: E402

warnings.simplefilter("ignore")

TEMPLATE_IDS = [5, 9, 12, 3, 7, 11, 20, 21, 4, 30]
TEMPLATE_TYPES = [1, 2, 2, 3, 4, 4, 5, 6, 7, 8]
# Per row of the delta: 1 = small (inside every ball but the labels'), 0 = large (clipped).
SMALL_ROWS = [1, 0, 1, 0, 1, 0, 0, 1, 1, 0]

CASES = {
    "cpt_llama": ("llama", dict(opt_projection_epsilon=0.2, opt_projection_format_epsilon=0.1)),
    "cpt_gpt2": ("gpt2", dict(opt_projection_epsilon=0.5, opt_projection_format_epsilon=0.05,
                              opt_weighted_loss_type="decay", opt_loss_decay_factor=0.5)),
}


def cpt_config(kw):
    return CPTConfig(task_type="CAUSAL_LM", cpt_token_ids=list(TEMPLATE_IDS),
                     cpt_tokens_type_mask=list(TEMPLATE_TYPES), **kw)


def real_logits(model, inputs):
    with torch.no_grad():
        out = model(**inputs).logits.float()
    return out[:, out.shape[1] - inputs["input_ids"].shape[1]:].contiguous()


def training_batch(inputs):
    """Labels: the ids, -100 on padding; types: one query (input template 1, input 2,
    output template 3, label 4) per row, 0 on padding."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    labels = ids.clone()
    labels[mask == 0] = -100
    types = torch.tensor([[1, 2, 2, 2, 3, 4, 4, 4, 4],
                          [1, 2, 3, 4, 4, 4, 0, 0, 0]])
    types[mask == 0] = 0
    return labels, types


def make_case(out, name):
    base, kw = CASES[name]
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = get_peft_model(load_base(base_dir), cpt_config(kw))
    enc = model.prompt_encoder["default"]
    init_embedding = enc.embedding.weight.detach().clone().contiguous()
    torch.manual_seed(11)
    scale = torch.tensor([1e-3 if s else 0.2 for s in SMALL_ROWS]).view(-1, 1)
    raw = (torch.randn_like(enc.delta_embedding.weight) * scale).contiguous()
    with torch.no_grad():
        enc.delta_embedding.weight.copy_(raw)
    epsilon = enc.get_epsilon().contiguous()
    projected = enc.get_projection().contiguous()
    norms, clipped = raw.norm(dim=1), (projected - raw).abs().amax(dim=1) > 0
    assert clipped.any() and not clipped.all(), f"{name}: the projection must clip some rows, not all"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    trainable = buf.getvalue().strip()

    # The loss and the delta's (masked) gradient on one batch, from the raw delta.
    labels, types = training_batch(inputs)
    model.eval()  # GPT-2's dropout off; the gradient flows all the same
    out_loss = model(**inputs, labels=labels, input_type_mask=types.clone())
    out_loss.loss.backward()
    delta_grad = enc.delta_embedding.weight.grad.detach().clone().contiguous()
    loss = out_loss.loss.detach().reshape(1)
    with torch.no_grad():
        enc.delta_embedding.weight.copy_(raw)
        loss_default = model(**inputs, labels=labels).loss.detach().reshape(1)
        enc.delta_embedding.weight.copy_(raw)

    model.eval()
    logits = real_logits(model, inputs)
    nomask = {"input_ids": inputs["input_ids"]}
    logits_nomask = real_logits(model, nomask)
    base_logits = real_logits(load_base(base_dir), inputs)
    assert (logits - base_logits).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter")).eval()
    diff = (real_logits(again, inputs) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    save_file(dict(inputs, logits=logits, logits_nomask=logits_nomask, init_embedding=init_embedding,
                   raw_delta=raw, projected_delta=projected, epsilon=epsilon, labels=labels,
                   input_type_mask=types, loss=loss, delta_grad=delta_grad, loss_default=loss_default),
              os.path.join(case_dir, "reference.safetensors"))
    config = dict(peft_type="CPT", task_type="CAUSAL_LM", cpt_token_ids=TEMPLATE_IDS,
                  cpt_tokens_type_mask=TEMPLATE_TYPES, **kw)
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base=base, trainable=trainable, config=config), f, indent=1)
    print(f"{name}: {trainable}; loss {loss.item():.6f} (default {loss_default.item():.6f}); "
          f"clipped rows {clipped.int().tolist()} (norms {[round(x, 4) for x in norms.tolist()]}, "
          f"eps {[round(x, 4) for x in epsilon.tolist()]}); reload diff {diff:.1e}")


def check_one(base_dir, adapter_dir, outputs, tol=1e-4):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir).eval()
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = peft.get_peft_model_state_dict(model)
    if set(sd) != set(want):
        print(f"FAIL {adapter_dir}: keys differ from HF's: {sorted(set(sd) ^ set(want))[:4]}")
        return False
    bad = [k for k, v in sd.items() if v.dtype != want[k].dtype or not torch.equal(v, want[k])]
    if bad:
        print(f"FAIL {adapter_dir}: {bad[0]} did not load as saved")
        return False
    d = (real_logits(model, inputs) - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return diff <= tol


def make(out):
    make_base("llama", os.path.join(out, "llama"))
    make_base("gpt2", os.path.join(out, "gpt2"))
    for name in CASES:
        make_case(out, name)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        ok = all([check_one(*args[i:i + 3]) for i in range(1, len(args), 3)])
        sys.exit(0 if ok else 1)
    if len(args) != 2 or args[0] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    os.makedirs(args[1], exist_ok=True)
    torch.set_num_threads(1)
    make(args[1])
