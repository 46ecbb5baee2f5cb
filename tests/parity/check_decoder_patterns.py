#!/usr/bin/env python
"""Decoders whose patterns are odd (empty, absent from the text, multi-byte) through
`peft tokenize --decode` and HF `tokenizers`: the decoded text must be equal.

Usage: python tests/parity/check_decoder_patterns.py PEFT_CLI TOKENIZER_DIR OUT_DIR [COUNT]

Each case replaces TOKENIZER_DIR's decoder by one of the cases below, writes the result to
OUT_DIR/<case>/tokenizer.json and decodes COUNT random id lists (fixed seed) both ways.
An empty pattern matches at every character boundary in tokenizers (Rust's str::replace):
before this check, ours skipped it (Replace) or never returned (BPEDecoder)."""
import json
import os
import random
import subprocess
import sys

from tokenizers import Tokenizer

CASES = {
    "bpe_empty_suffix": {"type": "BPEDecoder", "suffix": ""},
    "bpe_suffix_w": {"type": "BPEDecoder", "suffix": "</w>"},
    "bpe_suffix_letter": {"type": "BPEDecoder", "suffix": "e"},
    "replace_empty": {"type": "Replace", "pattern": {"String": ""}, "content": "X"},
    "replace_empty_with_empty": {"type": "Replace", "pattern": {"String": ""}, "content": ""},
    "replace_letter_to_empty": {"type": "Replace", "pattern": {"String": "e"}, "content": ""},
    "replace_multibyte": {"type": "Replace", "pattern": {"String": "\u0120"}, "content": "\u2581\u2581"},
    "sequence_with_empty": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": ""}, "content": "-"},
        {"type": "BPEDecoder", "suffix": ""}]},
}


def main():
    cli, tok_dir, out = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 200
    base = json.load(open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8"))
    vocab_size = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json")).get_vocab_size()
    rng = random.Random(0)
    id_lists = [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))] for _ in range(count)]
    failed = 0
    for name, decoder in CASES.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dict(base, decoder=decoder), f, ensure_ascii=False)
        want = Tokenizer.from_file(path).decode_batch(id_lists, skip_special_tokens=False)
        p = subprocess.run([cli, "tokenize", d, "--decode"], capture_output=True, timeout=120,
                           input="".join(json.dumps({"ids": ids}) + "\n" for ids in id_lists).encode())
        if p.returncode != 0:
            print("%s: FAILED, exit %d: %s" % (name, p.returncode, p.stderr.decode()[-300:]))
            failed += 1
            continue
        got = [json.loads(line)["text"] for line in p.stdout.decode().splitlines()]
        differ = [(ids, g, w) for ids, g, w in zip(id_lists, got, want) if g != w]
        ok = len(got) == len(want) and not differ
        print("%s: %d id lists, %s" % (name, len(want), "equal" if ok else "%d differ, e.g. %r" % (
            len(differ) + abs(len(got) - len(want)), differ[:1])))
        failed += not ok
    print("%d of %d cases failed" % (failed, len(CASES)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
