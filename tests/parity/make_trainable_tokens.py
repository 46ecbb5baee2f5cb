#!/usr/bin/env python
"""Trainable-tokens references made by HF PEFT for tests/test_trainable_tokens.cpp.

Usage:
  python tests/parity/make_trainable_tokens.py make OUT_DIR
  python tests/parity/make_trainable_tokens.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes:
  llama/, llama_tied/      tiny random LlamaForCausalLM (fp32), untied and with
                           tie_word_embeddings, and inputs.safetensors (input_ids,
                           attention_mask with right padding in row 1)
  <case>/adapter/          PeftModel.save_pretrained of an adapter whose token rows
                           (trainable_tokens_delta) and LoRA B matrices were set to random values
  <case>/reference.safetensors
                           inputs, logits, merged_logits (after merge_and_unload)
  <case>/case.json         {"base", "trainable": print_trainable_parameters line}
  Cases: tt_tied / tt_untied (TRAINABLE_TOKENS on the default target, the input embedding;
  tied: lm_head shares the rows), lora_tt_tied (LoRA with trainable_token_indices as a
  list), lora_tt_dict (LoRA with {"embed_tokens": ..., "lm_head": ...} on the untied model:
  the head's rows train apart), lora_tt_tied_apart (that dict on the tied model: different
  indices, so the tied layers train apart, each on the shared weight). The token ids include ids of the inputs, so the embedding's
  rows change the logits. Each adapter reloads into a fresh base within 1e-6 first.

check loads each ADAPTER on its BASE with PeftModel.from_pretrained in one process (the
file's keys must be exactly get_peft_model_state_dict's, and load as saved) and compares
the logits with OUTPUTS' (masked positions ignored, tol 1e-4); exit 1 if any fails.
"""

import os
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, logits_of, make_case, pin_hash_seed  # noqa: E402

import peft  # noqa: E402
from peft import LoraConfig, PeftModel, TrainableTokensConfig  # noqa: E402

hf_logging.set_verbosity_error()
warnings.simplefilter("ignore")


def make_base(out_dir, tie, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    ids = torch.randint(0, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    save_file({"input_ids": ids, "attention_mask": mask}, os.path.join(out_dir, "inputs.safetensors"))
    return ids


def perturb(model):
    """Random token rows and LoRA B (both start as no-ops)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "trainable_tokens_delta" in n:
                p.copy_(torch.randn_like(p))
            elif "lora_B" in n:
                p.copy_(0.3 * torch.randn_like(p))


def make(out):
    pin_hash_seed()
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    ids = {"llama": make_base(os.path.join(out, "llama"), False, 7),
           "llama_tied": make_base(os.path.join(out, "llama_tied"), True, 8)}

    def tokens(base, extra):
        # three ids the inputs use, and ids they do not (these reach the logits through a tied head only)
        return sorted(set(ids[base][0, :3].tolist()) | set(extra))

    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    cases = [
        ("tt_tied", "llama_tied", TrainableTokensConfig(token_indices=tokens("llama_tied", [1, 63]))),
        ("tt_untied", "llama", TrainableTokensConfig(token_indices=tokens("llama", [2, 60]))),
        ("lora_tt_tied", "llama_tied", LoraConfig(**lora, trainable_token_indices=tokens("llama_tied", [5]))),
        ("lora_tt_dict", "llama", LoraConfig(**lora, trainable_token_indices={
            "embed_tokens": tokens("llama", [9]), "lm_head": [0, 4, 31]})),
        ("lora_tt_tied_apart", "llama_tied", LoraConfig(**lora, trainable_token_indices={
            "embed_tokens": tokens("llama_tied", [9]), "lm_head": [0, 4, 31]})),
    ]
    for name, base, cfg in cases:
        make_case(out, name, base, cfg, perturb)


def check(triples, tol=1e-4):
    torch.set_num_threads(2)
    failed = 0
    for base_dir, adapter_dir, outputs in triples:
        data = load_file(outputs)
        inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
        model = PeftModel.from_pretrained(load_base(base_dir), adapter_dir).eval()
        sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        want = peft.get_peft_model_state_dict(model)
        if set(sd) != set(want):
            print(f"FAIL {adapter_dir}: keys differ from HF's: missing {sorted(set(want) - set(sd))[:3]}, "
                  f"unexpected {sorted(set(sd) - set(want))[:3]}")
            failed += 1
            continue
        bad = [k for k, v in sd.items() if not torch.equal(v, want[k])]
        if bad:
            print(f"FAIL {adapter_dir}: {bad[0]} did not load as saved")
            failed += 1
            continue
        d = (logits_of(model, inputs) - data["logits"]).abs()[inputs["attention_mask"].bool()]
        diff = d.max().item()
        ok = diff <= tol
        failed += not ok
        print(f"{'OK' if ok else 'FAIL'} {adapter_dir}: max|logits diff| = {diff:.3e} (tol {tol:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        make(args[1])
    elif len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        sys.exit(check([args[i:i + 3] for i in range(1, len(args), 3)]))
    else:
        sys.exit(__doc__)
