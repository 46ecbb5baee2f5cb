#!/usr/bin/env python
"""Random Unicode text through `peft tokenize --jsonl` and HF `tokenizers`: ids and byte
offsets must be equal on every string.

Usage: python tests/parity/check_tokenizer_random.py PEFT_CLI TOKENIZER_DIR [COUNT]

The strings mix the blocks where normalizers do the most (compatibility forms, ligatures,
enclosed and squared characters, half-width kana, conjoining jamo, combining marks,
zero-width and control characters, emoji with joiners and selectors), 1 to 12 chars each,
from a fixed seed.
"""
import json
import random
import subprocess
import sys

from tokenizers import Tokenizer

POOLS = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x300, 0x370), range(0x2000, 0x2070),
         range(0x2100, 0x2200), range(0x2460, 0x2500), range(0x3000, 0x3100), range(0x3300, 0x3400),
         range(0xFB00, 0xFB50), range(0xFF00, 0xFFEF), range(0x1100, 0x1200), range(0xAC00, 0xAC40),
         range(0x1F300, 0x1F700), [0x200B, 0x200C, 0x200D, 0xFE0F, 0x07, 0x1E, 0xAD, 0x85, 0x09, 0x0A]]


def main():
    cli, tok_dir = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    rng = random.Random(0)
    texts = ["".join(chr(rng.choice(rng.choice(POOLS))) for _ in range(rng.randint(1, 12))) for _ in range(count)]
    lines = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    out = subprocess.run([cli, "tokenize", tok_dir, "--jsonl"], input=lines.encode(), capture_output=True,
                         check=True).stdout.decode().splitlines()
    assert len(out) == len(texts), "%d lines for %d texts" % (len(out), len(texts))
    tok = Tokenizer.from_file(tok_dir + "/tokenizer.json")
    differ = 0
    for text, line in zip(texts, out):
        got = json.loads(line)
        want = tok.encode(text)
        offsets = [[len(text[:a].encode()), len(text[:b].encode())] for a, b in want.offsets]
        if got["ids"] != want.ids or got["offsets"] != offsets:
            differ += 1
            if differ <= 5:
                print("differs: %r\n  ours   %s %s\n  theirs %s %s" % (text, got["ids"], got["offsets"], want.ids, offsets))
    print("%d random texts, %d differ (%s)" % (len(texts), differ, tok_dir))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
