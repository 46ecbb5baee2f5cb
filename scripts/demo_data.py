"""Demo data from Debian packages: King James Bible verses vs. fortune-cookie sayings.

Writes OUT_DIR/{train,eval}.jsonl with {"text", "label"} lines (0 = bible, 1 = fortune),
balanced and shuffled with a fixed seed. Used by scripts/demo.sh only.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
from make_tokenizers import bible_lines, fortune_lines  # noqa: E402


def main():
    out, n_train, n_eval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(1)
    bible = [l for l in bible_lines() if 30 <= len(l) <= 200]
    fortune = [l for l in fortune_lines() if 30 <= len(l) <= 200]
    rng.shuffle(bible)
    rng.shuffle(fortune)
    half = (n_train + n_eval) // 2
    rows = [{"text": t, "label": 0} for t in bible[:half]] + [{"text": t, "label": 1} for t in fortune[:half]]
    rng.shuffle(rows)
    os.makedirs(out, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("eval", rows[n_train:n_train + n_eval])):
        with open(os.path.join(out, name + ".jsonl"), "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
    print(f"{n_train} training and {n_eval} evaluation examples in {out}")


if __name__ == "__main__":
    main()
