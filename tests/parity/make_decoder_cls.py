#!/usr/bin/env python
"""Decoder sequence classifiers for tests/test_decoder_cls.cpp, made by transformers and HF PEFT.

Usage: python tests/parity/make_decoder_cls.py OUT_DIR

OUT_DIR/<case>/ holds the random-weight model (save_pretrained) and reference.safetensors:
input_ids right-padded with pad_token_id, attention_mask, logits (transformers pools the
last non-pad token), the same rows left-padded under "left.*", and num_parameters. Per
adapter, OUT_DIR/<case>/adapters/<name>/ (HF PEFT's save_pretrained, task_type SEQ_CLS,
so `score` is a modules_to_save copy, perturbed here) with its logits as "<name>.logits".

Cases (GQA everywhere, 2 layers, 3 labels):
  llama_cls    LlamaForSequenceClassification, pad_token_id 0
  qwen2_cls    Qwen2ForSequenceClassification (q/k/v bias), odd sizes, pad_token_id 5
  mistral_cls  MistralForSequenceClassification, pad_token_id 0
  qwen3_cls    Qwen3ForSequenceClassification (q_norm/k_norm, head_dim 16), pad_token_id 0
  opt_cls, gpt_neox_cls, bloom_cls, falcon_cls, phi_cls, gemma_cls, gemma2_cls, olmo2_cls,
  starcoder2_cls, gptj_cls, gpt_bigcode_cls, stablelm_cls, gpt_neo_cls, smollm3_cls  the other decoder families'
    classifiers (OPT post-norm with project_in/out)
Adapters: LoRA (init_lora_weights=False) and (IA)3 (named targets where PEFT has no defaults).

llama_text/ is a LlamaForSequenceClassification with a byte-level BPE tokenizer.json
(pad "<pad>" = pad_token_id 1) for `peft train` on OUT_DIR/cls_{train,eval}.jsonl (the
3-class text task of make_encoders.py); llama_text/eval_loss.safetensors holds
transformers' single-label cross-entropy of the base model over cls_eval.jsonl.

problem_type (transformers' regression / multi-label losses), each a saved model and
loss.safetensors (input_ids, attention_mask, float labels [3, num_labels], loss) on a
padded batch; saved before the forward, so config.json keeps what the user gave:
  llama_reg      LlamaForSequenceClassification, num_labels 1 (regression inferred)
  llama_multi    LlamaForSequenceClassification, 3 labels, float labels (multi-label inferred)
  bert_reg       BertForSequenceClassification, 2 labels, problem_type "regression"
  roberta_multi  RobertaForSequenceClassification, 3 labels, problem_type "multi_label_classification"
llama_text_reg/ is llama_text's tokenizer with a 1-label classifier for `peft train` on
OUT_DIR/reg_{train,eval}.jsonl (the text task with label 0.5 * class, a float), and
eval_loss.safetensors: transformers' MSE of the base model over reg_eval.jsonl.
"""
import json
import os
import shutil
import sys

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (GPTBigCodeConfig, GPTBigCodeForSequenceClassification, GPTJConfig,
                          GPTJForSequenceClassification, GPTNeoConfig, GPTNeoForSequenceClassification,
                          StableLmConfig, StableLmForSequenceClassification)
from transformers import (BertConfig, BertForSequenceClassification, BloomConfig, BloomForSequenceClassification,
                          FalconConfig, FalconForSequenceClassification, Gemma2Config, Gemma2ForSequenceClassification,
                          GemmaConfig, GemmaForSequenceClassification, GPTNeoXConfig, GPTNeoXForSequenceClassification,
                          LlamaConfig, LlamaForSequenceClassification, MistralConfig, MistralForSequenceClassification,
                          Olmo2Config, Olmo2ForSequenceClassification, OPTConfig, OPTForSequenceClassification,
                          PhiConfig, PhiForSequenceClassification, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForSequenceClassification, Qwen3Config, Qwen3ForSequenceClassification, RobertaConfig, SmolLM3Config,
                          SmolLM3ForSequenceClassification,
                          RobertaForSequenceClassification, Starcoder2Config, Starcoder2ForSequenceClassification)
from transformers.utils import logging as hf_logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_encoders import FILLER, WORDS, write_task  # noqa: E402  (the same text task)

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

LENGTHS = [9, 4, 6]


def config(cls, **kw):
    base = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, num_labels=3, pad_token_id=0,
                tie_word_embeddings=False, initializer_range=0.2)
    base.update(kw)
    cfg = cls(**base)
    cfg._attn_implementation = "eager"
    return cfg


def inputs(vocab, pad, seed, left=False):
    g = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    ids = torch.full((len(LENGTHS), width), pad, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(LENGTHS):
        row = torch.randint(0, vocab - 1, (n,), generator=g)
        row[row >= pad] += 1  # no pad inside a row
        cols = slice(width - n, width) if left else slice(0, n)
        ids[b, cols] = row
        mask[b, cols] = 1
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float().contiguous()


def add_adapter(case_dir, model, name, cfg, ids, mask, ref):
    torch.manual_seed(len(name))
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # (IA)3 starts at ones and the score copy equals the head
        for n, p in peft_model.named_parameters():
            if "ia3_l" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.3)
    peft_model.eval()
    ref[f"{name}.logits"] = logits(peft_model, ids, mask)
    peft_model.save_pretrained(os.path.join(case_dir, "adapters", name))


def family_config(cls, **kw):
    """A small config of a family whose sizes are not LLaMA's keys."""
    base = dict(vocab_size=101, num_labels=3, pad_token_id=0, initializer_range=0.2)
    base.update(kw)
    cfg = cls(**base)
    cfg._attn_implementation = "eager"
    return cfg


def make_case(out, name, cls, cfg, seed, ia3=None, lora=None):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    ids, mask = inputs(cfg.vocab_size, cfg.pad_token_id, seed + 1)
    left_ids, left_mask = inputs(cfg.vocab_size, cfg.pad_token_id, seed + 1, left=True)
    ref = {"input_ids": ids, "attention_mask": mask, "logits": logits(model, ids, mask),
           "left.input_ids": left_ids, "left.attention_mask": left_mask,
           "left.logits": logits(model, left_ids, left_mask),
           "num_parameters": torch.tensor([model.num_parameters()], dtype=torch.int64)}
    model.save_pretrained(case_dir)
    for adapter, make_cfg in (("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                          init_lora_weights=False, **(lora or {}))),
                              ("ia3", lambda: IA3Config(task_type="SEQ_CLS", **(ia3 or {})))):
        base = cls.from_pretrained(case_dir, dtype=torch.float32).eval()
        add_adapter(case_dir, base, adapter, make_cfg(), ids, mask, ref)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    print(f"{name}: {cls.__name__} params={model.num_parameters()}")


def make_text_case(out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    case_dir = os.path.join(out, "llama_text")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(w) for w in WORDS] + [" ".join(FILLER)] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(case_dir)
    torch.manual_seed(31)
    model = LlamaForSequenceClassification(config(LlamaConfig, vocab_size=300, pad_token_id=1, bos_token_id=0,
                                                  eos_token_id=2)).eval()
    model.save_pretrained(case_dir)
    write_task(out)
    rows = [json.loads(line) for line in open(os.path.join(out, "cls_eval.jsonl"))]
    batch = fast([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=torch.tensor([r["label"] for r in rows])).loss
    save_file({"eval_loss": loss.reshape(1).float()}, os.path.join(case_dir, "eval_loss.safetensors"))
    print(f"llama_text: eval_loss={loss.item():.6f}")


def make_problem_types(out):
    g = torch.Generator().manual_seed(61)
    enc = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=64)
    cases = [
        ("llama_reg", LlamaForSequenceClassification, config(LlamaConfig, num_labels=1)),
        ("llama_multi", LlamaForSequenceClassification, config(LlamaConfig, num_labels=3)),
        ("bert_reg", BertForSequenceClassification,
         BertConfig(**enc, num_labels=2, problem_type="regression", pad_token_id=0)),
        ("roberta_multi", RobertaForSequenceClassification,
         RobertaConfig(**enc, num_labels=3, problem_type="multi_label_classification", pad_token_id=1)),
    ]
    for i, (name, cls, cfg) in enumerate(cases):
        case_dir = os.path.join(out, name)
        shutil.rmtree(case_dir, ignore_errors=True)
        torch.manual_seed(71 + i)
        model = cls(cfg).eval()
        model.save_pretrained(case_dir)
        ids, mask = inputs(cfg.vocab_size, cfg.pad_token_id, 81 + i)
        n = cfg.num_labels
        if "multi" in name:
            labels = (torch.rand(len(LENGTHS), n, generator=g) > 0.5).float()
        else:
            labels = torch.randn(len(LENGTHS), n, generator=g)
        with torch.no_grad():
            loss = model(input_ids=ids, attention_mask=mask, labels=labels.squeeze(-1) if n == 1 else labels).loss
        save_file({"input_ids": ids, "attention_mask": mask, "labels": labels.contiguous(),
                   "loss": loss.reshape(1).float()}, os.path.join(case_dir, "loss.safetensors"))
        print(f"{name}: {model.config.problem_type} loss={loss.item():.6f}")
    # The text task as regression: label 0.5 * class.
    text_dir, reg_dir = os.path.join(out, "llama_text"), os.path.join(out, "llama_text_reg")
    shutil.rmtree(reg_dir, ignore_errors=True)
    fast = PreTrainedTokenizerFast.from_pretrained(text_dir)
    fast.save_pretrained(reg_dir)
    torch.manual_seed(37)
    model = LlamaForSequenceClassification(config(LlamaConfig, vocab_size=300, pad_token_id=1, bos_token_id=0,
                                                  eos_token_id=2, num_labels=1)).eval()
    model.save_pretrained(reg_dir)
    for split in ("train", "eval"):
        rows = [json.loads(line) for line in open(os.path.join(out, f"cls_{split}.jsonl"))]
        with open(os.path.join(out, f"reg_{split}.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps({"text": r["text"], "label": 0.5 * r["label"]}) + "\n")
    rows = [json.loads(line) for line in open(os.path.join(out, "reg_eval.jsonl"))]
    batch = fast([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=torch.tensor([r["label"] for r in rows])).loss
    save_file({"eval_loss": loss.reshape(1).float()}, os.path.join(reg_dir, "eval_loss.safetensors"))
    print(f"llama_text_reg: eval_mse={loss.item():.6f}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    make_case(out, "llama_cls", LlamaForSequenceClassification, config(LlamaConfig), 41)
    make_case(out, "qwen2_cls", Qwen2ForSequenceClassification,
              config(Qwen2Config, hidden_size=36, num_attention_heads=6, num_key_value_heads=2, intermediate_size=44,
                     pad_token_id=5), 43)
    make_case(out, "mistral_cls", MistralForSequenceClassification, config(MistralConfig), 47)
    make_case(out, "qwen3_cls", Qwen3ForSequenceClassification, config(Qwen3Config, head_dim=16), 53)
    # The other decoder families' classifiers: the same pooling, their own bodies.
    make_case(out, "opt_cls", OPTForSequenceClassification,
              family_config(OPTConfig, hidden_size=32, num_hidden_layers=2, ffn_dim=48, num_attention_heads=4,
                            max_position_embeddings=64, word_embed_proj_dim=24, do_layer_norm_before=False), 59)
    make_case(out, "gpt_neox_cls", GPTNeoXForSequenceClassification,
              family_config(GPTNeoXConfig, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=48, max_position_embeddings=64), 61)
    make_case(out, "bloom_cls", BloomForSequenceClassification,
              family_config(BloomConfig, hidden_size=32, n_layer=2, n_head=4), 67)
    make_case(out, "falcon_cls", FalconForSequenceClassification,
              family_config(FalconConfig, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=64), 71)
    make_case(out, "phi_cls", PhiForSequenceClassification,
              family_config(PhiConfig, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=64), 73)
    make_case(out, "gemma_cls", GemmaForSequenceClassification, config(GemmaConfig, head_dim=8), 79)
    make_case(out, "gemma2_cls", Gemma2ForSequenceClassification,
              config(Gemma2Config, head_dim=8, sliding_window=4, query_pre_attn_scalar=8), 83)
    no_ia3_defaults = dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])
    qv = dict(target_modules=["q_proj", "v_proj"])
    make_case(out, "olmo2_cls", Olmo2ForSequenceClassification, config(Olmo2Config), 89, ia3=no_ia3_defaults, lora=qv)
    make_case(out, "starcoder2_cls", Starcoder2ForSequenceClassification, config(Starcoder2Config), 97,
              ia3=dict(target_modules=["k_proj", "c_proj"], feedforward_modules=["c_proj"]), lora=qv)
    make_case(out, "gptj_cls", GPTJForSequenceClassification,
              family_config(GPTJConfig, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64), 101)
    make_case(out, "gpt_bigcode_cls", GPTBigCodeForSequenceClassification,
              family_config(GPTBigCodeConfig, n_embd=32, n_layer=2, n_head=4, n_positions=64), 103)
    make_case(out, "stablelm_cls", StableLmForSequenceClassification, config(StableLmConfig), 107,
              ia3=no_ia3_defaults)
    make_case(out, "gpt_neo_cls", GPTNeoForSequenceClassification,
              family_config(GPTNeoConfig, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                            attention_types=[[["global", "local"], 1]], window_size=3), 109)
    # NoPE on the second layer, which attends within a window of 3 (LoRA/IA3 named: PEFT has no defaults).
    make_case(out, "smollm3_cls", SmolLM3ForSequenceClassification,
              config(SmolLM3Config, no_rope_layers=[1, 0], use_sliding_window=True, sliding_window=3), 113,
              ia3=no_ia3_defaults, lora=qv)
    make_text_case(out)
    make_problem_types(out)


if __name__ == "__main__":
    main()
