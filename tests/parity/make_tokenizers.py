#!/usr/bin/env python
"""Train small tokenizers with HF ``tokenizers`` plus reference encodings for C++ parity tests.

Usage: python tests/parity/make_tokenizers.py OUT_DIR

Corpus (Debian packages, no network):
  * King James Bible from ``bible-kjv-text`` (compressed /usr/lib/bible.data), dumped
    with ``bible -f Gen1:1-Rev22:21`` from ``bible-kjv``; the "Ge1:1 " references are
    stripped, one verse per line.
  * /usr/share/games/fortunes/{fortunes,literature,riddles} from ``fortunes-min``;
    '%' separator lines and blank lines dropped, one line per line.
  apt-get install -y bible-kjv-text fortunes-min

Output (OUT_DIR is created; every file below is rewritten on each run):
  OUT_DIR/texts.json                      held-out test strings (list of str)
  OUT_DIR/<name>/tokenizer.json           the trained tokenizer
  OUT_DIR/<name>/tokenizer_config.json    bos/eos/unk/pad/... tokens for transformers
  OUT_DIR/<name>/expected.jsonl           one line per text (same order as texts.json):
      text, ids, tokens, type_ids, offsets (BYTE offsets into text.encode('utf-8')),
      special_tokens_mask, attention_mask, ids_no_special,
      decoded (skip_special_tokens=False), decoded_skip (skip_special_tokens=True)
  OUT_DIR/<name>/expected_pairs.jsonl     encode(a, b): a, b, ids, tokens, type_ids,
      sequence_ids, special_tokens_mask, attention_mask, offsets (BYTE offsets into the
      sequence each token comes from, as tokenizers reports them per sequence; [0,0] for
      template special tokens), decoded, decoded_skip
  OUT_DIR/<name>/expected_batch.json      enable_padding + enable_truncation(max_length=16)
      on a copy, encode_batch(texts[:8]): padding, truncation, texts, ids, tokens,
      attention_mask, type_ids, special_tokens_mask, offsets (bytes)

Tokenizers: gpt2_bpe, llama2_bpe, metaspace_bpe, bert_wordpiece, t5_unigram, t5_precompiled
(SentencePiece's nmt_nfkc charsmap, from the sentencepiece trainer), wordlevel, llama3_split,
bert_cased_digits (see build_* below).

Everything is deterministic: training runs single-threaded (RAYON_NUM_THREADS=1,
TOKENIZERS_PARALLELISM=false), on a fixed corpus in a fixed order.
"""

import os

# Must be set before tokenizers is imported (the rayon pool is created lazily).
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

random.seed(0)

BIBLE_BIN = "/usr/bin/bible"
BIBLE_DATA = "/usr/lib/bible.data"
FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_FILES = ("fortunes", "literature", "riddles")

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BYTE_TOKENS = ["<0x%02X>" % b for b in range(256)]

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_VERSE_REF = re.compile(r"^[1-3]?[A-Za-z]+\d+:\d+ ")


# --------------------------------------------------------------------------- corpus
def bible_lines():
    if not os.path.exists(BIBLE_BIN) or not os.path.exists(BIBLE_DATA):
        sys.exit("KJV text not found: apt-get install -y bible-kjv-text (needs %s, %s)"
                 % (BIBLE_BIN, BIBLE_DATA))
    raw = subprocess.run([BIBLE_BIN, "-f", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True, cwd="/").stdout.decode("utf-8")
    out = []
    for line in raw.splitlines():
        line = _VERSE_REF.sub("", line).strip()
        if line:
            out.append(line)
    return out


def fortune_lines():
    out = []
    for name in FORTUNE_FILES:
        path = os.path.join(FORTUNE_DIR, name)
        if not os.path.exists(path):
            sys.exit("fortunes not found: apt-get install -y fortunes-min (needs %s)" % path)
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.strip() == "%":
                continue
            line = _CTRL.sub("", line).rstrip()
            if line.strip():
                out.append(line)
    return out


def corpus_lines():
    return bible_lines() + fortune_lines()


# --------------------------------------------------------------------------- texts
def held_out_texts():
    long_word = "".join("abcdefghijklmnopqrstuvwxyz"[(i * 7) % 26] for i in range(200))
    return [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "Tokenizers convert raw text into integer ids for neural networks.",
        "  leading spaces",
        "trailing spaces   ",
        "   both sides   ",
        " ",
        "a  b   c    d     e",
        "tabs\there\t\tand\tthere",
        "line one\nline two\n\n\nline five",
        "windows\r\nline\r\nendings\r\n",
        "\n\n\n",
        "  \n\t  \r\n  ",
        "mixed \t \n \r\n whitespace\u00a0nbsp\u3000ideographic",
        "12345",
        "3.14159 is roughly pi",
        "1,000,000 dollars and 0.5 cents",
        "2024-01-15T12:34:56Z 1234567890",
        "Phone: +1 (555) 123-4567",
        "!!!???...",
        "Wait... what?! (really) [yes] {no} <maybe> --- ***",
        "email@example.com https://example.org/path?q=1&r=2#frag",
        "don't",
        "I'LL be there, we've done it, she'd've, they're, it's, I'm, you'll",
        "DON'T SHOUT, IT'S RUDE",
        "'s 're 've at the start",
        "café naïve résumé",
        "Ångström",
        "e\u0301 vs \u00e9",
        "a\u0308\u0304",
        "ÀÉÎÕÜ àéîõü Ünïcödé",
        "東京は日本の首都です",
        "中文测试",
        "안녕하세요 세계",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "Привет, мир!",
        "Γειά σου Κόσμε",
        "👨\u200d👩\u200d👧",
        "🇫🇷 flag",
        "😀😀",
        "thumbs 👍🏽 up",
        "nul\x00char",
        "bell\x07char",
        "zero\u200bwidth",
        "\ufeffBOM at start",
        "soft\u00adhyphen and\u200djoiner",
        "Fullwidth ＡＢＣ１２３ and ligature ﬁ",
        "Roman Ⅻ, superscript x², fraction ½",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
        "hello<|endoftext|>world",
        "<|endoftext|>",
        "a <sep> b<sep>c",
        "[CLS] foo [SEP]",
        "[MASK] is [UNK] and [PAD]",
        "<s>bar</s>",
        "<unk> <pad> </s>",
        "<|begin_of_text|>Hi<|end_of_text|>",
        "<0x41> literal byte token text",
        "▁ already metaspace ▁▁x",
        "Ġ and Ċ byte-level chars",
        "##sub ##word",
        "",
        long_word,
        "Mixed: English, 日本語, العربية, हिन्दी, and 😀 emoji",
        "CamelCaseIdentifier snake_case_var kebab-case",
        "def f(x):\n    return x ** 2  # comment",
        "x",
    ]


PAIRS = [
    ("Hello world", "How are you?"),
    ("The quick brown fox.", "It jumps over the lazy dog!"),
    ("café naïve", "東京 12345"),
    ("  spaces  ", ""),
    ("[CLS] inside", "and [SEP] here"),
    ("don't stop", "we've 3.14159 things"),
]


# --------------------------------------------------------------------------- helpers
def bpe_vocab_merges(tok):
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
              for m in model["merges"]]
    return vocab, merges


def insert_byte_tokens(vocab, specials):
    """specials (ids 0..k-1), then <0x00>..<0xFF>, then the trained vocab."""
    items = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [t for t, _ in items[:len(specials)]] == list(specials), items[:len(specials)]
    out = {}
    for t in specials:
        out[t] = len(out)
    for t in BYTE_TOKENS:
        assert t not in vocab, t
        out[t] = len(out)
    for t, _ in items[len(specials):]:
        out[t] = len(out)
    return out


_PUA = 0xF0000  # continuation chars are mapped into plane 15 while training


def train_wordpiece(tok, lines, vocab_size, specials, min_frequency=2):
    """Deterministic equivalent of trainers.WordPieceTrainer.

    WordPieceTrainer is the BPE trainer run with a "##" continuing-subword prefix; it
    numbers the "##c" alphabet in hash-map order and breaks equal-count merge ties by
    those ids, so vocabularies differ from run to run. Here every non-initial char c
    of a word is replaced by chr(_PUA + ord(c)) so that "##c" becomes an ordinary
    alphabet char (sorted by code point, hence stable ids), plain BPE is trained on
    the words produced by tok's own normalizer + pre_tokenizer, and the result is
    mapped back ("x" + PUA(y) -> "xy", PUA(x) + PUA(y) -> "##xy")."""
    def word(w):
        assert all(ord(c) < 0xFFFE for c in w), w
        return w[0] + "".join(chr(_PUA + ord(c)) for c in w[1:])

    docs = []
    for line in lines:
        s = tok.normalizer.normalize_str(line) if tok.normalizer is not None else line
        docs.append(" ".join(word(w) for w, _ in tok.pre_tokenizer.pre_tokenize_str(s)))
    t0 = Tokenizer(models.BPE())
    t0.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  show_progress=False, special_tokens=specials)
    train(t0, docs, trainer)
    vocab, _ = bpe_vocab_merges(t0)
    out = {}
    for t, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if t in specials:
            out[t] = i
            continue
        cont = ord(t[0]) >= _PUA
        chars = [chr(ord(c) - _PUA) if ord(c) >= _PUA else c for c in t]
        assert all(ord(c) >= _PUA for c in t[1:]), t
        out[("##" if cont else "") + "".join(chars)] = i
    assert len(out) == len(vocab)
    model = models.WordPiece(vocab=out, unk_token="[UNK]", max_input_chars_per_word=100,
                             continuing_subword_prefix="##")
    new = Tokenizer(model)
    new.normalizer = tok.normalizer
    new.pre_tokenizer = tok.pre_tokenizer
    new.add_special_tokens(special(specials))
    return new


def canonical_unigram(tok, n_specials):
    """Make UnigramTrainer output reproducible. Its EM sums run in hash-map order, so
    scores differ in the last bits between runs: round them to float32 (as
    sentencepiece stores them). The required chars it appends at the end get
    penalised scores (min - k * 1e-4) in hash-set order: give those scores to the
    chars in code point order. Then sort by (-score, piece) after the specials."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    head = vocab[:n_specials]
    rest = [[p, struct.unpack("<f", struct.pack("<f", s))[0]] for p, s in vocab[n_specials:]]
    floor = min(s for p, s in rest if len(p) > 1)
    tail = [ps for ps in rest if ps[1] < floor]
    assert all(len(p) == 1 for p, _ in tail), tail
    rest = [ps for ps in rest if ps[1] >= floor]
    rest += [[p, s] for p, s in zip(sorted(p for p, _ in tail),
                                     sorted((s for _, s in tail), reverse=True))]
    rest.sort(key=lambda ps: (-ps[1], ps[0]))
    data["model"]["vocab"] = head + rest
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def special(tokens):
    return [AddedToken(t, special=True, normalized=False) for t in tokens]


def train(tok, lines, trainer):
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    return tok


# --------------------------------------------------------------------------- builders
def build_gpt2_bpe(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train(tok, lines, trainer)
    tok.add_tokens(["<sep>"])  # non-special added token
    cfg = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
               unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    return tok, cfg, "<|endoftext|>"


def build_llama2_bpe(lines):
    specials = ["<unk>", "<s>", "</s>"]
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Train with a temporary word splitter on "▁" (like sentencepiece's
    # split_by_whitespace) so no merge spans words; the final tokenizer has no
    # pre_tokenizer, as LLaMA-2's converted tokenizer.json.
    t0 = Tokenizer(models.BPE(unk_token="<unk>"))
    t0.normalizer = norm
    t0.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never",
                                                split=True)
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  special_tokens=specials)
    train(t0, lines, trainer)
    vocab, merges = bpe_vocab_merges(t0)
    vocab = insert_byte_tokens(vocab, specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.add_special_tokens(special(specials))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1,
                                                                     right=0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B",
        special_tokens=[("<s>", vocab["<s>"])])
    cfg = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>",
               add_bos_token=True, add_eos_token=False, legacy=True)
    return tok, cfg, "<unk>"


def build_metaspace_bpe(lines):
    specials = ["<unk>", "<s>", "</s>"]
    t0 = Tokenizer(models.BPE(unk_token="<unk>"))
    t0.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                split=True)
    trainer = trainers.BpeTrainer(vocab_size=1500, min_frequency=2, show_progress=False,
                                  special_tokens=specials)
    train(t0, lines, trainer)
    vocab, merges = bpe_vocab_merges(t0)
    vocab = insert_byte_tokens(vocab, specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                               byte_fallback=True))
    tok.add_special_tokens(special(specials))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=True)
    # No Fuse before Metaspace: the Metaspace decoder drops *every* "▁" of token 0
    # (not just a leading one), so fusing first would delete all spaces.
    tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                     decoders.Metaspace(replacement="▁",
                                                        prepend_scheme="first", split=True)])
    cfg = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    return tok, cfg, "<unk>"


def _bert_post(tok):
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                        ("[SEP]", tok.token_to_id("[SEP]"))])


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_CFG = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                mask_token="[MASK]")


def build_bert_wordpiece(lines):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = train_wordpiece(tok, lines, 3000, BERT_SPECIALS)
    tok.post_processor = _bert_post(tok)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    cfg = dict(BERT_CFG, do_lower_case=True)
    return tok, cfg, "[PAD]"


def build_bert_cased_digits(lines):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok = train_wordpiece(tok, lines, 2000, BERT_SPECIALS)
    tok.post_processor = _bert_post(tok)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    cfg = dict(BERT_CFG, do_lower_case=False)
    return tok, cfg, "[PAD]"


def build_t5_unigram(lines):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    trainer = trainers.UnigramTrainer(vocab_size=2000, show_progress=False,
                                      special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", max_piece_length=16,
                                      n_sub_iterations=2, shrinking_factor=0.75)
    train(tok, lines, trainer)
    tok = canonical_unigram(tok, 3)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>",
        special_tokens=[("</s>", tok.token_to_id("</s>"))])
    cfg = dict(eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    return tok, cfg, "<pad>"


def proto_field(data, number):
    """The bytes of length-delimited field `number` of a protobuf message (wire format)."""
    i = 0

    def varint():
        nonlocal i
        value = shift = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(data):
        key = varint()
        wire = key & 7
        if wire == 0:
            varint()
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n = varint()
            if key >> 3 == number:
                return data[i:i + n]
            i += n
        else:
            raise ValueError("unexpected wire type %d" % wire)
    raise KeyError(number)


def nmt_nfkc_charsmap(lines):
    """SentencePiece's nmt_nfkc rules as its models embed them (the precompiled_charsmap
    that T5, XLM-R, mBART, ... tokenizer.json files carry): from a throwaway model the
    sentencepiece trainer writes, ModelProto.normalizer_spec (3).precompiled_charsmap (2)."""
    import io
    import sentencepiece
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines[:3000]), model_writer=buf, vocab_size=200, model_type="unigram",
        normalization_rule_name="nmt_nfkc", minloglevel=2, num_threads=1)
    return proto_field(proto_field(buf.getvalue(), 3), 2)


def build_t5_precompiled(lines):
    """t5_unigram with the normalizer real SentencePiece conversions carry (transformers'
    SpmConverter): Precompiled(nmt_nfkc), then runs of spaces to one."""
    tok, cfg, pad = build_t5_unigram(lines)
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(nmt_nfkc_charsmap(lines)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    return tok, cfg, pad


# Texts for the Precompiled normalizer beyond the shared ones: graphemes of 6 bytes or more
# (looked up char by char), replacements longer and shorter than their source, and
# characters its rules delete.
PRECOMPILED_TEXTS = [
    "ｶﾞｷﾞｸﾞ half-width katakana with voiced marks",
    "㍿ ㌔ ㎏ squared words",
    "①②③ ⑴ ⒜ enclosed",
    "… ‥ “quotes” ‘single’ «guillemets»",
    "ℌℑℜ ℵ ™ ℃ №",
    "Å Ω K (signs) Å Ω K",
    "각 conjoining jamo, 각 composed",
    "á̂̃̄ stacked marks",
    "x‌‍y⁠z­!",
    "tabvtffnel ls ps",
    "ﬀﬁﬂﬃﬄ ligatures ﬅﬆ",
    "ＡＢＣ！？ full width ｡｢｣",
    "🏳️‍🌈 and 👩🏽‍💻 long clusters",
]


def build_llama3_split(lines):
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=2500, min_frequency=2, show_progress=False,
                                  special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train(tok, lines, trainer)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
            special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    cfg = dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
               pad_token="<|end_of_text|>")
    return tok, cfg, "<|end_of_text|>"


def build_wordlevel(lines):
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                        special_tokens=["[UNK]", "[PAD]"])
    train(tok, lines, trainer)
    return tok, dict(unk_token="[UNK]", pad_token="[PAD]"), "[PAD]"


BUILDERS = [
    ("gpt2_bpe", build_gpt2_bpe),
    ("llama2_bpe", build_llama2_bpe),
    ("metaspace_bpe", build_metaspace_bpe),
    ("bert_wordpiece", build_bert_wordpiece),
    ("t5_unigram", build_t5_unigram),
    ("t5_precompiled", build_t5_precompiled),
    ("llama3_split", build_llama3_split),
    ("bert_cased_digits", build_bert_cased_digits),
    ("wordlevel", build_wordlevel),
]


# --------------------------------------------------------------------------- references
def byte_offsets(text, offsets):
    """tokenizers gives char offsets in Python; convert to UTF-8 byte offsets."""
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8")))
    return [[pos[s], pos[e]] for s, e in offsets]


def enc_offsets(enc, texts):
    """Byte offsets; each token's offsets are relative to the sequence it came from."""
    seq = enc.sequence_ids
    out = []
    for i, (s, e) in enumerate(enc.offsets):
        sid = seq[i]
        if sid is None:
            out.append([s, e] if (s, e) == (0, 0) else byte_offsets(texts[0], [(s, e)])[0])
        else:
            out.append(byte_offsets(texts[sid], [(s, e)])[0])
    return out


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def write_expected(tok, texts, out_dir):
    with open(os.path.join(out_dir, "expected.jsonl"), "w", encoding="utf-8") as f:
        for text in texts:
            enc = tok.encode(text)
            rec = {
                "text": text,
                "ids": enc.ids,
                "tokens": enc.tokens,
                "type_ids": enc.type_ids,
                "offsets": enc_offsets(enc, [text]),
                "special_tokens_mask": enc.special_tokens_mask,
                "attention_mask": enc.attention_mask,
                "ids_no_special": tok.encode(text, add_special_tokens=False).ids,
                "decoded": tok.decode(enc.ids, skip_special_tokens=False),
                "decoded_skip": tok.decode(enc.ids, skip_special_tokens=True),
            }
            f.write(dumps(rec) + "\n")


def write_pairs(tok, out_dir):
    with open(os.path.join(out_dir, "expected_pairs.jsonl"), "w", encoding="utf-8") as f:
        for a, b in PAIRS:
            enc = tok.encode(a, b)
            rec = {
                "a": a,
                "b": b,
                "ids": enc.ids,
                "tokens": enc.tokens,
                "type_ids": enc.type_ids,
                "sequence_ids": enc.sequence_ids,
                "special_tokens_mask": enc.special_tokens_mask,
                "attention_mask": enc.attention_mask,
                "offsets": enc_offsets(enc, [a, b]),
                "decoded": tok.decode(enc.ids, skip_special_tokens=False),
                "decoded_skip": tok.decode(enc.ids, skip_special_tokens=True),
            }
            f.write(dumps(rec) + "\n")


def write_batch(tok, texts, pad_token, out_dir):
    t = Tokenizer.from_str(tok.to_str())
    pad_id = t.token_to_id(pad_token)
    t.enable_padding(direction="right", pad_id=pad_id, pad_type_id=0, pad_token=pad_token,
                     length=None, pad_to_multiple_of=None)
    t.enable_truncation(max_length=16, stride=0, strategy="longest_first", direction="right")
    batch = texts[:8]
    encs = t.encode_batch(batch)
    rec = {
        "padding": t.padding,
        "truncation": t.truncation,
        "texts": batch,
        "ids": [e.ids for e in encs],
        "tokens": [e.tokens for e in encs],
        "attention_mask": [e.attention_mask for e in encs],
        "type_ids": [e.type_ids for e in encs],
        "special_tokens_mask": [e.special_tokens_mask for e in encs],
        "offsets": [enc_offsets(e, [x]) for e, x in zip(encs, batch)],
    }
    with open(os.path.join(out_dir, "expected_batch.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False, indent=1) + "\n")


def write_config(cfg, out_dir):
    full = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
            "clean_up_tokenization_spaces": False}
    full.update(cfg)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(full, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_root = sys.argv[1]
    t_start = time.time()
    os.makedirs(out_root, exist_ok=True)
    lines = corpus_lines()
    texts = held_out_texts()
    corpus_set = set(lines)
    assert not any(t in corpus_set for t in texts if t.strip()), "held-out text in corpus"
    with open(os.path.join(out_root, "texts.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(texts, ensure_ascii=False, indent=1) + "\n")
    print("corpus: %d lines, %d bytes (bible %s + fortunes %s)" % (
        len(lines), sum(len(x.encode()) + 1 for x in lines), BIBLE_DATA,
        ",".join(os.path.join(FORTUNE_DIR, n) for n in FORTUNE_FILES)))
    print("%-18s %7s %6s %7s" % ("tokenizer", "vocab", "texts", "secs"))
    for name, build in BUILDERS:
        t0 = time.time()
        tok, cfg, pad_token = build(lines)
        out_dir = os.path.join(out_root, name)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=True)
        # Reload so references come from exactly what was written.
        tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
        write_config(cfg, out_dir)
        write_expected(tok, texts + (PRECOMPILED_TEXTS if name == "t5_precompiled" else []), out_dir)
        write_pairs(tok, out_dir)
        write_batch(tok, texts, pad_token, out_dir)
        print("%-18s %7d %6d %7.2f" % (name, tok.get_vocab_size(with_added_tokens=True),
                                       len(texts), time.time() - t0))
    print("total %.2f s -> %s" % (time.time() - t_start, out_root))


if __name__ == "__main__":
    main()
