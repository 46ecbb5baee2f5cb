#!/usr/bin/env python
"""Random-weight Whisper made by transformers, with reference outputs, greedy generation
and an HF PEFT LoRA adapter, for tests/test_whisper.cpp; and the check of adapters the
C++ side saves.

Usage: python tests/parity/make_whisper.py make OUT_DIR
       python tests/parity/make_whisper.py check BASE_DIR ADAPTER_DIR|- OUTPUTS.safetensors [BASE ADAPTER OUTPUTS ...]

make: OUT_DIR/whisper_tiny/ holds WhisperForConditionalGeneration (save_pretrained,
  float32: d_model 64, 2 + 2 layers, 4 heads, 80 mel bins, max_source_positions 30 so 60
  frames, vocabulary 120 with Whisper's special tokens at 99..119: <|endoftext|> 99 (eos,
  pad), <|startoftranscript|> 100, <|en|> <|de|> <|fr|> 101-103, <|translate|> 104,
  <|transcribe|> 105, <|notimestamps|> 108), a generation_config.json as the real ones
  have (lang_to_id, task_to_id, forced_decoder_ids [[1, null], [2, 105]],
  suppress_tokens, begin_suppress_tokens), and reference.safetensors: input_features
  [2, 80, 60], labels (-100 on padding), decoder_input_ids (shift_tokens_right of the
  labels), logits, loss, encoder_last_hidden_state, num_parameters, and greedy
  generation by model.generate(input_features, max_new_tokens=GEN_NEW): gen_default
  (the config's prompt: language detected, transcribe, no timestamps) and gen_de_translate
  (language="de", task="translate"), both as return_dict_in_generate's sequences (prompt
  + new tokens, pad after an EOS).
  OUT_DIR/whisper_tiny/lora: HF PEFT LoRA on q_proj, v_proj (both stacks, cross-attention
  included; Whisper is not in PEFT's default table) with random B, and
  reference.safetensors: the inputs, logits and merged logits.
check: loads BASE_DIR (and the adapter with PeftModel.from_pretrained, whose saved keys
  must equal the file's), runs input_features and decoder_input_ids from OUTPUTS and
  fails (exit 1) when max |logits - OUTPUTS' logits| > 1e-4; several triples are checked
  in one process.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

EOS, START, NO_TIMESTAMPS = 99, 100, 108
LANGS = {"<|en|>": 101, "<|de|>": 102, "<|fr|>": 103}
TASKS = {"translate": 104, "transcribe": 105}
GEN_NEW = 12
DEC_LENGTHS = [9, 5]
MIN_MARGIN = 1e-2
SEED = 1268  # the first seed tried: one whose greedy margins are stable


def config():
    return WhisperConfig(vocab_size=120, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=96,
                         decoder_ffn_dim=96, max_source_positions=30, max_target_positions=40, pad_token_id=EOS,
                         bos_token_id=EOS, eos_token_id=EOS, decoder_start_token_id=START, suppress_tokens=None,
                         begin_suppress_tokens=None)


def generation_config():
    return GenerationConfig(decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=EOS,
                            lang_to_id=LANGS, task_to_id=TASKS, no_timestamps_token_id=NO_TIMESTAMPS,
                            is_multilingual=True, forced_decoder_ids=[[1, None], [2, TASKS["transcribe"]]],
                            suppress_tokens=[1, 5, 7, 106, 107], begin_suppress_tokens=[13, EOS], max_length=40)


def build(seed):
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config()).to(torch.float32)
    with torch.no_grad():
        # transformers' init (std 0.02) makes every row decode the same token; larger
        # weights give outputs that depend on the audio
        for name, p in model.named_parameters():
            if name.endswith("embed_positions.weight") and ".encoder." in name:
                continue  # the sinusoids
            if "layer_norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif p.dim() >= 2:
                fan_in = p[0].numel() if "conv" in name else p.shape[-1]
                p.copy_(torch.randn_like(p) * fan_in ** -0.5)
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.generation_config = generation_config()
    return model.eval()


def greedy(model, features, **kw):
    with torch.no_grad():
        out = model.generate(features, max_new_tokens=GEN_NEW, do_sample=False, num_beams=1,
                             return_dict_in_generate=True, output_scores=True, **kw)
    margin = min(float(torch.topk(sc.float(), 2).values.diff().abs().min()) for sc in out.scores)
    return out.sequences.contiguous(), margin


def detect_margin(model, features):
    """The smallest top-2 margin among the language tokens after <|startoftranscript|>."""
    with torch.no_grad():
        logits = model(features, decoder_input_ids=torch.full((features.shape[0], 1), START)).logits[:, -1]
    lang = logits[:, list(LANGS.values())]
    return float(torch.topk(lang, 2).values.diff().abs().min()), lang.argmax(-1).tolist()


def make_base(case_dir, seed):
    for _ in range(100):
        model = build(seed)
        torch.manual_seed(seed + 1)
        # rows of different loudness, so that they decode differently
        features = torch.randn(2, 80, 60) * torch.tensor([1.0, 4.0]).view(2, 1, 1)
        default, m1 = greedy(model, features)
        de, m2 = greedy(model, features, language="de", task="translate")
        lang_margin, langs = detect_margin(model, features)
        if (min(m1, m2, lang_margin) > MIN_MARGIN and len(set(default[:, 4:].flatten().tolist())) > 3
                and not torch.equal(default[0], default[1])):
            break
        seed += 1
    else:
        raise RuntimeError("no seed with stable greedy margins")
    labels = torch.full((2, max(DEC_LENGTHS)), -100, dtype=torch.int64)
    for b, n in enumerate(DEC_LENGTHS):
        labels[b, :n] = torch.randint(0, 99, (n,))
    with torch.no_grad():
        out = model(features, labels=labels)
    from transformers.models.whisper.modeling_whisper import shift_tokens_right
    ref = dict(input_features=features, labels=labels, decoder_input_ids=shift_tokens_right(labels, EOS, START),
               logits=out.logits.float().contiguous(), loss=out.loss.float().reshape(1),
               encoder_last_hidden_state=out.encoder_last_hidden_state.float().contiguous(),
               gen_default=default, gen_de_translate=de,
               num_parameters=torch.tensor([model.num_parameters()], dtype=torch.int64))
    model.save_pretrained(case_dir, safe_serialization=True)
    again = WhisperForConditionalGeneration.from_pretrained(case_dir).eval()
    with torch.no_grad():
        again_logits = again(features, decoder_input_ids=ref["decoder_input_ids"]).logits
    assert (again_logits - ref["logits"]).abs().max().item() < 1e-6
    assert again.generation_config.forced_decoder_ids == [[1, None], [2, TASKS["transcribe"]]]
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    print(f"whisper_tiny: seed {seed}, greedy margins {m1:.3g} / {m2:.3g}, detected languages {langs} "
          f"(margin {lang_margin:.3g}), loss {out.loss.item():.4f}")
    print("  gen_default", default.tolist())
    print("  gen_de_translate", de.tolist())


def make_lora(case_dir):
    from peft import LoraConfig, PeftModel, get_peft_model
    ref = load_file(os.path.join(case_dir, "reference.safetensors"))
    base = WhisperForConditionalGeneration.from_pretrained(case_dir, dtype=torch.float32).eval()
    torch.manual_seed(7)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).eval()
    inputs = dict(input_features=ref["input_features"], decoder_input_ids=ref["decoder_input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits.float().contiguous()
    effect = (logits - ref["logits"]).abs().max().item()
    assert effect > 1e-2, effect
    out = os.path.join(case_dir, "lora")
    model.save_pretrained(out, safe_serialization=True)
    base = WhisperForConditionalGeneration.from_pretrained(case_dir, dtype=torch.float32).eval()
    merged = PeftModel.from_pretrained(base, out).eval().merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(**inputs).logits.float().contiguous()
    assert (merged_logits - logits).abs().max().item() < 1e-4
    save_file(dict(inputs, logits=logits, merged_logits=merged_logits), os.path.join(out, "reference.safetensors"))
    print(f"lora: moves logits {effect:.3g}")


def make(out_dir):
    torch.set_num_threads(1)  # ctest runs two tests at a time on two cores
    case_dir = os.path.join(out_dir, "whisper_tiny")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    make_base(case_dir, SEED)
    make_lora(case_dir)


def check(base_dir, adapter_dir, outputs, tol):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    model = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32).eval()
    if adapter_dir != "-":
        model = PeftModel.from_pretrained(model, adapter_dir).eval()
        file_keys = set(load_file(os.path.join(adapter_dir, "adapter_model.safetensors")).keys())
        model_keys = set(get_peft_model_state_dict(model).keys())
        if file_keys != model_keys:
            print(f"adapter keys differ: only in the file {sorted(file_keys - model_keys)[:5]}, "
                  f"only in the model {sorted(model_keys - file_keys)[:5]}")
            return 1
    t = load_file(outputs)
    with torch.no_grad():
        logits = model(input_features=t["input_features"], decoder_input_ids=t["decoder_input_ids"]).logits
    diff = (logits - t["logits"]).abs().max().item()
    print(f"max |logits - expected| = {diff:.3g}")
    return 0 if diff <= tol else 1


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        make(args[1])
        return 0
    if len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        torch.set_num_threads(1)
        failed = 0
        for i in range(1, len(args), 3):
            failed |= check(args[i], args[i + 1], args[i + 2], 1e-4)
        return failed
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
