#!/usr/bin/env python
"""Check C++-produced outputs (and C++-written adapters / merged checkpoints) against HF + PEFT.

Usage: python tests/parity/check_adapter.py BASE_DIR ADAPTER_DIR_OR_- OUTPUTS.safetensors [--tol 1e-4]

* BASE_DIR: a transformers checkpoint (config.json + safetensors). The class is chosen from
  config.json "architectures"[0] (BertModel / BertForSequenceClassification / ViTModel /
  ViTForImageClassification / Dinov2Model / Dinov2ForImageClassification, otherwise
  AutoModelForCausalLM); eager attention, float32.
* ADAPTER_DIR: a PEFT adapter folder loaded with PeftModel.from_pretrained(base, ADAPTER_DIR), any
  PEFT type (LORA, IA3, LN_TUNING, LOHA, LOKR, PROMPT_TUNING, P_TUNING, PREFIX_TUNING, ...).
  "-" means BASE_DIR is a complete (e.g. merged) checkpoint that is used as is.
* OUTPUTS.safetensors: the inputs (input_ids, attention_mask, token_type_ids or pixel_values)
  and the expected output `logits` or `last_hidden_state` (float32).

Fails (exit 1) when loading reports missing / unexpected / mismatched keys (for the base
checkpoint and for the adapter), or when max |output - expected| > tol. For 3-D outputs
together with an attention_mask only positions with attention_mask == 1 are compared.

Prompt-learning adapters: the file must hold `prompt_embeddings` (loaded strictly into the prompt
encoder, shape included) plus exactly the modules_to_save keys, nothing else. PROMPT_TUNING /
P_TUNING (virtual tokens prepended as input embeddings) make HF return outputs with
num_virtual_tokens extra leading positions; those are removed before comparing, so the expected
`logits` / `last_hidden_state` cover the real tokens only. PREFIX_TUNING adds no positions.
"""

import argparse
import json
import logging
import re
import sys
import warnings

import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    BertForSequenceClassification,
    BertModel,
    Dinov2ForImageClassification,
    Dinov2Model,
    ViTForImageClassification,
    ViTModel,
)
from transformers.utils import logging as hf_logging

import peft.peft_model as peft_model_mod
from peft import PeftModel
from peft.utils import PeftType, get_peft_model_state_dict

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
OUTPUT_KEYS = ("logits", "last_hidden_state")
# key-related loading messages (transformers' "LOAD REPORT" table, PEFT's "Found missing adapter keys",
# torch/PEFT size-mismatch notes); unrelated warnings are only printed
KEY_PROBLEM_RE = re.compile(
    r"missing[_ ](adapter[_ ])?keys|unexpected[_ ]keys|LOAD REPORT|not initialized from|were not used|mismatch",
    re.IGNORECASE,
)
ADAPTER_NAME = "default"
# the one key a prompt-learning adapter file holds besides modules_to_save; PEFT loads it into the
# prompt encoder itself (strict), so model.load_state_dict reports it as unexpected
PROMPT_EMBEDDINGS_KEY = "prompt_embeddings"
# prompt-learning methods whose virtual tokens are key/value prefixes, not extra input positions
PREFIX_TYPES = {PeftType.PREFIX_TUNING, PeftType.CARTRIDGE}


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        try:
            self.messages.append(f"[{record.name}] {record.getMessage()}")
        except Exception:  # pragma: no cover
            self.messages.append(f"[{record.name}] {record.msg}")


def model_class_for(base_dir):
    with open(f"{base_dir}/config.json") as f:
        arch = json.load(f)["architectures"][0]
    return {
        "BertModel": BertModel,
        "BertForSequenceClassification": BertForSequenceClassification,
        "ViTModel": ViTModel,
        "ViTForImageClassification": ViTForImageClassification,
        "Dinov2Model": Dinov2Model,
        "Dinov2ForImageClassification": Dinov2ForImageClassification,
    }.get(arch, AutoModelForCausalLM)


def virtual_output_positions(model):
    """Leading output positions that belong to virtual tokens: num_virtual_tokens for prompt-learning
    methods that prepend input embeddings (PROMPT_TUNING, P_TUNING, ...), else 0."""
    cfg = model.peft_config[model.active_adapter] if isinstance(model, PeftModel) else None
    if cfg is None or not cfg.is_prompt_learning or cfg.peft_type in PREFIX_TYPES:
        return 0
    return cfg.num_virtual_tokens * (cfg.num_transformer_submodules or 1)


def real_token_output(model, out, out_key):
    """out.<out_key> as float32, with the virtual-token positions of prompt methods removed from
    sequence-shaped (3-D) outputs; 2-D outputs (classification logits) are returned as they are."""
    actual = getattr(out, out_key, None)
    if actual is None:
        return None
    actual = actual.float()
    n = virtual_output_positions(model)
    if n and actual.dim() == 3:
        actual = actual[:, n:]
    return actual.contiguous()


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def load_model(base_dir, adapter_dir):
    """Returns (model, problems) where problems lists every key-related loading issue."""
    problems = []
    collector = _Collector()
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("peft")]
    for lg in loggers:
        lg.addHandler(collector)
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()

    # capture the raw (unfiltered) load result of set_peft_model_state_dict: PeftModel.load_adapter
    # filters missing keys down to lora_* ones and from_pretrained never reports unexpected keys.
    raw_results = []
    orig_set = peft_model_mod.set_peft_model_state_dict

    def recording_set(*args, **kwargs):
        res = orig_set(*args, **kwargs)
        raw_results.append((list(res.missing_keys), list(res.unexpected_keys)))
        return res

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls = model_class_for(base_dir)
            model, info = cls.from_pretrained(
                base_dir, attn_implementation="eager", dtype=torch.float32, output_loading_info=True
            )
            for field in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
                vals = info.get(field) or []
                if vals:
                    problems.append(f"base checkpoint {field}: {sorted(map(str, vals))}")

            if adapter_dir != "-":
                peft_model_mod.set_peft_model_state_dict = recording_set
                try:
                    model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=ADAPTER_NAME)
                finally:
                    peft_model_mod.set_peft_model_state_dict = orig_set
    finally:
        for lg in loggers:
            lg.removeHandler(collector)

    messages = [f"[warning {w.category.__name__}] {w.message}" for w in caught] + collector.messages
    for m in messages:
        print(f"  load message: {m.splitlines()[0][:300]}")
        if KEY_PROBLEM_RE.search(m):
            problems.append(f"loading emitted: {m[:2000]}")

    if adapter_dir != "-":
        if len(raw_results) != 1:
            problems.append(f"expected one set_peft_model_state_dict call, saw {len(raw_results)}")
        else:
            missing, unexpected = raw_results[0]
            cfg = model.peft_config[ADAPTER_NAME]
            if cfg.is_prompt_learning:
                # consumed by prompt_encoder._load_adapter_state_dict (strict, shape-checked); a file
                # without it raises KeyError during from_pretrained
                unexpected = [k for k in unexpected if k != PROMPT_EMBEDDINGS_KEY]
                # the prompt encoder is not loaded through model.load_state_dict
                missing = [k for k in missing if not k.startswith(f"prompt_encoder.{ADAPTER_NAME}.")]
            if unexpected:
                problems.append(f"adapter unexpected keys: {sorted(unexpected)}")
            # adapter keys carry the adapter name (lora_A.default.weight, modules_to_save.default.*,
            # lora_magnitude_vector.default.weight, lora_embedding_A.default, ia3_l.default,
            # hada_w1_a.default, lokr_w1.default, ln_tuning_layers.default.weight, ...)
            tag = f".{ADAPTER_NAME}"
            adapter_missing = [k for k in missing if f"{tag}." in k or k.endswith(tag)]
            # trainable biases (bias="all"/"lora_only") are saved without an adapter name
            if getattr(cfg, "bias", "none") != "none":
                saved = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME, save_embedding_layers=False)
                bias_keys = {k for k in saved if k.endswith("bias") and tag not in k}
                adapter_missing += [k for k in missing if k in bias_keys]
            if adapter_missing:
                problems.append(f"adapter missing keys: {sorted(set(adapter_missing))}")
    model.eval()
    return model, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base_dir")
    ap.add_argument("adapter_dir")
    ap.add_argument("outputs")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(2)

    data = load_file(args.outputs)
    inputs = {k: data[k] for k in INPUT_KEYS if k in data}
    if not inputs:
        fail(f"{args.outputs} holds no inputs (expected some of {INPUT_KEYS}); keys: {sorted(data)}")
    out_key = next((k for k in OUTPUT_KEYS if k in data), None)
    if out_key is None:
        fail(f"{args.outputs} holds none of {OUTPUT_KEYS}; keys: {sorted(data)}")
    expected = data[out_key]
    if expected.dtype != torch.float32:
        fail(f"{out_key} has dtype {expected.dtype}, expected float32")

    try:
        model, problems = load_model(args.base_dir, args.adapter_dir)
    except Exception as e:  # e.g. size mismatch, a modules_to_save key absent from the adapter file
        fail(f"loading raised {type(e).__name__}: {str(e)[:2000]}")
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        sys.exit(1)

    with torch.no_grad():
        out = model(**inputs)
    actual = real_token_output(model, out, out_key)
    if actual is None:
        fail(f"model output has no {out_key}")
    n_virtual = virtual_output_positions(model) if actual.dim() == 3 else 0
    if tuple(actual.shape) != tuple(expected.shape):
        fail(
            f"shape mismatch for {out_key}: model {tuple(actual.shape)} vs expected {tuple(expected.shape)}"
            + (f" (after removing {n_virtual} virtual-token positions)" if n_virtual else "")
        )

    diff = (actual - expected).abs()
    mask = inputs.get("attention_mask")
    note = "all positions"
    if diff.dim() == 3 and mask is not None and tuple(mask.shape) == tuple(diff.shape[:2]):
        diff = diff[mask.bool()]
        note = f"{int(mask.sum())} unmasked positions"
    if n_virtual:
        note += f", {n_virtual} virtual-token positions removed"
    if not torch.isfinite(expected).all():
        fail(f"expected {out_key} contains non-finite values")
    max_diff = diff.max().item() if diff.numel() else 0.0
    ok = max_diff <= args.tol
    print(
        f"{'OK' if ok else 'FAIL'}: {out_key}{list(expected.shape)} max|diff|={max_diff:.3e} "
        f"tol={args.tol:g} ({note})"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
