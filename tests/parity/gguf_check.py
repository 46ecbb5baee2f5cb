#!/usr/bin/env python
"""Checks run by tests/test_gguf.cpp on files the C++ code wrote.

Usage:
  python tests/parity/gguf_check.py same A.gguf B.gguf
      gguf-py's GGUFReader reads both; their metadata (keys, types, values, in order) and
      tensors (names, types, shapes, bytes) must be identical.
  python tests/parity/gguf_check.py tokenizers OURS_DIR FIXTURE_DIR
      For every case in FIXTURE_DIR/manifest.json ("tokenizers"), OURS_DIR/<case>/ holds the
      tokenizer.json and tokenizer_config.json the C++ code built from the case's GGUF.
      Loaded with `tokenizers.Tokenizer.from_file` and with `AutoTokenizer.from_pretrained`,
      they must give transformers' ids (AutoTokenizer(gguf_file=...), stored by
      make_gguf.py) for every text and chat rendering, the same decoded text, special
      tokens and chat template.
Exit status 0 when everything matches; mismatches are printed.
"""

import json
import logging
import os
import sys
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def same(a_path, b_path):
    import numpy as np
    from gguf import GGUFReader

    a, b = GGUFReader(a_path), GGUFReader(b_path)
    bad = []
    ka = [k for k in a.fields if not k.startswith("GGUF.")]
    kb = [k for k in b.fields if not k.startswith("GGUF.")]
    if ka != kb:
        bad.append("metadata keys differ: %s" % sorted(set(ka) ^ set(kb))[:10])
    for k in ka:
        if k in b.fields:
            fa, fb = a.fields[k], b.fields[k]
            if fa.types != fb.types or fa.contents() != fb.contents():
                bad.append("metadata %r differs" % k)
    if [t.name for t in a.tensors] != [t.name for t in b.tensors]:
        bad.append("tensor names or order differ")
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.tensor_type != tb.tensor_type or list(ta.shape) != list(tb.shape):
            bad.append("tensor %r: type or shape differs" % ta.name)
        elif not np.array_equal(np.asarray(ta.data).view(np.uint8), np.asarray(tb.data).view(np.uint8)):
            bad.append("tensor %r: bytes differ" % ta.name)
    for line in bad[:20]:
        print(line)
    print("%s vs %s: %d fields, %d tensors, %d differences" % (a_path, b_path, len(ka), len(a.tensors), len(bad)))
    return not bad


def check_case(ours, case_dir, name):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    with open(os.path.join(case_dir, "expected.json")) as fh:
        exp = json.load(fh)
    bad = []
    raw = Tokenizer.from_file(os.path.join(ours, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(ours)
    for text, want, decoded in zip(exp["texts"], exp["ids"], exp["decoded"]):
        if raw.encode(text).ids != want:
            bad.append("tokenizers ids differ for %r" % text[:60])
        got = auto(text)["input_ids"]
        if got != want:
            bad.append("AutoTokenizer ids differ for %r" % text[:60])
        elif auto.decode(got) != decoded:
            bad.append("decode differs for %r" % text[:60])
    for chat in exp["chats"]:
        text = auto.apply_chat_template(chat["messages"], tokenize=False,
                                        add_generation_prompt=chat["add_generation_prompt"])
        if text != chat["text"]:
            bad.append("chat template renders differently: %r" % text[:80])
        if auto(text, add_special_tokens=False)["input_ids"] != chat["ids"]:
            bad.append("chat ids differ for %r" % text[:80])
    for key, want in exp["special"].items():
        if getattr(auto, key) != want:
            bad.append("%s is %r, transformers has %r" % (key, getattr(auto, key), want))
    if auto.chat_template != exp["chat_template"]:
        bad.append("chat_template differs")
    for line in bad[:20]:
        print("%s: %s" % (name, line))
    print("%s: %d texts, %d chats, %d differences" % (name, len(exp["texts"]), len(exp["chats"]), len(bad)))
    return not bad


def tokenizers(ours_root, fixture_dir):
    with open(os.path.join(fixture_dir, "manifest.json")) as fh:
        cases = json.load(fh)["tokenizers"]
    ok = True
    for case in cases:
        ok &= check_case(os.path.join(ours_root, case["name"]), os.path.join(fixture_dir, case["dir"]), case["name"])
    return ok


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "same":
        sys.exit(0 if same(sys.argv[2], sys.argv[3]) else 1)
    if len(sys.argv) == 4 and sys.argv[1] == "tokenizers":
        sys.exit(0 if tokenizers(sys.argv[2], sys.argv[3]) else 1)
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
