#!/usr/bin/env python
"""Multitask prompt tuning and Poly references made by HF PEFT for tests/test_multitask.cpp.

Usage:
  python tests/parity/make_multitask.py make OUT_DIR
  python tests/parity/make_multitask.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes llama/ (make_vera.py's tiny random LLaMA with inputs.safetensors), llama_train/
(the same shape with initializer_range 0.2, whose logits can move far enough for a training
test) and per case <case>/adapter/ (save_pretrained with the
parameters moved off HF's init), <case>/reference.safetensors (input_ids, attention_mask,
task_ids: [2, 0], or [0, 0] for one task; logits of the real tokens in eval mode; for Poly "weights.<module path>": the
router's mixing weights for the rows) and <case>/case.json ({"base", "trainable"}).
Cases:
  mpt_llama       MULTITASK_PROMPT_TUNING, 4 virtual tokens, 3 tasks, 2 ranks
  mpt_source      EXACT_SOURCE_TASK init from mpt_llama's file (task 1), 1 task; its
                  reference holds HF's initial prefix_task_cols / prefix_task_rows /
                  prompt_embeddings ("init.*"), with mpt_average ("AVERAGE_SOURCE_TASKS")
                  and mpt_shared ("ONLY_SOURCE_SHARED") beside it
  mpt_t5          MULTITASK_PROMPT_TUNING on a tiny T5 (make_t5.py's t5_relu) with
                  num_transformer_submodules 1: the encoder's input gets the prompts. HF's
                  seq2seq MPT runs given labels only (it derives the decoder's input); the
                  reference holds labels, decoder_input_ids (labels shifted right after
                  decoder_start 0, as T5 shifts them) and the logits
  poly_llama      POLY r=4, 3 tasks, 4 skills, on q_proj, v_proj
  poly_llama_mhr  POLY with 2 splits (multi-head routing), r=2, 2 skills, on o_proj,
                  up_proj, down_proj of layer 1
check loads each ADAPTER on BASE with PeftModel.from_pretrained, the file's keys must be
HF's, and the logits for OUTPUTS' task_ids must be OUTPUTS' (1e-4); exit 1 on failure.
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
from transformers import AutoModelForSeq2SeqLM, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, make_base, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import MultitaskPromptTuningConfig, PeftModel, PolyConfig, get_peft_model  # noqa: E402

warnings.simplefilter("ignore")


def mpt(**kw):
    return MultitaskPromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, **kw)


def poly(**kw):
    return PolyConfig(task_type="CAUSAL_LM", n_tasks=3, **kw)


def real_logits(model, inputs, task_ids):
    with torch.no_grad():
        out = model(**inputs, task_ids=task_ids).logits.float()
    return out[:, out.shape[1] - inputs["input_ids"].shape[1]:].contiguous()


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "prefix_task" in n:
                p.copy_(torch.randn_like(p))
            elif "poly_lora_B" in n:
                p.copy_(0.3 * torch.randn_like(p))
            elif "module_logits" in n:
                p.copy_(2.0 * torch.randn_like(p))


def mixing_weights(model, task_ids):
    out = {}
    for name, m in model.named_modules():
        if hasattr(m, "poly_router") and "default" in m.poly_router:
            m.poly_router["default"].eval()
            with torch.no_grad():
                w = m.poly_router["default"](task_ids=task_ids, input_ids=None)
            out["weights." + name.removeprefix("base_model.model.")] = w.contiguous()
    return out


def make_case(out, name, config, tweak=True):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, "llama")
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    tasks = config.num_tasks if config.peft_type == "MULTITASK_PROMPT_TUNING" else config.n_tasks
    task_ids = torch.tensor([2, 0] if tasks > 2 else [0, 0])
    torch.manual_seed(3)
    model = get_peft_model(load_base(base_dir), config)
    init = {}
    if config.peft_type == "MULTITASK_PROMPT_TUNING":
        init = {"init." + k: v.detach().clone().contiguous()
                for k, v in peft.get_peft_model_state_dict(model).items()}
    torch.manual_seed(11)
    if tweak:
        perturb(model)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    model.eval()
    logits = real_logits(model, inputs, task_ids)
    base_logits = load_base(base_dir)(**inputs).logits.detach()
    assert (logits - base_logits).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter")).eval()
    diff = (real_logits(again, inputs, task_ids) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    extra = mixing_weights(model, task_ids)
    save_file(dict(inputs, task_ids=task_ids, logits=logits, **extra, **init),
              os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base="llama", trainable=buf.getvalue().strip()), f, indent=1)
    print(f"{name}: {buf.getvalue().strip()}; reload diff {diff:.1e}")


def make_t5_case(out):
    """MPT on T5: HF's PeftModelForSeq2SeqLM puts the first n of the 2n task-modulated
    prompts before the encoder's input."""
    from make_t5 import build, t5_relu
    base_dir = os.path.join(out, "t5")
    build(t5_relu, False, 2468).save_pretrained(base_dir)
    torch.manual_seed(5)
    inputs = dict(input_ids=torch.randint(2, 101, (2, 7)), attention_mask=torch.ones(2, 7, dtype=torch.long),
                  labels=torch.randint(2, 101, (2, 5)))
    inputs["attention_mask"][1, 5:] = 0
    task_ids = torch.tensor([2, 0])
    load = lambda: AutoModelForSeq2SeqLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    torch.manual_seed(3)
    model = get_peft_model(load(), MultitaskPromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3,
                                                               num_tasks=3, num_ranks=2, num_transformer_submodules=1))
    torch.manual_seed(11)
    perturb(model)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs, task_ids=task_ids).logits.float().contiguous()
        base = load()(**inputs).logits
    assert (logits - base).abs().max() > 1e-2
    case_dir = os.path.join(out, "mpt_t5")
    shutil.rmtree(case_dir, ignore_errors=True)
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    decoder_input_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), inputs["labels"][:, :-1]], 1)
    save_file(dict(inputs, decoder_input_ids=decoder_input_ids, task_ids=task_ids, logits=logits),
              os.path.join(case_dir, "reference.safetensors"))
    print(f"mpt_t5: moves logits {(logits - base).abs().max().item():.3g}")


def make(out):
    pin_hash_seed()
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    make_base("llama", os.path.join(out, "llama"))
    torch.manual_seed(9)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=False, initializer_range=0.2)).save_pretrained(
        os.path.join(out, "llama_train"))
    make_case(out, "mpt_llama", mpt(num_tasks=3, num_ranks=2))
    source = os.path.abspath(os.path.join(out, "mpt_llama", "adapter", "adapter_model.safetensors"))
    for name, init in (("mpt_source", "EXACT_SOURCE_TASK"), ("mpt_average", "AVERAGE_SOURCE_TASKS"),
                       ("mpt_shared", "ONLY_SOURCE_SHARED")):
        make_case(out, name, mpt(num_tasks=1, num_ranks=2, prompt_tuning_init=init,
                                 prompt_tuning_init_state_dict_path=source, prompt_tuning_init_task=1),
                  tweak=False)
    make_t5_case(out)
    make_case(out, "poly_llama", poly(r=4, n_skills=4, target_modules=["q_proj", "v_proj"]))
    make_case(out, "poly_llama_mhr", poly(r=2, n_skills=2, n_splits=2,
                                          target_modules=r".*layers\.1\.(self_attn\.o_proj|mlp\.(up|down)_proj)"))


def check(triples):
    ok = True
    for base_dir, adapter_dir, outputs in triples:
        data = load_file(outputs)
        inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
        model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir).eval()
        sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        want = peft.get_peft_model_state_dict(model)
        if set(sd) != set(want):
            print(f"FAIL {adapter_dir}: keys differ from HF's: {sorted(set(sd) ^ set(want))[:4]}")
            ok = False
            continue
        bad = [k for k, v in sd.items() if not torch.equal(v, want[k])]
        if bad:
            print(f"FAIL {adapter_dir}: {bad[0]} did not load as saved")
            ok = False
            continue
        d = (real_logits(model, inputs, data["task_ids"]) - data["logits"]).abs()
        diff = d[inputs["attention_mask"].bool()].max().item()
        print(f"{'OK' if diff <= 1e-4 else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e}")
        ok = ok and diff <= 1e-4
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check" and (len(sys.argv) - 2) % 3 == 0:
        check([sys.argv[i:i + 3] for i in range(2, len(sys.argv), 3)])
    else:
        sys.exit(__doc__)
