#!/usr/bin/env python
"""Adaption prompt (LLaMA-Adapter) references made by HF PEFT for tests/test_adaption_prompt.cpp.

Usage:
  python tests/parity/make_adaption_prompt.py make OUT_DIR
  python tests/parity/make_adaption_prompt.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes llama/ and gpt2/ (make_vera.py's tiny random models: the Llama has 4 query and 2
key/value heads), mistral/ (4 query heads, 1 key/value head), each with inputs.safetensors,
and per case <case>/adapter/ (PeftModel.save_pretrained; prompts N(0, 1) as HF draws them,
gates set to N(0, 0.5^2) values instead of HF's zeros), <case>/reference.safetensors
(inputs, logits; gen_prompt_ids [2, p] left-padded with 0 and gen_prompt_mask, gen_ids:
HF's greedy generate with a KV cache, 4 new tokens, no EOS) and <case>/case.json
({"base", "trainable"}); llama_train/ is the Llama with weights N(0, 0.2^2), for training.

check loads each ADAPTER on BASE with PeftModel.from_pretrained in one process; the file's
tensors must be exactly HF's adapter state dict (keys and values) and the logits within
1e-4 of OUTPUTS' (masked positions ignored); exit 1 on any failure.
"""

import contextlib
import io
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import greedy_generation  # noqa: E402
from make_vera import load_base, logits_of, make_base, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import AdaptionPromptConfig, PeftModel, get_peft_model  # noqa: E402

CASES = [
    ("ap_llama", "llama", dict(adapter_len=4, adapter_layers=2)),
    ("ap_llama_top", "llama", dict(adapter_len=3, adapter_layers=1)),
    ("ap_mistral", "mistral", dict(adapter_len=5, adapter_layers=2)),
    ("ap_gpt2", "gpt2", dict(adapter_len=3, adapter_layers=2)),
]
GEN_NEW = 4


def make_mistral(out_dir):
    torch.manual_seed(9)
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                        sliding_window=None, tie_word_embeddings=False)
    MistralForCausalLM(cfg).save_pretrained(out_dir)
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(out_dir, "inputs.safetensors"))


def make_llama_train(out_dir):
    """make_vera.py's Llama shape with weights N(0, 0.2^2): the default 0.02 leaves logits so
    flat that no adapter of the residual stream moves the counting data's loss much."""
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, initializer_range=0.2)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)


def perturb(model):
    """Non-zero gates (HF starts them at zero, which would hide the prompts)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("adaption_gate"):
                p.copy_(0.5 * torch.randn_like(p))


def make_case(out, name, base, kw):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(base_dir, "inputs.safetensors"))
    torch.manual_seed(11)
    model = get_peft_model(load_base(base_dir), AdaptionPromptConfig(task_type="CAUSAL_LM", **kw))
    perturb(model)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.print_trainable_parameters()
    trainable = buf.getvalue().strip()
    model.eval()
    logits = logits_of(model, inputs)
    assert (logits - logits_of(load_base(base_dir), inputs)).abs().max() > 1e-2, f"{name}: the adapter changes nothing"
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    again = PeftModel.from_pretrained(load_base(base_dir), os.path.join(case_dir, "adapter")).eval()
    diff = (logits_of(again, inputs) - logits).abs().max().item()
    assert diff <= 1e-6, f"{name}: reloaded adapter differs by {diff}"
    save_file(dict(inputs, logits=logits, **greedy_generation(model, GEN_NEW, use_cache=True)),
              os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base=base, trainable=trainable), f, indent=1)
    print(f"{name}: {trainable}; reload diff {diff:.1e}")


def check_one(base_dir, adapter_dir, outputs, tol=1e-4):
    data = load_file(outputs)
    inputs = {k: data[k] for k in ("input_ids", "attention_mask") if k in data}
    model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir)
    sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = peft.get_peft_model_state_dict(model)
    if set(sd) != set(want):
        print(f"FAIL {adapter_dir}: keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
              f"unexpected {sorted(set(sd) - set(want))[:3]}")
        return False
    for k, v in sd.items():
        if v.dtype != want[k].dtype or not torch.equal(v, want[k]):
            print(f"FAIL {adapter_dir}: {k} did not load as saved ({v.dtype} vs HF's {want[k].dtype})")
            return False
    d = (logits_of(model.eval(), inputs) - data["logits"]).abs()
    if "attention_mask" in inputs:
        d = d[inputs["attention_mask"].bool()]
    diff = d.max().item()
    print(f"{'OK' if diff <= tol else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return diff <= tol


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        pin_hash_seed()
        out = args[1]
        os.makedirs(out, exist_ok=True)
        torch.set_num_threads(2)
        make_base("llama", os.path.join(out, "llama"))
        make_base("gpt2", os.path.join(out, "gpt2"))
        make_mistral(os.path.join(out, "mistral"))
        make_llama_train(os.path.join(out, "llama_train"))
        for name, base, kw in CASES:
            make_case(out, name, base, kw)
    elif len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        ok = True
        for i in range(1, len(args), 3):
            ok &= check_one(args[i], args[i + 1], args[i + 2])
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
