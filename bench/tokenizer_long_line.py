"""Time and memory of tokenizing one long line, ours (`peft tokenize --jsonl`) beside HF
`tokenizers`, on the flagship's tokenizer (SmolLM2's byte-level BPE, 49,152 tokens).

    python bench/tokenizer_long_line.py --peft build/peft --tokenizer DIR [--mb 1 10 50]

DIR holds tokenizer.json (e.g. `peft convert`'s folder). The text is KJV words (Debian's
bible-kjv-text) joined by spaces into one line of the given size. Each run is its own
process; peak RSS from wait4 (the child alone). "extra" is the peak minus the same process's peak on
an empty input, per input byte. Ids are checked equal.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
from make_tokenizers import bible_lines  # noqa: E402

HF = r"""
import json, sys, os
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
text = json.loads(open(sys.argv[2]).read())["text"]
ids = tok.encode(text).ids if text else []
open(sys.argv[3], "w").write(json.dumps(ids))
"""


def run(cmd, stdin=None):
    """Wall time, the child's own peak RSS (wait4), and its stdout."""
    t0 = time.time()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            sys.exit(f"{cmd[0]} failed with {p.returncode}")
        out.seek(0)
        return time.time() - t0, usage.ru_maxrss * 1024, out.read()


def text_of(mb, words):
    rng = random.Random(mb)
    out, size = [], 0
    while size < mb * 1024 * 1024:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[: mb * 1024 * 1024]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--mb", type=int, nargs="+", default=[1, 10, 50])
    a = ap.parse_args()
    words = " ".join(bible_lines()).split()
    tmp = tempfile.mkdtemp()
    tok_json = os.path.join(a.tokenizer, "tokenizer.json")
    rows = []
    for mb in [0] + a.mb:
        src = os.path.join(tmp, f"line_{mb}.jsonl")
        with open(src, "w") as f:
            f.write(json.dumps({"text": text_of(mb, words) if mb else ""}) + "\n")
        with open(src) as f:
            t_ours, rss_ours, out = run([a.peft, "tokenize", a.tokenizer, "--jsonl", "--no-special"], stdin=f)
        ours = json.loads(out)["ids"]
        hf_out = os.path.join(tmp, "hf.json")
        t_hf, rss_hf, _ = run([sys.executable, "-c", HF, tok_json, src, hf_out])
        theirs = json.load(open(hf_out))
        if ours != theirs:
            sys.exit(f"{mb} MB: ids differ ({len(ours)} vs {len(theirs)} tokens)")
        rows.append((mb, len(ours), t_ours, rss_ours, t_hf, rss_hf))
    base_ours, base_hf = rows[0][3], rows[0][5]
    print("| line | tokens | ours s | HF s | ours peak RSS | HF peak RSS | ours extra B/byte | HF extra B/byte |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mb, n, t_o, r_o, t_h, r_h in rows[1:]:
        b = mb * 1024 * 1024
        print(f"| {mb} MB | {n:,} | {t_o:.2f} | {t_h:.2f} | {r_o / 2**20:,.0f} MiB | {r_h / 2**20:,.0f} MiB | "
              f"{(r_o - base_ours) / b:.0f} | {(r_h - base_hf) / b:.0f} |")
    print(f"(empty input: ours {base_ours / 2**20:,.0f} MiB, HF {base_hf / 2**20:,.0f} MiB)")


if __name__ == "__main__":
    main()
