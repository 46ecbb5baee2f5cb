#!/usr/bin/env python
"""Random-weight T5 and BART models made by transformers, with reference outputs and HF PEFT
adapters, for tests/test_t5.cpp; and the check of adapters the C++ side saves.

Usage: python tests/parity/make_t5.py make OUT_DIR
       python tests/parity/make_t5.py check BASE_DIR ADAPTER_DIR|- OUTPUTS.safetensors [BASE ADAPTER OUTPUTS ...]

make: OUT_DIR/<case>/ holds the model (save_pretrained, float32) and reference.safetensors:
  input_ids, attention_mask (encoder, right-padded rows), labels (-100 on padding),
  decoder_input_ids (transformers' _shift_right of the labels), logits, loss,
  encoder_last_hidden_state, gen_input_ids / gen_attention_mask (a padded batch of 2),
  gen_output_ids (decoder_start_token_id + 32 greedy tokens), num_parameters.
  Cases: t5_relu (T5 v1.0: relu, lm_head tied to shared, decoder output scaled by
  d_model**-0.5) and t5_v11 (v1.1 / Flan-T5: gated-gelu -> gelu_new, an untied lm_head,
  no rescale, d_model 40, d_kv 12, 3 heads, 2 encoder / 3 decoder layers), and mt5 (the
  same architecture as MT5ForConditionalGeneration: mT5 / mT0; (IA)3's mt5 defaults k, v, wi_1).
  bart (BartForConditionalGeneration: pad 1, decoder_start 2, tied lm_head, a non-zero
  final_logits_bias) and bart_scaled (scale_embedding, untied lm_head, relu, more decoder
  heads than encoder ones); LoRA on q_proj, v_proj, fc2 and (IA)3 with PEFT's bart defaults.
  mbart (MBartForConditionalGeneration: pre-norm, final layer norms, scaled embeddings; its
  decoder_input_ids wrap each label row's last token to the front); its reference also holds
  gen_forced_output_ids, the greedy tokens with forced_bos_token_id 7. m2m100
  (M2M100ForConditionalGeneration, NLLB's class: sinusoidal positions, odd d_model).
  marian (MarianMTModel, opus-mt's layout: BART's post-norm layers, a fixed sinusoid table
  that save_pretrained leaves out, swish, pad as decoder start) and pegasus
  (PegasusForConditionalGeneration: pre-norm, a sinusoid table it saves, odd d_model); both
  scale their plain nn.Embedding rows in the stacks, and their references hold
  position_table, transformers' encoder table. pegasus/prompt_tuning: HF PEFT's prompt
  tuning, whose embeddings reach Pegasus's encoder unscaled.
  OUT_DIR/<case>/lora and OUT_DIR/<case>/ia3: adapters HF PEFT saved (task_type
  SEQ_2_SEQ_LM; LoRA on q, v, wo; (IA)3 with PEFT's T5 defaults k, v, wo), weights
  perturbed so outputs move, with reference.safetensors holding the same inputs, the
  unmerged logits and the logits after merge_and_unload.
  OUT_DIR/t5_relu/{prompt_tuning,p_tuning,prefix_tuning}, OUT_DIR/t5_v11/prefix_tuning:
  HF PEFT's soft prompts and prefixes (task_type SEQ_2_SEQ_LM: num_transformer_submodules
  2), random values, with reference.safetensors: the inputs (prefix tuning: and a decoder
  attention mask), logits, gen_output_ids (decoder_start + 16 greedy tokens of
  PeftModel.generate on gen_input_ids); p_tuning_encoder/ adds the LSTM encoder's weights.
  OUT_DIR/bart_fortunes/: the same for a BART model over the same tokenizer.
  OUT_DIR/t5_fortunes/: a v1.1-style model over the t5_unigram tokenizer of
  tests/parity/make_tokenizers.py (trained here on Debian's fortunes; tokenizer.json beside
  the model), train.jsonl / eval.jsonl of {"input": first half of a fortune line's words,
  "target": the rest}, and reference.safetensors with transformers' loss on the first
  BATCH eval rows as one batch (input_ids, attention_mask, labels = target ids + </s>,
  -100 on padding, decoder_input_ids, loss).
check: loads BASE_DIR with AutoModelForSeq2SeqLM (and the adapter with
  PeftModel.from_pretrained, whose saved keys must equal the file's), runs input_ids,
  attention_mask, decoder_input_ids from OUTPUTS and fails (exit 1) when
  max |logits - OUTPUTS' logits| > 1e-4; several triples are checked in one process.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, DynamicCache,
                          EncoderDecoderCache, M2M100Config, M2M100ForConditionalGeneration, MarianConfig,
                          MarianMTModel, MBartConfig, MBartForConditionalGeneration, MT5Config, PegasusConfig,
                          PegasusForConditionalGeneration,
                          MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration)
from transformers.models.bart.modeling_bart import shift_tokens_right
from transformers.models.mbart.modeling_mbart import shift_tokens_right as mbart_shift_tokens_right
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

ENC_LEN, DEC_LEN = 11, 8
ENC_LENGTHS = [11, 6, 3]
DEC_LENGTHS = [8, 4, 6]
GEN_LENGTHS = [7, 4]
GEN_NEW = 32
MIN_MARGIN = 1e-2
MIN_EFFECT = 1e-2


def t5_relu():
    # T5 v1.0: relu, tied embeddings (decoder output rescaled), few buckets so the
    # logarithmic ones are reached within these lengths
    return T5Config(vocab_size=101, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=20,
                    feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0,
                    pad_token_id=0, eos_token_id=1)


def t5_v11():
    # v1.1 / Flan-T5: gated-gelu (gelu_new), untied lm_head, odd sizes, 3 decoder layers
    return T5Config(vocab_size=97, d_model=40, d_kv=12, d_ff=56, num_layers=2, num_decoder_layers=3, num_heads=3,
                    relative_attention_num_buckets=12, relative_attention_max_distance=24,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def mt5():
    # mT5 / mT0 (MT5ForConditionalGeneration): T5 v1.1's architecture under its own classes
    return MT5Config(vocab_size=103, d_model=40, d_kv=10, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
                     relative_attention_num_buckets=10, relative_attention_max_distance=20,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def bart():
    # BART's layout: post-norm layers, learned positions offset by 2, tied lm_head; 2 encoder
    # and 3 decoder layers
    return BartConfig(vocab_size=101, d_model=32, encoder_layers=2, decoder_layers=3, encoder_ffn_dim=48,
                      decoder_ffn_dim=40, encoder_attention_heads=4, decoder_attention_heads=2,
                      max_position_embeddings=64, dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.2)


def bart_scaled():
    # embeddings scaled by sqrt(d_model), an untied lm_head, relu
    return BartConfig(vocab_size=97, d_model=36, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=44,
                      decoder_ffn_dim=52, encoder_attention_heads=3, decoder_attention_heads=6,
                      max_position_embeddings=48, dropout=0.0, activation_function="relu", scale_embedding=True,
                      tie_word_embeddings=False, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.2)


def mbart():
    # mBART: pre-norm layers with a final layer_norm per stack, scaled embeddings, decoder
    # inputs that start with each label row's last token
    return MBartConfig(vocab_size=103, d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=40,
                       decoder_ffn_dim=48, encoder_attention_heads=4, decoder_attention_heads=4,
                       max_position_embeddings=64, dropout=0.0, scale_embedding=True, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.2)


def m2m100():
    # M2M100 / NLLB: mBART's pre-norm layout with fairseq's sinusoidal positions counted over
    # each row's non-pad tokens, no layernorm_embedding, no final_logits_bias; relu; an odd
    # d_model (the table's zero column)
    return M2M100Config(vocab_size=107, d_model=33, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=40,
                        decoder_ffn_dim=44, encoder_attention_heads=3, decoder_attention_heads=3,
                        max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, init_std=0.2)


def marian():
    # Marian (opus-mt): BART's post-norm layers with a fixed sinusoid table (not saved), no
    # layernorm_embedding, tokens scaled by the stacks; swish; the pad token (the
    # vocabulary's last) starts the decoder, as in the released models
    return MarianConfig(vocab_size=109, d_model=32, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=40,
                        decoder_ffn_dim=48, encoder_attention_heads=4, decoder_attention_heads=2,
                        max_position_embeddings=64, dropout=0.0, activation_function="swish", scale_embedding=True,
                        pad_token_id=108, eos_token_id=0, decoder_start_token_id=108, forced_eos_token_id=None,
                        init_std=0.2)


def pegasus():
    # Pegasus: mBART's pre-norm layout with a fixed sinusoid table (saved), no
    # layernorm_embedding; an odd d_model (one more sine column than cosine ones)
    return PegasusConfig(vocab_size=103, d_model=33, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=40,
                         decoder_ffn_dim=44, encoder_attention_heads=3, decoder_attention_heads=3,
                         max_position_embeddings=64, dropout=0.0, scale_embedding=True, pad_token_id=0,
                         eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None, init_std=0.2)


# (name, config, untie lm_head, first seed tried: one whose greedy margin is stable)
CASES = [("t5_relu", t5_relu, False, 2468), ("t5_v11", t5_v11, True, 2471), ("mt5", mt5, True, 2477),
         ("bart", bart, False, 2481), ("bart_scaled", bart_scaled, False, 2483), ("mbart", mbart, False, 2489),
         ("m2m100", m2m100, False, 2491), ("marian", marian, False, 2493), ("pegasus", pegasus, False, 2497)]
MBART_FORCED_BOS = 7
# LoRA's targets per case (the rest: T5's q, v, wo)
LORA_TARGETS = {"bart": ["q_proj", "v_proj", "fc2"], "bart_scaled": ["k_proj", "out_proj", "fc1"],
                "mbart": ["q_proj", "v_proj", "fc1"], "m2m100": ["q_proj", "k_proj", "out_proj", "fc2"],
                "marian": ["q_proj", "v_proj", "fc1", "fc2"], "pegasus": ["k_proj", "v_proj", "out_proj", "fc1"]}
# (IA)3's targets where PEFT has no defaults (mbart, m2m100, marian, pegasus)
IA3_TARGETS = {"mbart": dict(target_modules=["k_proj", "v_proj", "fc2"], feedforward_modules=["fc2"]),
               "m2m100": dict(target_modules=["v_proj", "fc1"], feedforward_modules=["fc1"]),
               "marian": dict(target_modules=["k_proj", "v_proj", "fc2"], feedforward_modules=["fc2"]),
               "pegasus": dict(target_modules=["v_proj", "fc1"], feedforward_modules=["fc1"])}
# Their logits bias is a buffer transformers saves and adds (zeros in released models).
LOGITS_BIAS = (BartConfig, MarianConfig, PegasusConfig)


def decoder_inputs(model, labels):
    """What the model's forward makes of labels: BART's and T5's shift, or mBART's wrap."""
    if isinstance(model.config, MBartConfig):
        return mbart_shift_tokens_right(labels, model.config.pad_token_id)
    if isinstance(model.config, (BartConfig, M2M100Config, MarianConfig, PegasusConfig)):
        return shift_tokens_right(labels, model.config.pad_token_id, model.config.decoder_start_token_id)
    return model._shift_right(labels)


def build(cfg_factory, untie, seed):
    torch.manual_seed(seed)
    cfg = cfg_factory()
    cls = {MT5Config: MT5ForConditionalGeneration, BartConfig: BartForConditionalGeneration,
           MBartConfig: MBartForConditionalGeneration, M2M100Config: M2M100ForConditionalGeneration,
           MarianConfig: MarianMTModel, PegasusConfig: PegasusForConditionalGeneration}.get(type(cfg),
                                                                                             T5ForConditionalGeneration)
    model = cls(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
        if isinstance(cfg, LOGITS_BIAS) and cfg.tie_word_embeddings:
            model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias) * 0.5)
        if untie:
            # transformers 5 ties lm_head to shared whatever the config says; it unties
            # them when a checkpoint holds both with different values (what Flan-T5 has)
            model.lm_head.weight = torch.nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model) * cfg.d_model**-0.5)
    return model.eval()


def greedy(model, ids, mask, forced_bos=None):
    gc = model.generation_config
    for k in ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation",
              "forced_eos_token_id", "forced_bos_token_id", "no_repeat_ngram_size"):
        setattr(gc, k, None)
    # a cache sized per layer as used: transformers' default one is sized by num_layers and
    # overflows when num_decoder_layers is larger
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=GEN_NEW, min_new_tokens=GEN_NEW,
                             past_key_values=cache,
                             do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=model.config.pad_token_id,
                             forced_bos_token_id=forced_bos,
                             decoder_start_token_id=model.config.decoder_start_token_id,
                             output_scores=True, return_dict_in_generate=True)
    margin = min(float(torch.topk(sc.float(), 2).values.diff().abs().min()) for sc in out.scores)
    return out.sequences.contiguous(), margin


def padded(lengths, width, vocab, fill):
    ids = torch.full((len(lengths), width), fill, dtype=torch.int64)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(2, vocab, (n,), dtype=torch.int64)
        mask[b, :n] = 1
    return ids, mask


def make_base(case_dir, cfg_factory, untie, seed):
    for _ in range(100):
        model = build(cfg_factory, untie, seed)
        torch.manual_seed(seed + 1)
        vocab, pad = model.config.vocab_size, model.config.pad_token_id
        gen_ids, gen_mask = padded(GEN_LENGTHS, max(GEN_LENGTHS), vocab, pad)
        seq, margin = greedy(model, gen_ids, gen_mask)
        if margin > MIN_MARGIN:
            break
        seed += 1
    else:
        raise RuntimeError("no seed with a stable greedy margin")
    ids, mask = padded(ENC_LENGTHS, ENC_LEN, vocab, pad)
    labels, lmask = padded(DEC_LENGTHS, DEC_LEN, vocab, -100)
    decoder_input_ids = decoder_inputs(model, labels)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref = dict(input_ids=ids, attention_mask=mask, labels=labels, decoder_input_ids=decoder_input_ids,
               logits=out.logits.float().contiguous(), loss=out.loss.float().reshape(1),
               encoder_last_hidden_state=out.encoder_last_hidden_state.float().contiguous(),
               gen_input_ids=gen_ids, gen_attention_mask=gen_mask, gen_output_ids=seq,
               num_parameters=torch.tensor([model.num_parameters()], dtype=torch.int64))
    if isinstance(model.config, MBartConfig):  # mBART-50 forces the target language first
        ref["gen_forced_output_ids"] = greedy(model, gen_ids, gen_mask, forced_bos=MBART_FORCED_BOS)[0]
    if isinstance(model.config, (MarianConfig, PegasusConfig)):
        ref["position_table"] = model.model.encoder.embed_positions.weight.detach().float().contiguous()
    model.save_pretrained(case_dir, safe_serialization=True)
    # the saved model must be what we computed with (tying on load included)
    again = AutoModelForSeq2SeqLM.from_pretrained(case_dir).eval()
    with torch.no_grad():
        again_logits = again(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    assert (again_logits - ref["logits"]).abs().max().item() < 1e-6
    assert again.num_parameters() == model.num_parameters()
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    return ref, margin


def make_adapter(case_dir, ref, name, peft_config, perturb):
    from peft import PeftModel, get_peft_model
    base = AutoModelForSeq2SeqLM.from_pretrained(case_dir, dtype=torch.float32).eval()
    torch.manual_seed(7)
    model = get_peft_model(base, peft_config).eval()
    inputs = dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                  decoder_input_ids=ref["decoder_input_ids"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if perturb in n:
                p.add_(torch.randn_like(p) * 0.3)
        logits = model(**inputs).logits.float().contiguous()
    effect = (logits - ref["logits"]).abs().max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(case_dir, name)
    model.save_pretrained(out, safe_serialization=True)
    base = AutoModelForSeq2SeqLM.from_pretrained(case_dir, dtype=torch.float32).eval()
    merged = PeftModel.from_pretrained(base, out).eval().merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(**inputs).logits.float().contiguous()
    assert (merged_logits - logits).abs().max().item() < 1e-4
    save_file(dict(inputs, logits=logits, merged_logits=merged_logits), os.path.join(out, "reference.safetensors"))
    return effect


PROMPT_GEN_NEW = 16


def peft_greedy(model, ids, mask):
    """PeftModelForSeq2SeqLM.generate, greedy, PROMPT_GEN_NEW tokens; and the smallest top-2 margin."""
    gc = model.get_base_model().generation_config
    for k in ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation"):
        setattr(gc, k, None)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=PROMPT_GEN_NEW,
                             min_new_tokens=PROMPT_GEN_NEW, do_sample=False, num_beams=1, eos_token_id=None,
                             pad_token_id=model.get_base_model().config.pad_token_id,
                             decoder_start_token_id=model.get_base_model().config.decoder_start_token_id,
                             output_scores=True,
                             return_dict_in_generate=True)
    margin = min(float(torch.topk(sc.float(), 2).values.diff().abs().min()) for sc in out.scores)
    return out.sequences.contiguous(), margin


def make_prompt_adapter(case_dir, ref, name, peft_config, decoder_mask=False, encoder_weights=False):
    """Prompt tuning, P-tuning, prefix tuning by HF PEFT (task_type SEQ_2_SEQ_LM, so
    num_transformer_submodules 2) with random values: the padded batch's logits (with a
    decoder attention mask when asked) and PROMPT_GEN_NEW greedy tokens. encoder_weights:
    a copy NAME_encoder/ also holds the prompt encoder's own weights under our
    prompt_encoder.safetensors, so the C++ side recomputes the prompts from them."""
    from peft import PeftModel, get_peft_model
    base = AutoModelForSeq2SeqLM.from_pretrained(case_dir, dtype=torch.float32).eval()
    torch.manual_seed(7)
    model = get_peft_model(base, peft_config).eval()
    assert model.peft_config["default"].num_transformer_submodules == 2
    inputs = dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                  decoder_input_ids=ref["decoder_input_ids"])
    if decoder_mask:
        inputs["decoder_attention_mask"] = (ref["labels"] != -100).to(torch.int64)
    with torch.no_grad():
        logits = model(**inputs).logits.float().contiguous()
    effect = (logits - ref["logits"]).abs().max().item()
    assert effect > MIN_EFFECT, effect
    seq, margin = peft_greedy(model, ref["gen_input_ids"], ref["gen_attention_mask"])
    assert margin > MIN_MARGIN / 10, margin
    out = os.path.join(case_dir, name)
    model.save_pretrained(out, safe_serialization=True)
    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(case_dir, dtype=torch.float32), out)
    with torch.no_grad():
        assert (reloaded.eval()(**inputs).logits - logits).abs().max().item() < 1e-5
    save_file(dict(inputs, logits=logits, gen_output_ids=seq), os.path.join(out, "reference.safetensors"))
    if encoder_weights:
        copy = out + "_encoder"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
        weights = {k: v.detach().contiguous() for k, v in model.prompt_encoder["default"].state_dict().items()}
        save_file(weights, os.path.join(copy, "prompt_encoder.safetensors"))
    return effect, margin


def make_prompt_learning(out_dir):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
    for case, name, config, kwargs in (
            ("t5_relu", "prompt_tuning", PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4), {}),
            ("t5_relu", "p_tuning",
             PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, encoder_hidden_size=16,
                                 encoder_reparameterization_type="LSTM"), dict(encoder_weights=True)),
            # 3 decoder layers: HF PEFT's grouping of the key/value rows wraps around (see
            # PrefixEncoder::prepare_seq2seq); num_heads * d_kv = 36 is not d_model = 40
            ("t5_v11", "prefix_tuning",
             PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, num_layers=3, token_dim=36,
                                num_attention_heads=3), dict(decoder_mask=True)),
            ("t5_relu", "prefix_tuning",
             PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=5), dict(decoder_mask=True)),
            ("bart", "prompt_tuning", PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4), {}),
            # Pegasus's encoder scales token rows only when it embeds ids itself: PEFT's
            # embeddings (and prompts) reach it unscaled
            ("pegasus", "prompt_tuning", PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3), {}),
            # the decoder's 3 layers and 2 heads (BART's num_hidden_layers is the encoder's 2)
            ("bart", "prefix_tuning",
             PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, num_layers=3, token_dim=32,
                                num_attention_heads=2), dict(decoder_mask=True))):
        case_dir = os.path.join(out_dir, case)
        effect, margin = make_prompt_adapter(case_dir, load_file(os.path.join(case_dir, "reference.safetensors")),
                                             name, config, **kwargs)
        print(f"{case} {name}: moves logits {effect:.3g}, greedy margin {margin:.3g}")


FORTUNE_ROWS, FORTUNE_EVAL, BATCH = 240, 40, 4


def fortunes_task(lines):
    rows = []
    for line in lines:
        words = line.split()
        if len(words) >= 6:
            half = len(words) // 2
            rows.append({"input": " ".join(words[:half]), "target": " ".join(words[half:])})
    return rows[:FORTUNE_ROWS + FORTUNE_EVAL]


def make_fortunes(case_dir, bart_model=False):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_tokenizers
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    lines = make_tokenizers.fortune_lines()
    tok, tok_cfg, _ = make_tokenizers.build_t5_unigram(lines)
    tok.save(os.path.join(case_dir, "tokenizer.json"))
    make_tokenizers.write_config(tok_cfg, case_dir)
    torch.manual_seed(11)
    if bart_model:  # BART over the same tokenizer: its pad, </s> as decoder start (BART's choice)
        cfg = BartConfig(vocab_size=tok.get_vocab_size(), d_model=32, encoder_layers=2, decoder_layers=2,
                         encoder_ffn_dim=48, decoder_ffn_dim=48, encoder_attention_heads=4, decoder_attention_heads=4,
                         max_position_embeddings=256, dropout=0.0, pad_token_id=0, bos_token_id=None, eos_token_id=1,
                         decoder_start_token_id=1, forced_eos_token_id=None, init_std=0.2)
        model = BartForConditionalGeneration(cfg).eval()
    else:
        cfg = T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, d_ff=48, num_layers=2,
                       num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=16,
                       relative_attention_max_distance=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        model = T5ForConditionalGeneration(cfg).eval()
    model.save_pretrained(case_dir, safe_serialization=True)
    rows = fortunes_task(lines)
    for name, part in (("train.jsonl", rows[:FORTUNE_ROWS]), ("eval.jsonl", rows[FORTUNE_ROWS:])):
        with open(os.path.join(case_dir, name), "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    batch = rows[FORTUNE_ROWS:FORTUNE_ROWS + BATCH]
    enc = [tok.encode(r["input"]).ids for r in batch]
    tgt = [tok.encode(r["target"]).ids for r in batch]
    assert all(t[-1] == tok.token_to_id("</s>") for t in tgt)
    ids = torch.zeros(BATCH, max(map(len, enc)), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    labels = torch.full((BATCH, max(map(len, tgt))), -100, dtype=torch.int64)
    for b in range(BATCH):
        ids[b, :len(enc[b])] = torch.tensor(enc[b])
        mask[b, :len(enc[b])] = 1
        labels[b, :len(tgt[b])] = torch.tensor(tgt[b])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    shifted = shift_tokens_right(labels, 0, 1) if bart_model else model._shift_right(labels)
    save_file(dict(input_ids=ids, attention_mask=mask, labels=labels, decoder_input_ids=shifted,
                   loss=out.loss.float().reshape(1)), os.path.join(case_dir, "reference.safetensors"))
    print(f"{os.path.basename(case_dir)}: vocabulary {tok.get_vocab_size()}, {len(rows)} rows, batch loss {out.loss.item():.4f}")


def make(out_dir):
    from peft import IA3Config, LoraConfig
    torch.set_num_threads(1)  # ctest runs two tests at a time on two cores
    for name, cfg_factory, untie, seed in CASES:
        case_dir = os.path.join(out_dir, name)
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir)
        ref, margin = make_base(case_dir, cfg_factory, untie, seed)
        lora = make_adapter(case_dir, ref, "lora",
                            LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8,
                                       target_modules=LORA_TARGETS.get(name, ["q", "v", "wo"]),
                                       init_lora_weights=False), "lora_B")
        ia3 = make_adapter(case_dir, ref, "ia3", IA3Config(task_type="SEQ_2_SEQ_LM", **IA3_TARGETS.get(name, {})),
                           "ia3_l")
        print(f"{name}: greedy margin {margin:.3g}; LoRA moves logits {lora:.3g}, (IA)3 {ia3:.3g}")
    make_prompt_learning(out_dir)
    make_fortunes(os.path.join(out_dir, "t5_fortunes"))
    make_fortunes(os.path.join(out_dir, "bart_fortunes"), bart_model=True)


def check(base_dir, adapter_dir, outputs, tol):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    torch.set_num_threads(1)  # ctest runs two tests at a time on two cores
    model = AutoModelForSeq2SeqLM.from_pretrained(base_dir, dtype=torch.float32).eval()
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
        logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                       decoder_input_ids=t["decoder_input_ids"]).logits
    diff = (logits - t["logits"]).abs().max().item()
    print(f"max |logits - expected| = {diff:.3g}")
    return 0 if diff <= tol else 1


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        make(args[1])
        return 0
    if len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        # one process for several (BASE, ADAPTER, OUTPUTS) triples: importing transformers
        # and peft is most of a check's time
        failed = 0
        for i in range(1, len(args), 3):
            failed |= check(args[i], args[i + 1], args[i + 2], 1e-4)
        return failed
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
