"""Two-domain data for the MoLE experiment (scripts/mole_experiment.sh): King James Bible
verses (Debian's bible-kjv-text) and fortune-cookie lines (fortunes-min).

Writes OUT_DIR/{bible,fortunes,mixed}_{train,eval}.jsonl as {"text": ...} lines; the
mixed sets are the union of the two domains' sets, shuffled with a fixed seed.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
from make_tokenizers import bible_lines, fortune_lines  # noqa: E402


def write(path, rows):
    with open(path, "w") as f:
        for t in rows:
            f.write(json.dumps({"text": t}) + "\n")


def main():
    out, n_train, n_eval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(15)
    domains = {"bible": [l for l in bible_lines() if 40 <= len(l) <= 160],
               "fortunes": [l for l in fortune_lines() if 40 <= len(l) <= 160]}
    os.makedirs(out, exist_ok=True)
    mixed = {"train": [], "eval": []}
    for name, lines in domains.items():
        rng.shuffle(lines)
        parts = {"train": lines[:n_train], "eval": lines[n_train:n_train + n_eval]}
        for split, rows in parts.items():
            write(os.path.join(out, f"{name}_{split}.jsonl"), rows)
            mixed[split] += rows
    for split, rows in mixed.items():
        rng.shuffle(rows)
        write(os.path.join(out, f"mixed_{split}.jsonl"), rows)
    print(f"{n_train} training and {n_eval} evaluation lines per domain in {out}")


if __name__ == "__main__":
    main()
