#!/usr/bin/env python
"""Generate small random HF models plus reference outputs for C++ parity tests.

Usage: python tests/parity/make_models.py OUT_DIR

For every case a directory OUT_DIR/<case>/ is (re)created with:
  * the model saved by ``save_pretrained`` (config.json + safetensors, float32)
  * reference.safetensors  (inputs + expected outputs, see below)
  * ids.json               (ragged input_ids rows, real tokens only)   [text models]
  * token_type_ids.json    (ragged token_type_ids rows)                [BERT models]
  * pixels.safetensors     (``pixel_values``)                          [ViT models]

reference.safetensors tensors:
  LM models   : input_ids, attention_mask, logits, gen_input_ids, gen_output_ids,
                packed_input_ids, packed_position_ids, packed_logits, num_parameters
  BertModel   : input_ids, attention_mask, token_type_ids, last_hidden_state,
                pooler_output, num_parameters
  Bert cls    : input_ids, attention_mask, token_type_ids, logits, num_parameters
  ViTModel    : pixel_values, last_hidden_state, pooler_output, num_parameters
  ViT cls     : pixel_values, logits, num_parameters
"""

import json
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

B = 3
S = 7
LENGTHS = [7, 4, 1]  # ragged, row 0 is full length
PACKED_SEGMENTS = [[5, 4, 3], [1, 6, 5]]  # sequence lengths in each packed row
GEN_PROMPT_LEN = 5
GEN_NEW = 32
# spec requires > 1e-3; we ask for a bit more head-room for float32 C++ parity
MIN_MARGIN = 1e-2
MAX_SEED_TRIES = 100

# larger-than-default init so logits are well separated and greedy output is varied
LM_INIT_STD = 0.2

# ---------------------------------------------------------------------------
# case definitions: name -> (kind, model class, config factory, save kwargs)
# ---------------------------------------------------------------------------


def _llama_mha(vocab=128):
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=LM_INIT_STD,
    )


def _llama_gqa_tied():
    return LlamaConfig(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0},
        initializer_range=LM_INIT_STD,
    )


def _llama3_rope():
    return LlamaConfig(
        vocab_size=101,
        hidden_size=40,
        head_dim=16,
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        initializer_range=LM_INIT_STD,
    )


def _mistral():
    return MistralConfig(
        vocab_size=120,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        sliding_window=None,
        tie_word_embeddings=False,
        initializer_range=LM_INIT_STD,
    )


def _qwen2():
    return Qwen2Config(
        vocab_size=130,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        use_sliding_window=False,
        initializer_range=LM_INIT_STD,
    )


def _gpt2():
    return GPT2Config(
        vocab_size=100,
        n_positions=64,
        n_embd=48,
        n_layer=2,
        n_head=4,
        initializer_range=LM_INIT_STD,
    )


def _gpt2_odd():
    return GPT2Config(
        vocab_size=83,
        n_positions=64,
        n_embd=36,
        n_layer=3,
        n_head=3,
        n_inner=50,
        layer_norm_epsilon=1e-5,
        initializer_range=LM_INIT_STD,
    )


def _bert():
    return BertConfig(
        vocab_size=99,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )


def _bert_cls():
    return BertConfig(
        vocab_size=90,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=3,
    )


def _vit():
    return ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
    )


def _vit_cls():
    return ViTConfig(
        image_size=12,
        patch_size=4,
        num_channels=3,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        num_labels=5,
    )


CASES = [
    # name, kind, model class, config factory, extra save kwargs
    ("llama_mha", "lm", LlamaForCausalLM, _llama_mha, {}),
    ("llama_gqa_tied", "lm", LlamaForCausalLM, _llama_gqa_tied, {}),
    ("llama3_rope", "lm", LlamaForCausalLM, _llama3_rope, {}),
    ("llama_sharded", "lm", LlamaForCausalLM, lambda: _llama_mha(vocab=256), {"max_shard_size": "40KB"}),
    ("mistral", "lm", MistralForCausalLM, _mistral, {}),
    ("qwen2", "lm", Qwen2ForCausalLM, _qwen2, {}),
    ("gpt2", "lm", GPT2LMHeadModel, _gpt2, {}),
    ("gpt2_odd", "lm", GPT2LMHeadModel, _gpt2_odd, {}),
    ("bert", "bert", BertModel, _bert, {}),
    ("bert_cls", "bert_cls", BertForSequenceClassification, _bert_cls, {}),
    ("vit", "vit", ViTModel, _vit, {}),
    ("vit_cls", "vit_cls", ViTForImageClassification, _vit_cls, {}),
]

BASE_SEED = 1234


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def build_model(cls, cfg_factory, seed):
    torch.manual_seed(seed)
    cfg = cfg_factory()
    cfg._attn_implementation = "eager"
    model = cls(cfg)
    model.to(torch.float32)
    # make sure norms/biases are not trivially ones/zeros
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    return model


def make_text_inputs(vocab):
    input_ids = torch.zeros(B, S, dtype=torch.int64)
    attention_mask = torch.zeros(B, S, dtype=torch.int64)
    for b, n in enumerate(LENGTHS):
        # avoid the pad token 0 among real tokens so the ragged form is unambiguous
        input_ids[b, :n] = torch.randint(1, vocab, (n,), dtype=torch.int64)
        attention_mask[b, :n] = 1
    return input_ids, attention_mask


def make_packed_inputs(vocab, seed):
    """Rows of several sequences each, told apart only by position ids that restart at 0
    (DataCollatorWithFlattening's form); transformers then keeps each sequence's attention
    within itself. Drawn from their own generator so the other inputs stay as they were."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(PACKED_SEGMENTS), sum(PACKED_SEGMENTS[0])), generator=gen, dtype=torch.int64)
    pos = torch.tensor([[i for n in row for i in range(n)] for row in PACKED_SEGMENTS], dtype=torch.int64)
    return ids, pos


def ragged(t, lengths):
    return [t[b, :n].tolist() for b, n in enumerate(lengths)]


def configure_greedy(model):
    gc = model.generation_config
    gc.do_sample = False
    gc.num_beams = 1
    gc.temperature = None
    gc.top_k = None
    gc.top_p = None
    gc.repetition_penalty = None
    gc.no_repeat_ngram_size = None
    gc.eos_token_id = None
    gc.bos_token_id = None
    gc.pad_token_id = 0
    gc.forced_bos_token_id = None
    gc.forced_eos_token_id = None
    gc.suppress_tokens = None
    gc.begin_suppress_tokens = None
    gc.bad_words_ids = None
    gc.max_length = None


def greedy_generation(model, new_tokens, use_cache):
    """Greedy generate of two prompts of 5 and 3 tokens, left-padded with 0 (seeded):
    gen_prompt_ids [2, 5], gen_prompt_mask and gen_ids [2, 5 + new_tokens]."""
    configure_greedy(model)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 64, (2, 5), generator=g)
    mask = torch.ones(2, 5, dtype=torch.long)
    ids[1, :2] = 0
    mask[1, :2] = 0
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=use_cache)
    assert out.shape == (2, 5 + new_tokens), out.shape
    return dict(gen_prompt_ids=ids, gen_prompt_mask=mask, gen_ids=out.to(torch.int64).contiguous())


def run_generate(model, vocab):
    gen_input_ids = torch.randint(1, vocab, (1, GEN_PROMPT_LEN), dtype=torch.int64)
    with torch.no_grad():
        out = model.generate(
            gen_input_ids,
            attention_mask=torch.ones_like(gen_input_ids),
            max_new_tokens=GEN_NEW,
            min_new_tokens=GEN_NEW,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    seq = out.sequences
    assert seq.shape == (1, GEN_PROMPT_LEN + GEN_NEW), seq.shape
    margin = float("inf")
    for sc in out.scores:
        top2 = torch.topk(sc[0].float(), 2).values
        margin = min(margin, float(top2[0] - top2[1]))
    # sanity: generated tokens are argmax of scores
    for i, sc in enumerate(out.scores):
        assert int(sc[0].argmax()) == int(seq[0, GEN_PROMPT_LEN + i])
    return gen_input_ids, seq.to(torch.int64).contiguous(), margin


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ---------------------------------------------------------------------------
# per case
# ---------------------------------------------------------------------------


def make_case(out_root, idx, name, kind, cls, cfg_factory, save_kwargs):
    case_dir = os.path.join(out_root, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)

    ref = {}
    note = ""
    seed = BASE_SEED + 100 * idx
    for attempt in range(MAX_SEED_TRIES):
        model = build_model(cls, cfg_factory, seed)
        cfg = model.config
        ref = {}
        if kind == "lm":
            vocab = cfg.vocab_size
            torch.manual_seed(seed + 1)
            input_ids, attention_mask = make_text_inputs(vocab)
            configure_greedy(model)
            gen_in, gen_out, margin = run_generate(model, vocab)
            if margin <= MIN_MARGIN:
                print(f"  [{name}] seed {seed}: min margin {margin:.3g} too small, retrying")
                seed += 1
                continue
            with torch.no_grad():
                logits = model(input_ids, attention_mask=attention_mask).logits
            ref.update(
                input_ids=input_ids,
                attention_mask=attention_mask,
                logits=logits.float().contiguous(),
                gen_input_ids=gen_in.contiguous(),
                gen_output_ids=gen_out,
            )
            packed_ids, packed_pos = make_packed_inputs(vocab, seed + 2)
            with torch.no_grad():
                packed_logits = model(packed_ids, position_ids=packed_pos, use_cache=False).logits
                # transformers keeps packed sequences apart: the last one of row 0 alone
                alone = model(packed_ids[:1, -PACKED_SEGMENTS[0][-1] :], use_cache=False).logits
            assert torch.allclose(packed_logits[:1, -PACKED_SEGMENTS[0][-1] :], alone, atol=1e-5), name
            ref.update(
                packed_input_ids=packed_ids,
                packed_position_ids=packed_pos,
                packed_logits=packed_logits.float().contiguous(),
            )
            note = f"min_gen_margin={margin:.4f}"
        elif kind in ("bert", "bert_cls"):
            vocab = cfg.vocab_size
            torch.manual_seed(seed + 1)
            input_ids, attention_mask = make_text_inputs(vocab)
            token_type_ids = torch.randint(0, 2, (B, S), dtype=torch.int64) * attention_mask
            with torch.no_grad():
                out = model(
                    input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                )
            ref.update(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            )
            if kind == "bert":
                ref["last_hidden_state"] = out.last_hidden_state.float().contiguous()
                ref["pooler_output"] = out.pooler_output.float().contiguous()
            else:
                ref["logits"] = out.logits.float().contiguous()
        elif kind in ("vit", "vit_cls"):
            torch.manual_seed(seed + 1)
            pixel_values = torch.randn(2, cfg.num_channels, cfg.image_size, cfg.image_size, dtype=torch.float32)
            with torch.no_grad():
                out = model(pixel_values)
            ref["pixel_values"] = pixel_values
            if kind == "vit":
                ref["last_hidden_state"] = out.last_hidden_state.float().contiguous()
                ref["pooler_output"] = out.pooler_output.float().contiguous()
            else:
                ref["logits"] = out.logits.float().contiguous()
        else:
            raise ValueError(kind)
        break
    else:
        raise RuntimeError(f"{name}: could not find a seed with a stable greedy margin")

    ref["num_parameters"] = torch.tensor([model.num_parameters()], dtype=torch.int64)

    model.save_pretrained(case_dir, safe_serialization=True, **save_kwargs)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))

    if kind.startswith("vit"):
        save_file({"pixel_values": ref["pixel_values"]}, os.path.join(case_dir, "pixels.safetensors"))
    else:
        with open(os.path.join(case_dir, "ids.json"), "w") as f:
            json.dump(ragged(ref["input_ids"], LENGTHS), f)
        if kind.startswith("bert"):
            with open(os.path.join(case_dir, "token_type_ids.json"), "w") as f:
                json.dump(ragged(ref["token_type_ids"], LENGTHS), f)

    # sanity checks on what was written
    cfg_path = os.path.join(case_dir, "config.json")
    assert os.path.isfile(cfg_path)
    with open(cfg_path) as f:
        saved_cfg = json.load(f)
    if save_kwargs.get("max_shard_size"):
        idx_path = os.path.join(case_dir, "model.safetensors.index.json")
        assert os.path.isfile(idx_path), "sharded save did not produce an index file"
        with open(idx_path) as f:
            n_shards = len(set(json.load(f)["weight_map"].values()))
        assert n_shards > 1, n_shards
        note += f" shards={n_shards}"
    else:
        assert os.path.isfile(os.path.join(case_dir, "model.safetensors"))
    size = dir_size(case_dir)
    model_bytes = sum(
        os.path.getsize(os.path.join(case_dir, f))
        for f in os.listdir(case_dir)
        if f.startswith("model") and f.endswith(".safetensors")
    )
    assert model_bytes < 2 * 1024 * 1024, (name, model_bytes)

    shapes = " ".join(f"{k}{list(v.shape)}" for k, v in ref.items() if k not in ("num_parameters",))
    print(
        f"{name:15s} {cls.__name__:30s} seed={seed} params={int(ref['num_parameters'][0])} "
        f"model_bytes={model_bytes} dir_bytes={size} {saved_cfg.get('architectures')} {note.strip()} | {shapes}"
    )


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    out_root = sys.argv[1]
    os.makedirs(out_root, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    for idx, (name, kind, cls, cfg_factory, save_kwargs) in enumerate(CASES):
        make_case(out_root, idx, name, kind, cls, cfg_factory, save_kwargs)
    print(f"done: {len(CASES)} cases in {time.time() - t0:.1f}s -> {out_root}")


if __name__ == "__main__":
    main()
