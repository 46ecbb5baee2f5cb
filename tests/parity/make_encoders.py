#!/usr/bin/env python
"""RoBERTa references for tests/test_encoders.cpp, made by transformers and HF PEFT.

Usage: python tests/parity/make_encoders.py OUT_DIR

OUT_DIR/<case>/ holds the random-weight model (save_pretrained), reference.safetensors
(input_ids right-padded with pad_token_id, attention_mask, and the model's outputs) and,
per adapter, OUT_DIR/<case>/adapters/<name>/ (HF PEFT's save_pretrained) with its outputs
in reference.safetensors under "<name>.<output>".

Cases:
  roberta      RobertaModel (pad_token_id 1: positions start at 2 and skip padding)
  roberta_cls  RobertaForSequenceClassification (3 labels), GELU, odd sizes
  xlmr, xlmr_cls  XLMRobertaModel, XLMRobertaForSequenceClassification (2 labels)
  distilbert, distilbert_cls  DistilBertModel, DistilBertForSequenceClassification (3 labels)
  deberta_v3, deberta_v3_cls  DebertaV2Model, DebertaV2ForSequenceClassification as DeBERTa-v3
      configures them: relative positions only, log buckets, shared position keys, LayerNorm'd
      relative embeddings
  deberta_v2  DebertaV2Model as deberta-v2-xlarge: separate position projections, no buckets
      (clamped), the convolution beside the first layer, token types, an embedding projection
  deberta_tok  DebertaV2ForTokenClassification without relative attention (absolute positions;
      pos_att_type still scales the scores)
  deberta_v1, deberta_v1_cls  DebertaModel (deberta-base's settings: relative positions only,
      the table wider than the rows, so narrowed to them) and DebertaForSequenceClassification
      (c2p only, talking heads, absolute positions, a table narrower than the rows)
  electra, electra_cls, electra_tok  ElectraModel (embeddings narrower than the hidden size:
      embeddings_project), ElectraForSequenceClassification, ElectraForTokenClassification
  modernbert  ModernBertModel: global and local layers (a window of 2 each side, so the
      9-token row reaches past it), each kind with its rotary base, LayerNorms without bias
  modernbert_cls  ModernBertForSequenceClassification: mean pooling, every bias on, layer_types
      given, SiLU head
  modernbert_tok  ModernBertForTokenClassification: a local first layer, rope_parameters of
      its own, GELU (tanh) MLP
Adapters: LoRA (init_lora_weights=False, SEQ_CLS with the classifier as modules_to_save
on roberta_cls) and (IA)3, both with non-trivial weights.

roberta_cls, deberta_v3_cls and modernbert_cls also get a byte-level BPE tokenizer.json (RobertaProcessing, trained here by
`tokenizers`) and OUT_DIR/cls_{train,eval}.jsonl: a 3-class text_label task whose class
shows in its words, for `peft train`.
"""
import os
import shutil
import sys

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (
    DebertaConfig,
    DebertaForSequenceClassification,
    DebertaModel,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2ForTokenClassification,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
    ElectraConfig,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    ModernBertForTokenClassification,
    ModernBertModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaModel,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

LENGTHS = [9, 5, 2]
PAD = 1


def roberta_config(**kw):
    base = dict(vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
                max_position_embeddings=40, type_vocab_size=1, pad_token_id=PAD, bos_token_id=0, eos_token_id=2)
    base.update(kw)
    cfg = RobertaConfig(**base)
    cfg._attn_implementation = "eager"
    return cfg


def xlmr_config(**kw):
    base = dict(vocab_size=89, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=40, type_vocab_size=1, pad_token_id=PAD, bos_token_id=0, eos_token_id=2)
    base.update(kw)
    cfg = XLMRobertaConfig(**base)
    cfg._attn_implementation = "eager"
    return cfg


def inputs(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(LENGTHS), max(LENGTHS)), PAD, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = torch.randint(3, vocab, (n,), generator=g)
        ids[b, 0] = 0  # <s>
        mask[b, :n] = 1
    return ids, mask


def outputs(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if getattr(out, "logits", None) is not None:
        return {"logits": out.logits.float().contiguous()}
    res = {"last_hidden_state": out.last_hidden_state.float().contiguous()}
    if getattr(out, "pooler_output", None) is not None:  # DistilBERT has none
        res["pooler_output"] = out.pooler_output.float().contiguous()
    return res


def perturb(model, scale=0.02):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def add_adapter(case_dir, model, name, cfg, ids, mask, ref):
    torch.manual_seed(len(name))
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # (IA)3 starts at ones and a modules_to_save copy equals the head
        for n, p in peft_model.named_parameters():
            if "ia3_l" in n or "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.3)
    peft_model.eval()
    for k, v in outputs(peft_model, ids, mask).items():
        ref[f"{name}.{k}"] = v
    peft_model.save_pretrained(os.path.join(case_dir, "adapters", name))


def make_case(out, name, cls, cfg, seed, adapters):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    perturb(model)
    ids, mask = inputs(cfg.vocab_size, seed + 1)
    ref = {"input_ids": ids, "attention_mask": mask,
           "num_parameters": torch.tensor([model.num_parameters()], dtype=torch.int64)}
    ref.update(outputs(model, ids, mask))
    model.save_pretrained(case_dir)
    for adapter_name, make_cfg in adapters:  # each on a fresh copy of the saved base
        base = cls.from_pretrained(case_dir, dtype=torch.float32).eval()
        add_adapter(case_dir, base, adapter_name, make_cfg(), ids, mask, ref)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    print(f"{name}: {cls.__name__} params={int(ref['num_parameters'][0])} adapters={[a for a, _ in adapters]}")


WORDS = [["sun", "warm", "bright", "summer", "light"], ["rain", "cloud", "storm", "grey", "wet"],
         ["snow", "ice", "cold", "frost", "winter"]]
FILLER = ["the", "day", "was", "very", "and", "a", "it", "felt", "outside", "today"]


def sentence(g, label):
    words = [FILLER[int(i)] for i in torch.randint(0, len(FILLER), (5,), generator=g)]
    for i in torch.randint(0, 5, (2,), generator=g):
        words.insert(int(i), WORDS[label][int(torch.randint(0, 5, (1,), generator=g))])
    return " ".join(words)


def write_task(out):
    import json
    g = torch.Generator().manual_seed(5)
    for split, n in (("train", 96), ("eval", 30)):
        with open(os.path.join(out, f"cls_{split}.jsonl"), "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": sentence(g, i % 3), "label": i % 3}) + "\n")


def save_tokenizer(case_dir, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(w) for w in WORDS] + [" ".join(FILLER)] * 3
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", cls_token="<s>", sep_token="</s>")
    fast.save_pretrained(case_dir)
    assert len(fast) <= vocab_size, len(fast)


def deberta_config(**kw):
    base = dict(vocab_size=93, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=40, pad_token_id=PAD, hidden_act="gelu")
    base.update(kw)
    return DebertaV2Config(**base)


def make_deberta_cases(out):
    # DeBERTa-v3's settings, with 8 buckets so a 9-token row reaches the log buckets.
    v3 = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1, norm_rel_ebd="layer_norm",
              share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0)
    make_case(out, "deberta_v3", DebertaV2Model, deberta_config(**v3), 51, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)),
        ("ia3", lambda: IA3Config()),
    ])
    make_case(out, "deberta_v3_cls", DebertaV2ForSequenceClassification,
              deberta_config(num_labels=3, initializer_range=0.2, pooler_hidden_act="tanh", vocab_size=300, **v3), 53, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS")),
    ])
    # deberta-v2-xlarge's settings: no buckets (max_relative_positions 6 < the rows, so the
    # indices clamp), separate pos_key_proj / pos_query_proj, the convolution.
    v2 = dict(relative_attention=True, max_relative_positions=6, position_buckets=-1, norm_rel_ebd="layer_norm",
              share_att_key=False, pos_att_type="p2c|c2p", position_biased_input=True, type_vocab_size=2,
              embedding_size=24, conv_kernel_size=3, conv_act="gelu")
    make_case(out, "deberta_v2", DebertaV2Model, deberta_config(**v2), 57, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                    target_modules=["query_proj", "value_proj", "pos_key_proj"])),
        ("ia3", lambda: IA3Config()),
    ])
    make_case(out, "deberta_tok", DebertaV2ForTokenClassification,
              deberta_config(num_labels=5, initializer_range=0.2, relative_attention=False, pos_att_type="c2p|p2c",
                             layer_norm_eps=1e-5), 59, [
        ("lora", lambda: LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="TOKEN_CLS")),
    ])


def make_deberta_v1_cases(out):
    def config(**kw):
        base = dict(vocab_size=93, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                    max_position_embeddings=40, pad_token_id=PAD, relative_attention=True, type_vocab_size=0)
        base.update(kw)
        return DebertaConfig(**base)
    make_case(out, "deberta_v1", DebertaModel,
              config(max_relative_positions=-1, pos_att_type="c2p|p2c", position_biased_input=False), 71, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)),
        ("ia3", lambda: IA3Config()),
    ])
    make_case(out, "deberta_v1_cls", DebertaForSequenceClassification,
              config(num_labels=3, initializer_range=0.2, max_relative_positions=6, pos_att_type=["c2p"],
                     talking_head=True, position_biased_input=True), 73, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False,
                                    target_modules=["in_proj", "pos_proj"])),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS")),
    ])


def make_electra_cases(out):
    def electra_config(**kw):
        base = dict(vocab_size=95, embedding_size=24, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=40, pad_token_id=PAD)
        base.update(kw)
        cfg = ElectraConfig(**base)
        cfg._attn_implementation = "eager"
        return cfg
    # PEFT has LoRA defaults for electra (query, value) but no (IA)3 ones.
    ia3 = dict(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    make_case(out, "electra", ElectraModel, electra_config(), 61, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(**ia3)),
    ])
    make_case(out, "electra_cls", ElectraForSequenceClassification,
              electra_config(num_labels=3, initializer_range=0.2), 63, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS", **ia3)),
    ])
    make_case(out, "electra_tok", ElectraForTokenClassification,
              electra_config(num_labels=4, embedding_size=32, initializer_range=0.2, hidden_act="gelu_new"), 67, [
        ("lora", lambda: LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="TOKEN_CLS", **ia3)),
    ])


def make_modernbert_cases(out):
    def config(**kw):
        base = dict(vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=24,
                    max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=4, pad_token_id=PAD,
                    bos_token_id=0, eos_token_id=2, cls_token_id=0, sep_token_id=2)
        base.update(kw)
        cfg = ModernBertConfig(**base)
        cfg._attn_implementation = "eager"
        return cfg
    # PEFT has no default targets for modernbert: they are named.
    lora = dict(target_modules=["Wqkv", "Wo", "Wi"])
    ia3 = dict(target_modules=["Wqkv", "mlp.Wo"], feedforward_modules=["mlp.Wo"])
    make_case(out, "modernbert", ModernBertModel, config(initializer_range=0.2), 81, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **lora)),
        ("ia3", lambda: IA3Config(**ia3)),
    ])
    make_case(out, "modernbert_cls", ModernBertForSequenceClassification,
              config(num_labels=3, vocab_size=300, classifier_pooling="mean", norm_bias=True, attention_bias=True,
                     mlp_bias=True, classifier_bias=True, classifier_activation="silu", initializer_range=0.2,
                     layer_types=["sliding_attention", "full_attention", "sliding_attention"]), 83, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False, **lora)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS", **ia3)),
    ])
    make_case(out, "modernbert_tok", ModernBertForTokenClassification,
              config(num_labels=4, num_hidden_layers=2, hidden_activation="gelu_pytorch_tanh", initializer_range=0.2,
                     layer_types=["sliding_attention", "full_attention"], local_attention=6,
                     rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}}), 87, [
        ("lora", lambda: LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=16, init_lora_weights=False, **lora)),
        ("ia3", lambda: IA3Config(task_type="TOKEN_CLS", **ia3)),
    ])


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    make_case(out, "roberta", RobertaModel, roberta_config(), 11, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)),
        ("ia3", lambda: IA3Config()),
    ])
    make_case(out, "roberta_cls", RobertaForSequenceClassification,
              roberta_config(num_labels=3, hidden_size=36, num_attention_heads=3, hidden_act="gelu", initializer_range=0.2,
                             vocab_size=300), 23, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS")),
    ])
    # XLM-RoBERTa: RoBERTa's architecture under its own classes; (IA)3 has no default
    # targets for it in HF PEFT, so they are named.
    xlmr_ia3 = dict(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    make_case(out, "xlmr", XLMRobertaModel, xlmr_config(), 31, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(**xlmr_ia3)),
    ])
    make_case(out, "xlmr_cls", XLMRobertaForSequenceClassification,
              xlmr_config(num_labels=2, hidden_act="gelu", initializer_range=0.2), 37, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS", **xlmr_ia3)),
    ])
    # DistilBERT: BERT's encoder under its own names; PEFT has no default targets for it.
    def distilbert_config(**kw):
        cfg = DistilBertConfig(vocab_size=91, max_position_embeddings=40, n_layers=2, n_heads=4, dim=32, hidden_dim=48,
                               pad_token_id=PAD, **kw)
        cfg._attn_implementation = "eager"
        return cfg
    distil_lora = dict(target_modules=["q_lin", "v_lin"])
    distil_ia3 = dict(target_modules=["k_lin", "v_lin", "lin2"], feedforward_modules=["lin2"])
    make_case(out, "distilbert", DistilBertModel, distilbert_config(), 41, [
        ("lora", lambda: LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **distil_lora)),
        ("ia3", lambda: IA3Config(**distil_ia3)),
    ])
    make_case(out, "distilbert_cls", DistilBertForSequenceClassification,
              distilbert_config(num_labels=3, initializer_range=0.2), 43, [
        ("lora", lambda: LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=16, init_lora_weights=False, **distil_lora)),
        ("ia3", lambda: IA3Config(task_type="SEQ_CLS", **distil_ia3)),
    ])
    make_deberta_cases(out)
    make_deberta_v1_cases(out)
    make_electra_cases(out)
    make_modernbert_cases(out)
    for case in ("roberta_cls", "deberta_v3_cls", "modernbert_cls"):
        save_tokenizer(os.path.join(out, case), 300)
    write_task(out)


if __name__ == "__main__":
    main()
