#!/usr/bin/env python
"""MarianTokenizer folders (source.spm, target.spm, vocab.json) through `peft tokenize`
and transformers' MarianTokenizer (which calls the sentencepiece library): ids of every
text and text of every id list must be equal.

Usage: python tests/parity/check_marian.py PEFT_CLI OUT_DIR [COUNT]

Builds five folders in OUT_DIR from two Unigram models trained here with sentencepiece on
disjoint halves of Debian's fortunes (character coverage 0.98, so some chars are unknown):
  shared    one vocab.json for both sides: the pieces of both models less a few dropped
            ones (which then encode as <unk>), language codes >>fra<< and >>deu<<, and a
            user-defined symbol "@@" in the source model;
  separate  separate_vocabs, target_vocab.json (decoding uses the target model);
  bytes     a source model with byte fallback (unknown chars become <0xXX> pieces);
  raw       a source model that keeps whitespace (no dummy prefix, no removal of extra
            spaces);
  suffix    a source model with treat_whitespace_as_suffix.
Each text is encoded as input and as target (text_target=). Texts: COUNT random strings of the Unicode blocks check_tokenizer_random.py uses (with
runs of spaces, tabs, U+3000 and NBSP added), fortune lines the models did not see, and
cases for language codes, added tokens and whitespace. Decoding: random id lists mixing
vocabulary ids, ids only SentencePiece knows and the special tokens, with and without
skip_special_tokens.
"""
import json
import os
import random
import subprocess
import sys

import sentencepiece as spm
from transformers import MarianTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_tokenizer_random import POOLS  # noqa: E402
from make_tokenizers import fortune_lines  # noqa: E402

STRUCTURED = [
    "", " ", "   ", "\t\n", "\u3000", "a\u00a0\u00a0b", "  a \t\u3000 b  ", ">>fra<< Hello", ">>fra<<Hello",
    " >>fra<< Hello", ">>fra<<>>deu<< a", ">>xx<< a", ">>x y<<z", ">> no end", "<<>>", ">><<", "Hi </s> >>fra<< yo",
    "a<unk>b <pad>", "</s></s>", "<s> x", "x@@y", "x@@@@y", "@@", "A\u0301 \ufb01\u0301 \u2474\u0308", "\u20ac\u20acxy",
    "Hello  world, it's", "trailing \u200b", "tab\tend\t", "new\nline\n", "x\x00y", "caf\u00e9 na\u00efve",
]


def train(prefix, lines, **extra):
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=600,
                                   model_type="unigram", character_coverage=0.98, minloglevel=2, num_threads=1,
                                   **extra)
    os.replace(prefix + ".model", prefix + ".spm")


def pieces_of(vocab_file):
    return [line.split("\t")[0] for line in open(vocab_file, encoding="utf-8")]


def marian_vocab(piece_lists, codes=(), drop=()):
    voc = {"</s>": 0, "<unk>": 1}
    for pieces in piece_lists:
        for p in pieces:
            if p not in ("<s>", "</s>", "<unk>"):
                voc.setdefault(p, len(voc))
    for c in codes:
        voc.setdefault(c, len(voc))
    for p in drop:
        voc.pop(p, None)
    voc = {k: i for i, k in enumerate(voc)}
    voc["<pad>"] = len(voc)
    return voc


def write_folder(d, source_prefix, target_prefix, separate=False):
    os.makedirs(d, exist_ok=True)
    for side, prefix in (("source", source_prefix), ("target", target_prefix)):
        with open(prefix + ".spm", "rb") as f, open(os.path.join(d, side + ".spm"), "wb") as g:
            g.write(f.read())
    src, tgt = pieces_of(source_prefix + ".vocab"), pieces_of(target_prefix + ".vocab")
    if separate:
        json.dump(marian_vocab([src], codes=[">>fra<<"]), open(os.path.join(d, "vocab.json"), "w"), ensure_ascii=False)
        json.dump(marian_vocab([tgt], drop=tgt[40:43]), open(os.path.join(d, "target_vocab.json"), "w"),
                  ensure_ascii=False)
    else:
        json.dump(marian_vocab([src, tgt], codes=[">>fra<<", ">>deu<<"], drop=src[50:55]),
                  open(os.path.join(d, "vocab.json"), "w"), ensure_ascii=False, indent=1)
    json.dump({"source_lang": "en", "target_lang": "fr", "separate_vocabs": separate},
              open(os.path.join(d, "tokenizer_config.json"), "w"))


def make_folders(out):
    lines = fortune_lines()
    random.Random(0).shuffle(lines)
    held_out, rest = lines[:300], lines[300:]
    half = len(rest) // 2
    src_lines, tgt_lines = rest[:half], rest[half:]
    m = os.path.join(out, "models")
    os.makedirs(m, exist_ok=True)
    train(m + "/src", src_lines, user_defined_symbols=["@@"])
    train(m + "/tgt", tgt_lines)
    train(m + "/bytes", src_lines, byte_fallback=True)
    train(m + "/raw", src_lines, add_dummy_prefix=False, remove_extra_whitespaces=False)
    train(m + "/suffix", src_lines, treat_whitespace_as_suffix=True)
    folders = {"shared": (m + "/src", m + "/tgt", False), "separate": (m + "/src", m + "/tgt", True),
               "bytes": (m + "/bytes", m + "/tgt", False), "raw": (m + "/raw", m + "/tgt", False),
               "suffix": (m + "/suffix", m + "/tgt", False)}
    for name, (s, t, sep) in folders.items():
        write_folder(os.path.join(out, name), s, t, sep)
    return list(folders), held_out


def run_cli(cli, d, lines, *flags):
    out = subprocess.run([cli, "tokenize", d, *flags], input="".join(lines).encode(), capture_output=True)
    if out.returncode != 0:
        sys.exit("peft tokenize %s failed: %s" % (d, out.stderr.decode()[-2000:]))
    return [json.loads(l) for l in out.stdout.decode().splitlines()]


def main():
    cli, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    names, held_out = make_folders(out)
    rng = random.Random(0)
    pools = POOLS + [[0x20, 0x20, 0x09, 0x3000, 0xA0, 0x40]]
    texts = STRUCTURED + held_out + ["".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(1, 14)))
                                     for _ in range(count)]
    failed = 0
    for name in names:
        d = os.path.join(out, name)
        tok = MarianTokenizer.from_pretrained(d)
        lines = [json.dumps({"text": t}) + "\n" for t in texts]
        got = run_cli(cli, d, lines, "--jsonl")
        differ = [(t, g["ids"], tok(t)["input_ids"]) for t, g in zip(texts, got) if g["ids"] != tok(t)["input_ids"]]
        # Targets (text_target=): target.spm, and target_vocab.json with separate vocabularies.
        got = run_cli(cli, d, lines, "--jsonl", "--target")
        differ += [(t, g["ids"], tok(text_target=t)["input_ids"]) for t, g in zip(texts, got)
                   if g["ids"] != tok(text_target=t)["input_ids"]]
        # Decoding: ids of the vocabulary, ids past it that only SentencePiece has, specials.
        known = sorted(set(tok.decoder))
        spm_size = tok.spm_target.get_piece_size() if tok.separate_vocabs else tok.spm_source.get_piece_size()
        extra = [i for i in range(spm_size) if i not in tok.decoder]
        specials = [tok.eos_token_id, tok.unk_token_id, tok.pad_token_id]
        id_lists = [[rng.choice(known if rng.random() < 0.85 or not extra else extra) if rng.random() < 0.9
                     else rng.choice(specials) for _ in range(rng.randint(0, 12))] for _ in range(count // 3)]
        id_lines = [json.dumps({"ids": ids}) + "\n" for ids in id_lists]
        for skip in (False, True):
            flags = ["--decode"] + (["--skip-special"] if skip else [])
            dec = run_cli(cli, d, id_lines, *flags)
            differ += [(ids, g["text"], tok.decode(ids, skip_special_tokens=skip)) for ids, g in zip(id_lists, dec)
                       if g["text"] != tok.decode(ids, skip_special_tokens=skip)]
        print("%s: %d texts x 2 (input, target), %d id lists x 2: %d differences" %
              (name, len(texts), len(id_lists), len(differ)))
        for case in differ[:5]:
            print("  input %r\n    ours %r\n    HF   %r" % case)
        failed += len(differ)
    failed += check_bad_input(cli, os.path.join(out, "shared"), os.path.join(out, "bad"))
    failed += check_generate(cli, os.path.join(out, "shared"), held_out[:6] + [">>fra<< Hello there", "x@@y"])
    sys.exit(1 if failed else 0)


def check_generate(cli, d, prompts):
    """`peft generate --prompt` on a tiny random MarianMTModel saved into the folder: the
    same completion text as transformers' generate + MarianTokenizer.decode."""
    import torch
    from transformers import MarianConfig, MarianMTModel
    tok = MarianTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=len(tok.encoder), d_model=32, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=128, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=tok.eos_token_id)
    model = MarianMTModel(cfg).eval()
    model.save_pretrained(d)
    args = [cli, "generate", d, "--max-new-tokens", "12", "--num-beams", "1", "--repetition-penalty", "3.0"]
    for p in prompts:
        args += ["--prompt", p]
    out = subprocess.run(args, capture_output=True)
    if out.returncode != 0:
        print("generate failed: %s" % out.stderr.decode()[-1000:])
        return 1
    got = [json.loads(l)["completion"] for l in out.stdout.decode().splitlines()]
    bad = 0
    for p, g in zip(prompts, got):
        with torch.no_grad():
            ids = model.generate(**tok(p, return_tensors="pt"), max_new_tokens=12, num_beams=1, do_sample=False,
                                 repetition_penalty=3.0)
        want = tok.decode(ids[0], skip_special_tokens=True)
        if g != want:
            print("generate %r: ours %r, transformers %r" % (p, g, want))
            bad += 1
    print("generate: %d prompts, %d differ" % (len(prompts), bad))
    return bad + (len(got) != len(prompts))


def check_bad_input(cli, good, scratch):
    """Broken folders: `peft tokenize` fails with one line naming the file."""
    import shutil
    spm_bytes = open(os.path.join(good, "source.spm"), "rb").read()
    vocab = json.load(open(os.path.join(good, "vocab.json")))
    cases = {
        "truncated source.spm": ("source.spm", spm_bytes[: len(spm_bytes) // 2]),
        "source.spm not a model": ("source.spm", b"\xff" * 64),
        "BPE model": ("source.spm", spm_bytes + bytes([0x12, 0x02, 0x18, 0x02])),  # trainer_spec.model_type = BPE
        "vocab.json without <unk>": ("vocab.json", json.dumps({k: v for k, v in vocab.items() if k != "<unk>"})),
        "vocab.json id not an integer": ("vocab.json", json.dumps(dict(vocab, **{"<pad>": "x"}))),
        "vocab.json not an object": ("vocab.json", "[1, 2]"),
        "eos not in the vocabulary": ("tokenizer_config.json", json.dumps({"eos_token": "<eos>"})),
        "separate_vocabs not a boolean": ("tokenizer_config.json", json.dumps({"separate_vocabs": "yes"})),
        "clean_up_tokenization_spaces not a boolean": ("tokenizer_config.json",
                                                       json.dumps({"clean_up_tokenization_spaces": 1})),
    }
    bad = 0
    for name, (file, content) in cases.items():
        d = os.path.join(scratch, name.replace(" ", "_").replace("<", "").replace(">", ""))
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        with open(os.path.join(d, file), "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        p = subprocess.run([cli, "tokenize", d, "--text", "hello"], capture_output=True)
        err = p.stderr.decode().strip()
        ok = p.returncode not in (0,) and p.returncode < 128 and len(err.splitlines()) == 1 and file in err
        print("bad input, %s: %s" % (name, "ok" if ok else "NOT ok (exit %d) %r" % (p.returncode, err[-300:])))
        bad += not ok
    return bad


if __name__ == "__main__":
    main()
