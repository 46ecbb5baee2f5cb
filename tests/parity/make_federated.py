#!/usr/bin/env python
"""Fixtures for tests/test_federated.cpp: a tiny random LlamaForCausalLM made by transformers,
a byte-level BPE tokenizer trained by `tokenizers`, and a real-text task from Debian's
fortunes-min split non-IID over 4 clients.

Usage: python tests/parity/make_federated.py OUT_DIR

OUT_DIR/model/          LlamaForCausalLM (hidden 32, 2 layers, GQA) + tokenizer.json
OUT_DIR/client<k>.jsonl {"text"} rows; client k (40, 56, 48, 32 rows) draws 80% from one fortunes
                        file (0: fortunes, 1: literature, 2: riddles, 3: fortunes, other
                        entries) and 20% from the others
OUT_DIR/pooled.jsonl    the four clients' rows together (centralized training)
OUT_DIR/eval.jsonl      held-out rows, the same number from each file

Also usable as the FedAvg reference (numpy + safetensors only, no torch import):
  python make_federated.py --fedavg PREV.safetensors GOT.safetensors CLIP N1:UPLOAD1 ...
prints {"max_abs_diff", "residual_std", "elements"}: GOT against PREV + the example-weighted
mean of the (clipped, if CLIP > 0) update deltas; residual_std is the std of GOT minus it.
"""
import json
import os
import random
import shutil
import sys

FORTUNES = "/usr/share/games/fortunes"
FILES = ["fortunes", "literature", "riddles"]
MAIN_FILE = [0, 1, 2, 0]
PER_CLIENT, EVAL_PER_FILE = [40, 56, 48, 32], 16  # unequal: FedAvg weights differ


def entries(name):
    path = os.path.join(FORTUNES, name)
    if not os.path.exists(path):
        sys.exit("%s not found: apt-get install -y fortunes-min" % path)
    text = open(path, encoding="utf-8", errors="replace").read()
    out = []
    for e in text.split("\n%\n"):
        e = " ".join(e.split())
        if len(e) >= 20:
            out.append(e[:240])
    return out


def make(out):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "model"))
    rng = random.Random(19)
    pools = []
    for f in FILES:
        e = entries(f)
        rng.shuffle(e)
        pools.append(e)
    evals = [e for p in pools for e in p[:EVAL_PER_FILE]]
    pools = [p[EVAL_PER_FILE:] for p in pools]
    taken = [0] * len(pools)

    def take(i, n):
        rows = pools[i][taken[i]:taken[i] + n]
        taken[i] += n
        assert len(rows) == n, "fortunes file %s is too short" % FILES[i]
        return rows

    clients = []
    for main, size in zip(MAIN_FILE, PER_CLIENT):
        n_main = size * 4 // 5
        rows = take(main, n_main)
        others = [i for i in range(len(FILES)) if i != main]
        for j in range(size - n_main):
            rows += take(others[j % len(others)], 1)
        rng.shuffle(rows)
        clients.append(rows)

    def write(name, rows):
        with open(os.path.join(out, name), "w") as f:
            for r in rows:
                f.write(json.dumps({"text": r}) + "\n")

    for k, rows in enumerate(clients):
        write("client%d.jsonl" % k, rows)
    write("pooled.jsonl", [r for rows in clients for r in rows])
    write("eval.jsonl", evals)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [e for f in FILES for e in entries(f)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=384, special_tokens=["<s>", "<pad>", "</s>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(os.path.join(out, "model"))
    torch.manual_seed(19)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=0, pad_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(os.path.join(out, "model"))
    print("federated fixtures: vocab %d, clients %s, eval %d" % (len(fast), [len(c) for c in clients], len(evals)))


def fedavg(prev, got, clip, uploads):
    import numpy as np
    from safetensors.numpy import load_file
    p, g = load_file(prev), load_file(got)
    ups = []
    for u in uploads:
        n, path = u.split(":", 1)
        d = {k: v.astype(np.float64) for k, v in load_file(path).items()}
        if clip > 0:
            norm = np.sqrt(sum(float((v * v).sum()) for v in d.values()))
            d = {k: v * min(1.0, clip / max(norm, 1e-300)) for k, v in d.items()}
        ups.append((float(n), d))
    total = sum(n for n, _ in ups)
    assert set(p) == set(g), "keys differ"
    diff, residual = 0.0, []
    for k in p:
        want = p[k].astype(np.float64) + sum(n * d[k] for n, d in ups) / total
        r = g[k].astype(np.float64) - want.astype(np.float32).astype(np.float64)
        diff = max(diff, float(np.abs(r).max()))
        residual.append(r.ravel())
    residual = np.concatenate(residual)
    print(json.dumps({"max_abs_diff": diff, "residual_std": float(residual.std()), "elements": int(residual.size)}))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--fedavg":
        fedavg(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:])
    else:
        make(sys.argv[1])
