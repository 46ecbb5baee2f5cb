#!/usr/bin/env python
"""Single-threaded tokenizer throughput: HF ``tokenizers`` vs. our ``bench_tokenizer``.

Usage:
  python bench/tokenizer_bench.py --peft build/bench_tokenizer --tokenizers-dir OUT_DIR [--mb 4]
         [--repeat 3] [--names gpt2_bpe,llama2_bpe,...] [--keep-corpus FILE] [--marian DIR ...]

OUT_DIR is what tests/parity/make_tokenizers.py wrote (OUT_DIR/<name>/tokenizer.json).
--marian DIR (repeatable): a MarianTokenizer folder (source.spm, vocab.json; e.g. what
tests/parity/check_marian.py writes to build/parity_marian/shared), measured against
transformers' MarianTokenizer (Python over the sentencepiece library: there is no
tokenizers version of it) with a loop of tok(line)["input_ids"].

Corpus: King James Bible verses (``bible -f`` from packages bible-kjv / bible-kjv-text)
and fortunes (/usr/share/games/fortunes from fortunes-min, one fortune per line), cycled
in a fixed order until it holds at least --mb * 1e6 bytes. It is written to a temp
file, one document per line ('\\n'-terminated, no empty lines).

Measured, best of --repeat runs, all single-threaded:
  HF:   Tokenizer.from_file(...).encode_batch(lines) and a plain loop of .encode(line)
        (RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false are set before tokenizers
        is imported); the faster of the two is reported.
  ours: build/bench_tokenizer TOKENIZER_DIR CORPUS_FILE N
        which must print one JSON line {"bytes": N, "seconds": S, "tokens": T}
        (best of the repeats) with the same conventions as here:
          bytes  = sum of UTF-8 bytes of the lines, newlines excluded
          tokens = sum over lines of len(ids) of encode(line) with special tokens
                   added (Tokenizer.encode's default add_special_tokens=True)
MB/s = bytes / 1e6 / seconds. Token counts of both must be equal; a mismatch is
flagged. Always exits 0.
"""

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402

DEFAULT_NAMES = ["gpt2_bpe", "llama2_bpe", "bert_wordpiece", "t5_unigram", "t5_precompiled"]
BIBLE_BIN = "/usr/bin/bible"
FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_FILES = ("fortunes", "literature", "riddles")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_VERSE_REF = re.compile(r"^[1-3]?[A-Za-z]+\d+:\d+ ")


def bible_docs():
    if not os.path.exists(BIBLE_BIN):
        sys.exit("bible not found: apt-get install -y bible-kjv-text")
    raw = subprocess.run([BIBLE_BIN, "-f", "Gen1:1-Rev22:21"], check=True,
                         capture_output=True, cwd="/").stdout.decode("utf-8")
    docs = (_VERSE_REF.sub("", line).strip() for line in raw.splitlines())
    return [d for d in docs if d]


def fortune_docs():
    docs = []
    for name in FORTUNE_FILES:
        path = os.path.join(FORTUNE_DIR, name)
        if not os.path.exists(path):
            sys.exit("fortunes not found: apt-get install -y fortunes-min (needs %s)" % path)
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        for chunk in re.split(r"^%\s*$", text, flags=re.M):
            doc = " ".join(_CTRL.sub("", line).strip() for line in chunk.splitlines())
            if doc:
                docs.append(doc)
    return docs


def build_corpus(mb):
    """Interleave one fortune after every ~30 verses, cycle until >= mb * 1e6 bytes."""
    bible, fortunes = bible_docs(), fortune_docs()
    step = max(1, len(bible) // max(1, len(fortunes)))
    base = []
    fi = 0
    for i, verse in enumerate(bible):
        base.append(verse)
        if i % step == step - 1 and fi < len(fortunes):
            base.append(fortunes[fi])
            fi += 1
    base.extend(fortunes[fi:])
    target = int(mb * 1e6)
    lines, nbytes, i = [], 0, 0
    while nbytes < target:
        line = base[i % len(base)]
        lines.append(line)
        nbytes += len(line.encode("utf-8"))
        i += 1
    return lines, nbytes


def best_of(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_hf(path, lines, repeat):
    tok = Tokenizer.from_file(path)

    def batch():
        return sum(len(e.ids) for e in tok.encode_batch(lines))

    def loop():
        n = 0
        enc = tok.encode
        for line in lines:
            n += len(enc(line).ids)
        return n

    tb, nb = best_of(batch, repeat)
    tl, nl = best_of(loop, repeat)
    if nb != nl:
        print("  warning: HF encode_batch gives %d tokens, encode loop %d" % (nb, nl))
    return (tb, nb, "batch") if tb <= tl else (tl, nl, "loop")


def bench_marian(tok_dir, lines, repeat):
    from transformers import MarianTokenizer
    tok = MarianTokenizer.from_pretrained(tok_dir)

    def loop():
        return sum(len(tok(line)["input_ids"]) for line in lines)

    secs, n = best_of(loop, repeat)
    return secs, n, "MarianTokenizer"


def run_ours(peft, tok_dir, corpus, repeat):
    """Returns (dict, None) or (None, reason)."""
    if not peft or not os.path.isfile(peft) or not os.access(peft, os.X_OK):
        return None, "binary not found"
    cmd = [peft, tok_dir, corpus, str(repeat)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if p.returncode != 0:
        msg = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()] or [""]
        return None, "exit %d: %s" % (p.returncode, msg[0].strip()[:200])
    for line in reversed(p.stdout.strip().splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and {"bytes", "seconds", "tokens"} <= rec.keys():
            return rec, None
    return None, "no JSON result line in output"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peft", default="", help="path to build/bench_tokenizer")
    ap.add_argument("--tokenizers-dir", required=True,
                    help="output dir of tests/parity/make_tokenizers.py")
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB (1e6 bytes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--names", default=",".join(DEFAULT_NAMES))
    ap.add_argument("--keep-corpus", default="", help="also write the corpus to this file")
    ap.add_argument("--marian", action="append", default=[], help="a MarianTokenizer folder (repeatable)")
    args = ap.parse_args()

    lines, nbytes = build_corpus(args.mb)
    fd, corpus = tempfile.mkstemp(prefix="tokbench_", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    if args.keep_corpus:
        with open(args.keep_corpus, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)
    print("corpus: %d lines, %d bytes (%.2f MB), file %s" % (
        len(lines), nbytes, nbytes / 1e6, args.keep_corpus or corpus))
    peft_ok = bool(args.peft) and os.path.isfile(args.peft) and os.access(args.peft, os.X_OK)
    if not peft_ok:
        print("peft: not available (%s)" % (args.peft or "no --peft given"))

    rows = []
    try:
        jobs = [(n, os.path.join(args.tokenizers_dir, n)) for n in args.names.split(",") if n]
        jobs += [("marian_" + os.path.basename(os.path.normpath(d)), d) for d in args.marian]
        for name, tok_dir in jobs:
            path = os.path.join(tok_dir, "tokenizer.json")
            marian = os.path.exists(os.path.join(tok_dir, "source.spm")) and not os.path.exists(path)
            if not marian and not os.path.exists(path):
                print("%s: %s missing (run tests/parity/make_tokenizers.py)" % (name, path))
                continue
            secs, ntok, how = bench_marian(tok_dir, lines, args.repeat) if marian else bench_hf(path, lines, args.repeat)
            hf = nbytes / 1e6 / secs
            ours, why = (None, "binary not found")
            if peft_ok:
                ours, why = run_ours(args.peft, tok_dir, corpus, args.repeat)
                if ours is None:
                    print("peft: not available for %s (%s)" % (name, why))
            rows.append((name, hf, how, ntok, ours))
            print("  %s: HF %.2f MB/s (%s)" % (name, hf, how), flush=True)
    finally:
        os.unlink(corpus)

    print()
    print("%-16s %12s %10s %8s %12s %12s  %s" % (
        "tokenizer", "HF MB/s", "ours MB/s", "ours/HF", "HF tokens", "ours tokens", "check"))
    for name, hf, how, ntok, ours in rows:
        if ours is None:
            print("%-16s %8.2f (%s) %10s %8s %12d %12s  %s" % (
                name, hf, how[0], "-", "-", ntok, "-", "peft: not available"))
            continue
        mbs = ours["bytes"] / 1e6 / ours["seconds"] if ours["seconds"] > 0 else float("inf")
        flags = []
        if ours["tokens"] != ntok:
            flags.append("TOKEN COUNT MISMATCH")
        if ours["bytes"] != nbytes:
            flags.append("bytes %d != %d" % (ours["bytes"], nbytes))
        print("%-16s %8.2f (%s) %10.2f %8.2f %12d %12d  %s" % (
            name, hf, how[0], mbs, mbs / hf, ntok, ours["tokens"],
            ", ".join(flags) or "ok"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
