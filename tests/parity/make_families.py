#!/usr/bin/env python
"""Random-weight Qwen3, Gemma, Gemma 2, Gemma 3 text, Phi, Phi-3, OPT, GPT-NeoX, BLOOM,
Falcon, Granite, OLMo 2, StarCoder2, GPT-J, GPTBigCode, StableLM, GPT-Neo, Cohere, Cohere 2 and SmolLM3 models made by transformers, with
reference outputs, and HF PEFT adapters (LoRA, IA3) on each, for tests/test_families.cpp.

Usage: python tests/parity/make_families.py OUT_DIR

For every case OUT_DIR/<case>/ holds:
  * the model (save_pretrained, float32), reference.safetensors with input_ids,
    attention_mask (right-padded rows), logits, gen_input_ids, gen_output_ids (32 greedy
    tokens), batch_gen_input_ids / batch_gen_attention_mask (3 left-padded prompts) and
    batch_gen_new_ids (12 greedy tokens each), packed_input_ids, packed_position_ids,
    packed_logits, num_parameters;
  * lora/ and ia3/ (and prefix/ for OPT): adapters saved by HF PEFT (non-trivial weights),
    each with reference.safetensors holding the adapted model's logits on the same inputs.
Sequences (9 tokens, 37 generated) are longer than every sliding window here (3 to 5).
OPT's, BLOOM's and Falcon's attention do not see packed sequences in transformers (their
causal masks are built without the position ids), so their packed_logits are each sequence run
alone, which is what packing means and what the C++ side computes.
"""

import os
import shutil
import sys
import time

import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    BloomForCausalLM,
    FalconConfig,
    FalconForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPTBigCodeConfig,
    GPTBigCodeForCausalLM,
    CohereConfig,
    Cohere2Config,
    Cohere2ForCausalLM,
    CohereForCausalLM,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GraniteConfig,
    GraniteForCausalLM,
    GPTNeoXForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
    StableLmConfig,
    StableLmForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

S = 9
LENGTHS = [9, 6, 2]  # right-padded rows, row 0 full length
PACKED_SEGMENTS = [[5, 4], [2, 7]]
GEN_PROMPT_LEN = 5
GEN_NEW = 32
MIN_MARGIN = 1e-2
MAX_SEED_TRIES = 100
INIT_STD = 0.2
MIN_EFFECT = 1e-3  # an adapter must move the logits at least this much


def _qwen3():
    # head_dim independent of hidden / heads; GQA 5:1; untied
    return Qwen3Config(
        vocab_size=131, hidden_size=48, head_dim=20, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=1, tie_word_embeddings=False, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=INIT_STD,
    )


def _qwen3_window():
    # tied; sliding window 3 from layer 1 on (use_sliding_window, max_window_layers)
    return Qwen3Config(
        vocab_size=97, hidden_size=40, head_dim=16, intermediate_size=56, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=3, max_window_layers=1, attention_bias=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 50000.0, "factor": 2.0}, initializer_range=INIT_STD,
    )


def _gemma():
    # Gemma 1: LLaMA's block with (1 + w) norms, scaled embedding, GeGLU; MQA; tied
    return GemmaConfig(
        vocab_size=101, hidden_size=48, head_dim=16, intermediate_size=72, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=64, initializer_range=INIT_STD,
    )


def _gemma2():
    # tied (Gemma's default); soft-capping low enough that tanh bends; window 4 on layers 0, 2
    return Gemma2Config(
        vocab_size=113, hidden_size=48, head_dim=24, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=64, sliding_window=4,
        query_pre_attn_scalar=20, attn_logit_softcapping=3.0, final_logit_softcapping=6.0,
        initializer_range=INIT_STD,
    )


def _gemma3():
    # untied; q_norm / k_norm; local and global RoPE (global linear-scaled); window 5
    return Gemma3TextConfig(
        vocab_size=109, hidden_size=48, head_dim=16, intermediate_size=72, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=64, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=16,
        tie_word_embeddings=False,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
        },
        initializer_range=INIT_STD,
    )


def _phi():
    # phi-2's layout: parallel attention and MLP from one LayerNorm, rotary on 0.4 of each
    # head, lm_head with a bias; untied
    return PhiConfig(
        vocab_size=103, hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                     "partial_rotary_factor": 0.4},
        initializer_range=INIT_STD,
    )


def _phi_qk():
    # q/k LayerNorms, GQA 4:1, half-head rotary, tied (the head's bias stays its own)
    return PhiConfig(
        vocab_size=91, hidden_size=48, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=64, qk_layernorm=True, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5000.0, "partial_rotary_factor": 0.5},
        initializer_range=INIT_STD,
    )


def _falcon():
    # falcon-7b's layout: multi-query, parallel attention and MLP from one LayerNorm, no
    # biases, tied
    return FalconConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
        parallel_attn=True, new_decoder_architecture=False, bias=False, max_position_embeddings=64,
        initializer_range=INIT_STD,
    )


def _falcon_new():
    # falcon-40b/180b's: grouped key/value heads (6 queries over 2 groups), ln_attn and
    # ln_mlp; biases; untied
    return FalconConfig(
        vocab_size=89, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_kv_heads=2,
        new_decoder_architecture=True, bias=True, tie_word_embeddings=False, max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, initializer_range=INIT_STD,
    )


def _falcon_seq():
    # per-head fused qkv, sequential attention then MLP, biases
    return FalconConfig(
        vocab_size=83, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, multi_query=False,
        parallel_attn=False, new_decoder_architecture=False, bias=True, max_position_embeddings=64,
        initializer_range=INIT_STD,
    )


def _granite():
    # LLaMA with Granite's four scalings (embeddings, residual branches, attention scores,
    # logits), GQA 4:2, tied
    return GraniteConfig(
        vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, embedding_multiplier=3.0,
        residual_multiplier=0.5, attention_multiplier=0.1, logits_scaling=4.0, initializer_range=INIT_STD,
    )


def _olmo2():
    # norms after each sublayer, q/k RMSNorms over all heads at once; GQA 4:2; untied
    return Olmo2Config(
        vocab_size=101, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=INIT_STD,
    )


def _starcoder2():
    # LayerNorms, biases, c_fc / c_proj MLP, GQA 4:2, a sliding window of 4 on every layer
    return Starcoder2Config(
        vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=4, initializer_range=INIT_STD,
    )


def _gptj():
    # GPT-J-6B's layout: interleaved rotary on the first 6 of 12 features per head, parallel
    # block, lm_head with a bias; untied
    return GPTJConfig(vocab_size=97, n_positions=64, n_embd=48, n_layer=2, n_head=4, rotary_dim=6,
                      initializer_range=INIT_STD)


def _gptj_full():
    # rotary over whole heads; tied (the head's bias stays its own)
    return GPTJConfig(vocab_size=89, n_positions=64, n_embd=32, n_layer=2, n_head=2, rotary_dim=16,
                      tie_word_embeddings=True, initializer_range=INIT_STD)


def _gpt_bigcode():
    # SantaCoder / StarCoder 1: multi-query attention (one key/value head), tied
    return GPTBigCodeConfig(vocab_size=97, n_positions=64, n_embd=48, n_layer=2, n_head=4, multi_query=True,
                            initializer_range=INIT_STD)


def _gpt_bigcode_mha():
    # without multi_query: per-head fused c_attn; untied
    return GPTBigCodeConfig(vocab_size=83, n_positions=64, n_embd=32, n_layer=2, n_head=4, multi_query=False,
                            tie_word_embeddings=False, activation_function="gelu", initializer_range=INIT_STD)


def _gpt_neo():
    # gpt-neo / TinyStories' layout: global and local layers alternating (a 4-token window,
    # shorter than the rows), unscaled float32 scores, tied
    return GPTNeoConfig(vocab_size=97, max_position_embeddings=64, hidden_size=48, num_layers=2, num_heads=4,
                        attention_types=[[["global", "local"], 1]], window_size=4, initializer_range=INIT_STD)


def _gpt_neo_local():
    # two local layers, then a global one; an explicit MLP width, exact GELU; untied
    return GPTNeoConfig(vocab_size=83, max_position_embeddings=64, hidden_size=32, num_layers=3, num_heads=2,
                        attention_types=[[["local"], 2], [["global"], 1]], window_size=3, intermediate_size=40,
                        activation_function="gelu", tie_word_embeddings=False, initializer_range=INIT_STD)


def _cohere():
    # Command-R's layout: parallel block from one bias-free float32 LayerNorm, interleaved
    # rotary, GQA, tied head with logit_scale
    return CohereConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, logit_scale=0.25,
                        initializer_range=INIT_STD)


def _cohere_qk():
    # per-head q/k LayerNorms (Command R+), attention biases, untied, another rope theta
    return CohereConfig(vocab_size=89, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, use_qk_norm=True,
                        attention_bias=True, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                        initializer_range=INIT_STD)




def _cohere2():
    # Command R7B's layout: three sliding-window layers with rotary, then a global one without
    return Cohere2Config(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=4,
                         logit_scale=0.25, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                         initializer_range=INIT_STD)



def _qwen2_window():
    # Qwen2 with use_sliding_window: a window of 3 from layer 1 on (max_window_layers), q/k/v bias
    return Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       use_sliding_window=True, sliding_window=3, max_window_layers=1, tie_word_embeddings=False,
                       initializer_range=INIT_STD)


def _smollm3():
    # SmolLM3's defaults: every 4th layer without rotary (NoPE), GQA, tied head
    return SmolLM3Config(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, initializer_range=INIT_STD)


def _smollm3_window():
    # NoPE layers listed, attending within a window of 4 (use_sliding_window), biases, untied
    return SmolLM3Config(vocab_size=89, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                         no_rope_layers=[1, 0, 1, 0], use_sliding_window=True, sliding_window=4, attention_bias=True,
                         mlp_bias=True, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000.0}, initializer_range=INIT_STD)


def _stablelm():
    # stablelm-3b-4e1t's layout: rotary on a quarter of each head, sequential residual, no
    # biases; untied
    return StableLmConfig(vocab_size=97, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                          initializer_range=INIT_STD)


def _stablelm2():
    # stablelm-2-12b's: per-head q/k LayerNorms, q/k/v biases, parallel residual, GQA 4:2,
    # half-head rotary
    return StableLmConfig(vocab_size=89, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          use_qkv_bias=True, qk_layernorm=True, use_parallel_residual=True,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                           "partial_rotary_factor": 0.5},
                          initializer_range=INIT_STD)


def _phi3():
    # fused qkv_proj / gate_up_proj; GQA 3:1; untied; sliding window 5 on every layer
    return Phi3Config(
        vocab_size=103, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=1, max_position_embeddings=64, original_max_position_embeddings=64,
        sliding_window=5, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        initializer_range=INIT_STD,
    )


def _phi3_tied():
    return Phi3Config(
        vocab_size=89, hidden_size=36, intermediate_size=50, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=3, max_position_embeddings=64, original_max_position_embeddings=64,
        sliding_window=None, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        initializer_range=INIT_STD,
    )


def _opt():
    # pre-LayerNorm (OPT-125m, 1.3b and up); tied; biases; ReLU
    return OPTConfig(
        vocab_size=101, hidden_size=48, num_hidden_layers=2, ffn_dim=72, num_attention_heads=4,
        max_position_embeddings=64, do_layer_norm_before=True, tie_word_embeddings=True, init_std=INIT_STD,
    )


def _opt_proj():
    # OPT-350m's layout: post-LayerNorm, no final norm, embeddings narrower than the model
    # (project_in / project_out)
    return OPTConfig(
        vocab_size=93, hidden_size=48, num_hidden_layers=2, ffn_dim=64, num_attention_heads=3,
        max_position_embeddings=64, do_layer_norm_before=False, word_embed_proj_dim=32,
        tie_word_embeddings=True, init_std=INIT_STD,
    )


def _gpt_neox():
    # Pythia's layout: parallel residual, rotary on a quarter of each head, biases, untied
    return GPTNeoXConfig(
        vocab_size=107, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=64, use_parallel_residual=True, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        initializer_range=INIT_STD,
    )


def _gpt_neox_seq():
    # sequential residual, half-head linear-scaled rotary, no attention bias, tied
    return GPTNeoXConfig(
        vocab_size=89, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=72,
        max_position_embeddings=64, use_parallel_residual=False, tie_word_embeddings=True, attention_bias=False,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0, "partial_rotary_factor": 0.5},
        initializer_range=INIT_STD,
    )


def _bloom():
    # bloom-560m's layout: ALiBi over 6 heads (not a power of two: the interleaved extra
    # slopes), embedding LayerNorm, tied
    return BloomConfig(vocab_size=97, hidden_size=48, n_layer=2, n_head=6, initializer_range=INIT_STD)


def _bloom_post_ln():
    # the residual taken after the LayerNorms; untied
    return BloomConfig(
        vocab_size=83, hidden_size=32, n_layer=2, n_head=4, apply_residual_connection_post_layernorm=True,
        tie_word_embeddings=False, initializer_range=INIT_STD,
    )


# name, model class, config factory, LoRA kwargs, IA3 kwargs. None target_modules: PEFT's
# default for the model_type (the C++ side must know the same table).
CASES = [
    ("qwen3", Qwen3ForCausalLM, _qwen3, dict(target_modules=None), dict(target_modules=None)),
    (
        "qwen3_window",
        Qwen3ForCausalLM,
        _qwen3_window,
        dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    ("gemma2", Gemma2ForCausalLM, _gemma2, dict(target_modules="all-linear"), dict(target_modules=None)),
    ("gemma3", Gemma3ForCausalLM, _gemma3, dict(target_modules=None), dict(target_modules=None)),
    (
        "phi3",
        Phi3ForCausalLM,
        _phi3,
        dict(target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
        dict(target_modules=["qkv_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "phi3_tied",
        Phi3ForCausalLM,
        _phi3_tied,
        dict(target_modules=["qkv_proj", "gate_up_proj"]),
        dict(target_modules=["qkv_proj", "gate_up_proj"], feedforward_modules=["gate_up_proj"]),
    ),
    ("opt", OPTForCausalLM, _opt, dict(target_modules=None), dict(target_modules=None)),
    (
        "opt_proj",
        OPTForCausalLM,
        _opt_proj,
        dict(target_modules="all-linear"),
        dict(target_modules=["k_proj", "fc1"], feedforward_modules=["fc1"]),
    ),
    ("gpt_neox", GPTNeoXForCausalLM, _gpt_neox, dict(target_modules=None), dict(target_modules=None)),
    (
        "gpt_neox_seq",
        GPTNeoXForCausalLM,
        _gpt_neox_seq,
        dict(target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
        dict(target_modules=["query_key_value", "dense_h_to_4h"], feedforward_modules=["dense_h_to_4h"]),
    ),
    ("bloom", BloomForCausalLM, _bloom, dict(target_modules=None), dict(target_modules=None)),
    (
        "bloom_post_ln",
        BloomForCausalLM,
        _bloom_post_ln,
        dict(target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
        dict(target_modules=["self_attention.dense", "dense_h_to_4h"], feedforward_modules=["dense_h_to_4h"]),
    ),
    ("gemma", GemmaForCausalLM, _gemma, dict(target_modules=None), dict(target_modules=None)),
    ("phi", PhiForCausalLM, _phi, dict(target_modules=None), dict(target_modules=None)),
    (
        "phi_qk",
        PhiForCausalLM,
        _phi_qk,
        dict(target_modules=["q_proj", "k_proj", "dense", "fc1"]),
        dict(target_modules=["k_proj", "fc1"], feedforward_modules=["fc1"]),
    ),
    ("falcon", FalconForCausalLM, _falcon, dict(target_modules=None), dict(target_modules=None)),
    (
        "falcon_new",
        FalconForCausalLM,
        _falcon_new,
        dict(target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
        dict(target_modules=["query_key_value", "dense_h_to_4h"], feedforward_modules=["dense_h_to_4h"]),
    ),
    ("falcon_seq", FalconForCausalLM, _falcon_seq, dict(target_modules=None), dict(target_modules=None)),
    (  # HF PEFT has no default targets for granite
        "granite",
        GraniteForCausalLM,
        _granite,
        dict(target_modules=["q_proj", "v_proj"]),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "olmo2",
        Olmo2ForCausalLM,
        _olmo2,
        dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "starcoder2",
        Starcoder2ForCausalLM,
        _starcoder2,
        dict(target_modules=["q_proj", "v_proj", "c_fc", "c_proj"]),
        dict(target_modules=["k_proj", "c_proj"], feedforward_modules=["c_proj"]),
    ),
    ("gptj", GPTJForCausalLM, _gptj, dict(target_modules=None), dict(target_modules=None)),
    (
        "gptj_full",
        GPTJForCausalLM,
        _gptj_full,
        dict(target_modules=["q_proj", "k_proj", "out_proj", "fc_in"]),
        dict(target_modules=["k_proj", "fc_in"], feedforward_modules=["fc_in"]),
    ),
    ("gpt_bigcode", GPTBigCodeForCausalLM, _gpt_bigcode, dict(target_modules=None), dict(target_modules=None)),
    (
        "gpt_bigcode_mha",
        GPTBigCodeForCausalLM,
        _gpt_bigcode_mha,
        dict(target_modules=["c_attn", "attn.c_proj", "c_fc"]),
        dict(target_modules=["c_attn", "c_fc"], feedforward_modules=["c_fc"]),
    ),
    (  # HF PEFT has no (IA)3 defaults for stablelm
        "stablelm",
        StableLmForCausalLM,
        _stablelm,
        dict(target_modules=None),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "stablelm2",
        StableLmForCausalLM,
        _stablelm2,
        dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        dict(target_modules=["v_proj", "up_proj"], feedforward_modules=["up_proj"]),
    ),
    ("gpt_neo", GPTNeoForCausalLM, _gpt_neo, dict(target_modules=None), dict(target_modules=None)),
    ("gpt_neo_local", GPTNeoForCausalLM, _gpt_neo_local, dict(target_modules=["q_proj", "k_proj", "out_proj", "c_fc"]),
     dict(target_modules=None)),
    (  # HF PEFT has no defaults for cohere
        "cohere",
        CohereForCausalLM,
        _cohere,
        dict(target_modules=["q_proj", "v_proj"]),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "cohere_qk",
        CohereForCausalLM,
        _cohere_qk,
        dict(target_modules=["q_proj", "k_proj", "o_proj", "up_proj"]),
        dict(target_modules=["v_proj", "gate_proj"], feedforward_modules=["gate_proj"]),
    ),
    (  # HF PEFT has no defaults for smollm3
        "smollm3",
        SmolLM3ForCausalLM,
        _smollm3,
        dict(target_modules=["q_proj", "v_proj"]),
        dict(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]),
    ),
    (
        "smollm3_window",
        SmolLM3ForCausalLM,
        _smollm3_window,
        dict(target_modules=["q_proj", "k_proj", "o_proj", "up_proj"]),
        dict(target_modules=["v_proj", "gate_proj"], feedforward_modules=["gate_proj"]),
    ),
    (  # HF PEFT has no defaults for cohere2
        "cohere2",
        Cohere2ForCausalLM,
        _cohere2,
        dict(target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]),
        dict(target_modules=["k_proj", "up_proj"], feedforward_modules=["up_proj"]),
    ),
    ("qwen2_window", Qwen2ForCausalLM, _qwen2_window, dict(target_modules=None), dict(target_modules=None)),
]
PACKING_BLIND = {"opt", "opt_proj", "bloom", "bloom_post_ln", "falcon", "falcon_new", "falcon_seq"}
PREFIXED = {"opt", "opt_proj", "gpt_neox", "bloom"}

BASE_SEED = 2468


def build_model(cls, cfg_factory, seed):
    torch.manual_seed(seed)
    cfg = cfg_factory()
    cfg._attn_implementation = "eager"
    model = cls(cfg).to(torch.float32)
    with torch.no_grad():  # norms and biases away from their trivial init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.eval()
    return model


def text_inputs(vocab):
    ids = torch.zeros(len(LENGTHS), S, dtype=torch.int64)
    mask = torch.zeros(len(LENGTHS), S, dtype=torch.int64)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = torch.randint(1, vocab, (n,), dtype=torch.int64)
        mask[b, :n] = 1
    return ids, mask


def greedy(model, vocab):
    gc = model.generation_config
    for k in ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation"):
        setattr(gc, k, None)
    gc.do_sample = False
    gc.pad_token_id = 0
    prompt = torch.randint(1, vocab, (1, GEN_PROMPT_LEN), dtype=torch.int64)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GEN_NEW,
                             min_new_tokens=GEN_NEW, do_sample=False, eos_token_id=None, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True)
    seq = out.sequences
    assert seq.shape == (1, GEN_PROMPT_LEN + GEN_NEW), seq.shape
    margin = min(float(torch.topk(sc[0].float(), 2).values.diff().abs()) for sc in out.scores)
    for i, sc in enumerate(out.scores):
        assert int(sc[0].argmax()) == int(seq[0, GEN_PROMPT_LEN + i])
    return prompt, seq.contiguous(), margin


BATCH_PROMPT_LENS = [7, 2, 4]  # left-padded to 7
BATCH_NEW = 12
MIN_BATCH_MARGIN = 1e-3


def batched_greedy(model, vocab):
    """Greedy generation for a left-padded batch, as transformers' generate runs it."""
    L = max(BATCH_PROMPT_LENS)
    ids = torch.zeros(len(BATCH_PROMPT_LENS), L, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(BATCH_PROMPT_LENS):
        ids[b, L - n:] = torch.randint(1, vocab, (n,), dtype=torch.int64)
        mask[b, L - n:] = 1
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=BATCH_NEW, min_new_tokens=BATCH_NEW,
                             do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
                             return_dict_in_generate=True)
    margin = min(float(torch.topk(sc[b].float(), 2).values.diff().abs())
                 for sc in out.scores for b in range(len(BATCH_PROMPT_LENS)))
    return ids, mask, out.sequences[:, L:].contiguous(), margin


def packed_inputs(vocab, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(PACKED_SEGMENTS), sum(PACKED_SEGMENTS[0])), generator=gen, dtype=torch.int64)
    pos = torch.tensor([[i for n in row for i in range(n)] for row in PACKED_SEGMENTS], dtype=torch.int64)
    return ids, pos


def make_base(case_dir, idx, name, cls, cfg_factory):
    seed = BASE_SEED + 100 * idx
    for _ in range(MAX_SEED_TRIES):
        model = build_model(cls, cfg_factory, seed)
        vocab = model.config.vocab_size
        torch.manual_seed(seed + 1)
        ids, mask = text_inputs(vocab)
        prompt, seq, margin = greedy(model, vocab)
        bids, bmask, bout, bmargin = batched_greedy(model, vocab)
        if margin > MIN_MARGIN and bmargin > MIN_BATCH_MARGIN:
            break
        seed += 1
    else:
        raise RuntimeError(f"{name}: no seed with a stable greedy margin")
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        pids, ppos = packed_inputs(vocab, seed + 2)
        if name not in PACKING_BLIND:
            packed = model(pids, position_ids=ppos, use_cache=False).logits
        else:
            packed = torch.stack([
                torch.cat([model(pids[b:b + 1, sum(row[:i]):sum(row[:i + 1])], use_cache=False).logits[0]
                           for i in range(len(row))])
                for b, row in enumerate(PACKED_SEGMENTS)])
        last = PACKED_SEGMENTS[0][-1]
        alone = model(pids[:1, -last:], use_cache=False).logits
    assert torch.allclose(packed[:1, -last:], alone, atol=1e-5), name
    ref = dict(input_ids=ids, attention_mask=mask, logits=logits.float().contiguous(), gen_input_ids=prompt,
               gen_output_ids=seq, batch_gen_input_ids=bids, batch_gen_attention_mask=bmask,
               batch_gen_new_ids=bout, packed_input_ids=pids, packed_position_ids=ppos,
               packed_logits=packed.float().contiguous(),
               num_parameters=torch.tensor([model.num_parameters()], dtype=torch.int64))
    model.save_pretrained(case_dir, safe_serialization=True)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    return ref, seed, margin


def write_v4_copy(case_dir):
    """The case as transformers 4 (and Pythia's files) have it: `embed_out` for the head,
    the causal-mask buffers, rotary_pct / rotary_emb_base instead of rope_parameters."""
    import json

    from safetensors.torch import load_file

    out = os.path.join(case_dir, "v4")
    os.makedirs(out, exist_ok=True)
    weights = load_file(os.path.join(case_dir, "model.safetensors"))
    v4 = {("embed_out." + k[len("lm_head."):] if k.startswith("lm_head.") else k): v for k, v in weights.items()}
    assert "embed_out.weight" in v4, sorted(weights)
    v4["gpt_neox.layers.0.attention.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool)).view(1, 1, 64, 64)
    v4["gpt_neox.layers.0.attention.masked_bias"] = torch.tensor(-1e9)
    save_file(v4, os.path.join(out, "model.safetensors"))
    with open(os.path.join(case_dir, "config.json")) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg["rotary_pct"] = rope["partial_rotary_factor"]
    cfg["rotary_emb_base"] = rope["rope_theta"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def perturb(model, keys, scale):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keys):
                p.add_(torch.randn_like(p) * scale)


def make_adapter(case_dir, kind, config, ref, seed):
    base = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager", dtype=torch.float32).eval()
    torch.manual_seed(seed)
    model = get_peft_model(base, config).eval()
    perturb(model, ["ia3_l"] if kind == "ia3" else [], 0.3)
    with torch.no_grad():
        logits = model(ref["input_ids"], attention_mask=ref["attention_mask"]).logits.float().contiguous()
    effect = ((logits - ref["logits"]).abs() * ref["attention_mask"].unsqueeze(-1)).max().item()
    assert effect > MIN_EFFECT, (case_dir, kind, effect)
    out = os.path.join(case_dir, kind)
    model.save_pretrained(out, safe_serialization=True)
    save_file({"logits": logits}, os.path.join(out, "reference.safetensors"))
    return effect, sorted(getattr(model.peft_config["default"], "target_modules", None) or [])


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    root = sys.argv[1]
    os.makedirs(root, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    for idx, (name, cls, cfg_factory, lora_kwargs, ia3_kwargs) in enumerate(CASES):
        case_dir = os.path.join(root, name)
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir)
        ref, seed, margin = make_base(case_dir, idx, name, cls, cfg_factory)
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False, **lora_kwargs)
        lora_effect, lora_targets = make_adapter(case_dir, "lora", lora, ref, seed + 3)
        ia3_effect, ia3_targets = make_adapter(case_dir, "ia3", IA3Config(**ia3_kwargs), ref, seed + 4)
        if name == "gpt_neox":
            write_v4_copy(case_dir)
        if name in PREFIXED:  # prefix keys/values: OPT's positions count them from the mask
            prefix = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
            prefix_effect, _ = make_adapter(case_dir, "prefix", prefix, ref, seed + 5)
            print(f"{name:13s} prefix effect={prefix_effect:.3g}")
        print(f"{name:13s} {cls.__name__:18s} seed={seed} params={int(ref['num_parameters'][0])} "
              f"margin={margin:.3g} lora{lora_targets} effect={lora_effect:.3g} "
              f"ia3{ia3_targets} effect={ia3_effect:.3g}")
    print(f"done: {len(CASES)} cases in {time.time() - t0:.1f}s -> {root}")


if __name__ == "__main__":
    main()
