#!/usr/bin/env python
"""AdaLoRA references made by HF PEFT for tests/test_adalora.cpp.

Usage:
  python tests/parity/make_adalora.py OUT_DIR
  python tests/parity/make_adalora.py check BASE_DIR ADAPTER_DIR OUTPUTS.safetensors [--tol 1e-4]

check loads ADAPTER_DIR on BASE_DIR with PeftModel.from_pretrained; the file's keys must be
exactly those get_peft_model_state_dict gives for the loaded model (HF never saves ranknum,
so it is not a missing key here), loaded unchanged, and the logits must match OUTPUTS'
(masked positions ignored); exit 1 on failure.

Writes:
  llama/, gpt2/        tiny random LlamaForCausalLM / GPT2LMHeadModel (fp32) and
                       inputs.safetensors (input_ids, attention_mask with right padding in row 1)
  <case>/adapter/      PeftModel.save_pretrained of an AdaLoRA adapter with random A, E, B
  <case>/reference.safetensors
                       inputs, logits, merged_logits (merge_and_unload)
  <case>/case.json     {"base", "trainable": HF's print_trainable_parameters line of the adapter
                        loaded with is_trainable=True, "ranks": {module: kept ranks}}
  Cases: adalora_llama (a rank_pattern that keeps some ranks, all of one layer and none of
  another; the file holds only the kept ranks), adalora_gpt2 (Conv1D layers, no rank_pattern,
  lora_alpha=0 so scaling = init_r). Each adapter reloads in PEFT with the logits to 1e-6.

  train/               the training parity run: data.jsonl (16 rows of 12 token ids),
                       init_adapter/ (an AdaLoRA adapter with random E, no rank_pattern, the
                       schedule in its config), hf_final/ (save_pretrained after HF's schedule
                       ran for train.json's steps) and reference.safetensors (the final adapter's
                       full, unsliced in-memory tensors under their file keys, and `losses`,
                       HF's loss of every step with the orthogonal regularizer in it).
                       HF's loop: the same batches in order (no shuffle), loss =
                       model(input_ids, labels).loss (AdaLoraModel adds orth_reg_weight * reg),
                       clip_grad_norm_(1.0), torch AdamW (foreach=False), the linear schedule
                       lr * (T - k) / T, then update_and_allocate(k) before zero_grad, k the
                       0-based step (HF Trainer's global_step in on_optimizer_step).
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
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from peft import AdaLoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

hf_logging.set_verbosity_error()
warnings.simplefilter("ignore")

TRAIN = dict(steps=12, batch=4, lr=2e-2, max_grad_norm=1.0,
             config=dict(init_r=4, target_r=2, tinit=2, tfinal=3, deltaT=2, total_step=12, beta1=0.85, beta2=0.85,
                         orth_reg_weight=0.3, lora_alpha=8, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]))


def make_base(kind, out_dir):
    torch.manual_seed(7 if kind == "llama" else 8)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))
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


def trainable_line(model):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    return buf.getvalue().strip()


def randomize(model, scale_e=1.0):
    """Non-trivial A, E, B instead of HF's init (E = 0 would make the adapter a no-op)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_E." in n:
                p.copy_(scale_e * torch.randn_like(p))
            elif ".lora_A." in n or ".lora_B." in n:
                p.copy_(0.3 * torch.randn_like(p))


def random_rank_pattern(model, init_r):
    """A mask per adapted module: the first keeps every rank, the second none, the rest a mix."""
    names = sorted({n.rsplit(".lora_E.", 1)[0] for n, _ in model.base_model.model.named_parameters() if ".lora_E." in n})
    pattern = {}
    for i, name in enumerate(names):
        keep = [True] * init_r if i == 0 else [False] * init_r if i == 1 else (torch.rand(init_r) < 0.5).tolist()
        if i > 1 and not any(keep):
            keep[0] = True
        pattern[f"{name}.lora_E"] = keep
    return pattern


def make_case(out, name, base, config, with_pattern):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    model = get_peft_model(load_base(base_dir), config)
    torch.manual_seed(11)
    randomize(model)
    if with_pattern:
        pattern = random_rank_pattern(model, config.init_r)
        model.peft_config["default"].rank_pattern = pattern
        # What training leaves in memory: the masked singular values are zero.
        model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, pattern)
    model.eval()
    logits = logits_of(model, inputs)
    assert (logits - logits_of(load_base(base_dir), inputs)).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter"), is_trainable=True).eval()
    diff = (logits_of(again, inputs) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    ranks = {n.rsplit(".lora_E.", 1)[0].replace("base_model.model.", "", 1): p.shape[0]
             for n, p in again.named_parameters() if ".lora_E." in n}
    merged = logits_of(again.merge_and_unload(), inputs)
    save_file(dict(inputs, logits=logits, merged_logits=merged), os.path.join(case_dir, "reference.safetensors"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter"), is_trainable=True)
    info = dict(base=base, trainable=trainable_line(again), ranks=ranks)
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"{name}: {info['trainable']}; ranks {sorted(ranks.values())}; reload diff {diff:.1e}")


def counting_rows():
    g = torch.Generator().manual_seed(5)
    starts = torch.randint(1, 50, (16,), generator=g)
    return [[int(s) + t for t in range(12)] for s in starts]


def make_train(out):
    d = os.path.join(out, "train")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    base_dir = os.path.join(out, "llama")
    rows = counting_rows()
    with open(os.path.join(d, "data.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps({"input_ids": r}) + "\n")
    config = AdaLoraConfig(**TRAIN["config"])
    torch.manual_seed(21)
    init = get_peft_model(load_base(base_dir), config)
    with torch.no_grad():  # HF's init, plus small singular values so every triplet matters from step 0
        for n, p in init.named_parameters():
            if ".lora_E." in n:
                p.copy_(0.05 * torch.randn_like(p))
    init.save_pretrained(os.path.join(d, "init_adapter"))

    model = get_peft_model(load_base(base_dir), AdaLoraConfig(**TRAIN["config"]))
    result = set_peft_model_state_dict(model, load_file(os.path.join(d, "init_adapter", "adapter_model.safetensors")))
    assert not result.unexpected_keys and not [k for k in result.missing_keys if "lora_" in k]
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=TRAIN["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False)
    steps, bs = TRAIN["steps"], TRAIN["batch"]
    per_epoch = len(rows) // bs
    losses = []
    for k in range(steps):
        for g in opt.param_groups:
            g["lr"] = TRAIN["lr"] * (steps - k) / steps
        b = (k % per_epoch) * bs
        ids = torch.tensor(rows[b:b + bs])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(params, TRAIN["max_grad_norm"])
        opt.step()
        model.base_model.update_and_allocate(k)
        opt.zero_grad()
    full = {f"base_model.model.{n.replace('base_model.model.', '', 1).replace('.default', '')}": p.detach().clone()
            for n, p in model.named_parameters() if ".lora_" in n}
    pattern = {k.replace(".default", ""): v for k, v in model.peft_config["default"].rank_pattern.items()}
    model.save_pretrained(os.path.join(d, "hf_final"))
    save_file(dict(full, losses=torch.tensor(losses, dtype=torch.float64)), os.path.join(d, "reference.safetensors"))
    with open(os.path.join(d, "train.json"), "w") as f:
        json.dump(dict(TRAIN, rank_pattern=pattern), f, indent=1)
    kept = {k: sum(v) for k, v in pattern.items()}
    print(f"train: losses {losses[0]:.4f} -> {losses[-1]:.4f}; kept ranks {kept}")


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
    make_case(out, "adalora_llama", "llama",
              AdaLoraConfig(init_r=6, target_r=3, total_step=10, lora_alpha=16,
                            target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]), True)
    make_case(out, "adalora_gpt2", "gpt2",
              AdaLoraConfig(init_r=4, target_r=2, total_step=10, lora_alpha=0, fan_in_fan_out=True,
                            target_modules=["c_attn", "c_fc"]), False)
    make_train(out)


def check(base_dir, adapter_dir, outputs, tol):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir)
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = get_peft_model_state_dict(model)
    if set(sd) != set(want):
        print(f"FAIL: adapter keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        sys.exit(1)
    for k, v in sd.items():
        if v.shape != want[k].shape or not torch.equal(v, want[k]):
            print(f"FAIL: {k} did not load as saved ({tuple(v.shape)} in the file, {tuple(want[k].shape)} in HF)")
            sys.exit(1)
    got = logits_of(model.eval(), inputs)
    d = (got - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    sys.exit(0 if diff <= tol else 1)


if __name__ == "__main__":
    if len(sys.argv) == 2:
        make(sys.argv[1])
    elif len(sys.argv) in (5, 7) and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[6]) if len(sys.argv) == 7 else 1e-4)
    else:
        sys.exit(__doc__)
