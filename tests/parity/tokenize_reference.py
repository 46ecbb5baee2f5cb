#!/usr/bin/env python
"""What HF `tokenizers` gives for `peft tokenize --jsonl` with the same settings.

Usage: tokenize_reference.py TOKENIZER_JSON TEXTS_JSONL [--no-padding] [--no-truncation]
                             [--max-length N] [--no-special]

Prints one line per text: {"ids", "offsets", "attention_mask"} of Tokenizer.encode, which
applies tokenizer.json's truncation and padding (a Fixed padding pads a single text).
"""
import argparse
import json

from tokenizers import Tokenizer

p = argparse.ArgumentParser()
p.add_argument("tokenizer")
p.add_argument("texts")
p.add_argument("--no-padding", action="store_true")
p.add_argument("--no-truncation", action="store_true")
p.add_argument("--max-length", type=int)
p.add_argument("--no-special", action="store_true")
a = p.parse_args()

tok = Tokenizer.from_file(a.tokenizer)
if a.no_truncation:
    tok.no_truncation()
if a.max_length:
    tok.enable_truncation(a.max_length)
if a.no_padding:
    tok.no_padding()
with open(a.texts, encoding="utf-8") as f:
    for line in f:
        e = tok.encode(json.loads(line)["text"], add_special_tokens=not a.no_special)
        print(json.dumps({"ids": e.ids, "offsets": [list(o) for o in e.offsets], "attention_mask": e.attention_mask}))
