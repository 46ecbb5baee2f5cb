#!/usr/bin/env python
"""Token classification references for tests/test_token_cls.cpp, made by transformers,
`tokenizers` and HF PEFT, and a small NER task from the King James Bible.

Usage: python tests/parity/make_token_cls.py OUT_DIR

Tokenizers: OUT_DIR/bert/ gets make_tokenizers.py's bert_cased_digits WordPiece (the
cased BERT tokenizer of the tokenizer tests) trained on every third KJV verse;
OUT_DIR/roberta/ a byte-level BPE (add_prefix_space, RobertaProcessing) on the same verses.

Task (OUT_DIR/token_{train,eval}.jsonl): KJV verses split into words (letters, or one
other character), {"tokens": [...], "tags": [...]} with IOB2 tags PER / LOC for the names
in PERSONS / PLACES below (longest match first; "Israel", "Judah" and "Lord" stay O). The
verses are taken in Bible order; every fifth goes to eval, so no eval verse is trained on.
OUT_DIR/token_ref.jsonl: four hand-made lines (sub-word splits, an accented word, digits,
an empty word) for the parity cases.

Cases (OUT_DIR/<case>/): a random-weight BertForTokenClassification / RobertaForTokenClassification
(hidden 32, 2 layers, 5 labels: O B-PER I-PER B-LOC I-LOC) saved with its tokenizer, and
reference.safetensors: input_ids (token_ref.jsonl through the tokenizer with
is_pretokenized), attention_mask, labels aligned on word_ids() as transformers'
token-classification example (run_ner.py) aligns them (first sub-token, -100 elsewhere;
labels_all: label_all_tokens with B- turned into I-), logits, loss (the model's own with
labels=), and per HF PEFT adapter (TOKEN_CLS LoRA, IA3) "<name>.logits". Adapters in
OUT_DIR/<case>/adapters/<name>/.

OUT_DIR/bert/metrics.json: with the LoRA adapter, the predictions on token_eval.jsonl scored
by the small independent implementation below (entities = maximal B-X I-X* runs, an I-X
that continues nothing opening one, as conlleval): accuracy, precision, recall, f1,
token_f1, loss; and the same for the majority baseline (every word O).
"""
import json
import os
import re
import shutil
import sys

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch  # noqa: E402
from peft import IA3Config, LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (BertConfig, BertForTokenClassification, RobertaConfig,  # noqa: E402
                          RobertaForTokenClassification)
from transformers.utils import logging as hf_logging  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizers import bible_lines, build_bert_cased_digits, write_config  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
PERSONS = ["Abraham", "Isaac", "Jacob", "Joseph", "Moses", "Aaron", "David", "Solomon", "Saul", "Samuel", "Jesus",
           "Christ", "Peter", "Paul", "John", "Elijah", "Noah", "Joshua", "Daniel", "Sarah", "Esau", "Judas", "Mary",
           "Pilate", "Herod", "Jesus Christ", "Christ Jesus", "Simon Peter", "John the Baptist"]
PLACES = ["Egypt", "Jerusalem", "Babylon", "Jordan", "Canaan", "Zion", "Sion", "Bethlehem", "Galilee", "Nazareth",
          "Samaria", "Damascus", "Jericho", "Sodom", "Assyria", "Syria", "Judaea", "Lebanon", "Red sea",
          "mount of Olives", "mount Sinai", "Sinai"]
REF_LINES = [
    (["And", "Nebuchadnezzar", "went", "to", "Jerusalem", "."], ["O", "B-PER", "O", "O", "B-LOC", "O"]),
    (["Jesus", "Christ", "in", "Café", "12", "Galilee"], ["B-PER", "I-PER", "O", "O", "O", "B-LOC"]),
    (["mount", "of", "Olives", "", "x,y"], ["B-LOC", "I-LOC", "I-LOC", "O", "O"]),
    (["Moses"], ["B-PER"]),
]
WORD = re.compile(r"[A-Za-z]+|\S")


def tag_words(words):
    tags = ["O"] * len(words)
    names = sorted([(n.split(), "PER") for n in PERSONS] + [(n.split(), "LOC") for n in PLACES],
                   key=lambda x: -len(x[0]))
    i = 0
    while i < len(words):
        for parts, kind in names:
            if words[i:i + len(parts)] == parts:
                tags[i:i + len(parts)] = ["B-" + kind] + ["I-" + kind] * (len(parts) - 1)
                i += len(parts) - 1
                break
        i += 1
    return tags


def write_task(out, verses):
    picked, plain = [], 0
    for v in verses:
        words = WORD.findall(v)
        if len(words) > 40:
            continue
        tags = tag_words(words)
        if all(t == "O" for t in tags):
            plain += 1
            if plain % 25:  # a few verses without names
                continue
        picked.append({"tokens": words, "tags": tags})
    picked = picked[::2][:1100]
    train = [x for i, x in enumerate(picked) if i % 5 != 4]
    held = [x for i, x in enumerate(picked) if i % 5 == 4][:180]
    for name, rows in (("token_train.jsonl", train), ("token_eval.jsonl", held)):
        with open(os.path.join(out, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    with open(os.path.join(out, "token_ref.jsonl"), "w") as f:
        for words, tags in REF_LINES:
            f.write(json.dumps({"tokens": words, "tags": tags}, ensure_ascii=False) + "\n")
    return train, held


def save_bert_tokenizer(case_dir, lines):
    tok, cfg, _ = build_bert_cased_digits(lines)
    tok.save(os.path.join(case_dir, "tokenizer.json"))
    write_config(cfg, case_dir)
    return Tokenizer.from_file(os.path.join(case_dir, "tokenizer.json")), 0


def save_roberta_tokenizer(case_dir, lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer, length=len(lines))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(os.path.join(case_dir, "tokenizer.json"))
    write_config(dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"), case_dir)
    return Tokenizer.from_file(os.path.join(case_dir, "tokenizer.json")), 1


def encode(tok, rows, pad, all_tokens=False):
    """run_ner.py's tokenize_and_align_labels, right-padded."""
    ids, labels = [], []
    b_to_i = [LABELS.index("I-" + l[2:]) if l.startswith("B-") else i for i, l in enumerate(LABELS)]
    for r in rows:
        enc = tok.encode(r["tokens"], is_pretokenized=True)
        lab, prev = [], None
        for w in enc.word_ids:
            tag = None if w is None else LABELS.index(r["tags"][w])
            if w is None:
                lab.append(-100)
            elif w != prev:
                lab.append(tag)
            else:
                lab.append(b_to_i[tag] if all_tokens else -100)
            prev = w
        ids.append(enc.ids)
        labels.append(lab)
    n = max(len(x) for x in ids)
    t_ids = torch.full((len(ids), n), pad, dtype=torch.int64)
    t_lab = torch.full((len(ids), n), -100, dtype=torch.int64)
    mask = torch.zeros_like(t_ids)
    for i, (x, l) in enumerate(zip(ids, labels)):
        t_ids[i, :len(x)] = torch.tensor(x)
        t_lab[i, :len(l)] = torch.tensor(l)
        mask[i, :len(x)] = 1
    return t_ids, mask, t_lab


def spans(tags):
    """Entities of one sequence of IOB2 tags: (type, first, last)."""
    out, cur = set(), None
    for i, t in enumerate(tags + ["O"]):
        prefix, typ = (t.split("-", 1) + [""])[:2] if t != "O" else ("O", "")
        if cur is not None and not (prefix == "I" and typ == cur[0]):
            out.add((cur[0], cur[1], i - 1))
            cur = None
        if prefix == "B" or (prefix == "I" and cur is None):
            cur = (typ, i)
    return out


def score(gold_rows, pred_rows):
    tokens = correct = tp = n_pred = n_gold = ttp = tpred = tgold = 0
    for g, p in zip(gold_rows, pred_rows):
        tokens += len(g)
        correct += sum(a == b for a, b in zip(g, p))
        ttp += sum(a == b and a != "O" for a, b in zip(g, p))
        tpred += sum(b != "O" for b in p)
        tgold += sum(a != "O" for a in g)
        gs, ps = spans(g), spans(p)
        tp += len(gs & ps)
        n_pred += len(ps)
        n_gold += len(gs)

    def f1(a, b):
        return 2 * a * b / (a + b) if a + b else 0.0
    prec, rec = tp / n_pred if n_pred else 0.0, tp / n_gold if n_gold else 0.0
    tprec, trec = ttp / tpred if tpred else 0.0, ttp / tgold if tgold else 0.0
    return {"accuracy": correct / tokens, "precision": prec, "recall": rec, "f1": f1(prec, rec),
            "token_f1": f1(tprec, trec), "entities": n_gold, "tokens": tokens}


def eval_metrics(model, tok, pad, rows):
    gold_rows, pred_rows, loss_sum, count = [], [], 0.0, 0
    for i in range(0, len(rows), 16):
        ids, mask, labels = encode(tok, rows[i:i + 16], pad)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits.view(-1, len(LABELS)), labels.view(-1),
                                                      reduction="sum").item()
        count += int((labels != -100).sum())
        pred = logits.argmax(-1)
        for b in range(ids.shape[0]):
            keep = labels[b] != -100
            gold_rows.append([LABELS[int(x)] for x in labels[b][keep]])
            pred_rows.append([LABELS[int(x)] for x in pred[b][keep]])
    out = score(gold_rows, pred_rows)
    out["loss"] = loss_sum / count
    out["majority"] = score(gold_rows, [["O"] * len(g) for g in gold_rows])
    return out


def make_case(out, name, save_tok, lines, cls, cfg_cls, extra):
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    tok, pad = save_tok(case_dir, lines)
    cfg = cfg_cls(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=80, num_labels=len(LABELS),
                  id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
                  pad_token_id=pad, **extra)
    torch.manual_seed(7)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(case_dir)
    rows = [{"tokens": w, "tags": t} for w, t in REF_LINES]
    ids, mask, labels = encode(tok, rows, pad)
    _, _, labels_all = encode(tok, rows, pad, all_tokens=True)
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref = {"input_ids": ids, "attention_mask": mask, "labels": labels, "labels_all": labels_all,
           "logits": res.logits.float().contiguous(), "loss": res.loss.float().reshape(1),
           "num_parameters": torch.tensor([model.num_parameters()], dtype=torch.int64)}
    adapters = [("lora", LoraConfig(task_type="TOKEN_CLS", r=4, lora_alpha=8, init_lora_weights=False)),
                ("ia3", IA3Config(task_type="TOKEN_CLS"))]
    for adapter, peft_cfg in adapters:
        torch.manual_seed(len(adapter))
        base = cls.from_pretrained(case_dir, dtype=torch.float32).eval()
        pm = get_peft_model(base, peft_cfg)
        with torch.no_grad():  # the classifier copy starts equal to the head; (IA)3 at ones
            for n, p in pm.named_parameters():
                if "modules_to_save" in n or "ia3_l" in n:
                    p.add_(torch.randn_like(p) * 0.5)
        pm.eval()
        with torch.no_grad():
            ref[f"{adapter}.logits"] = pm(input_ids=ids, attention_mask=mask).logits.float().contiguous()
        pm.save_pretrained(os.path.join(case_dir, "adapters", adapter))
        if adapter == "lora" and name == "bert":
            with open(os.path.join(out, "token_eval.jsonl")) as f:
                held = [json.loads(x) for x in f]
            with open(os.path.join(case_dir, "metrics.json"), "w") as f:
                json.dump(eval_metrics(pm, tok, pad, held), f, indent=1)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    print(f"{name}: {cls.__name__} vocab={tok.get_vocab_size()} params={model.num_parameters()} "
          f"ref ids {tuple(ids.shape)}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    verses = bible_lines()
    train, held = write_task(out, verses)
    n_ent = sum(sum(t.startswith("B-") for t in r["tags"]) for r in held)
    print(f"task: {len(train)} train / {len(held)} eval verses, {n_ent} eval entities")
    lines = verses[::3]
    make_case(out, "bert", save_bert_tokenizer, lines, BertForTokenClassification, BertConfig, {})
    make_case(out, "roberta", save_roberta_tokenizer, lines, RobertaForTokenClassification, RobertaConfig,
              dict(bos_token_id=0, eos_token_id=2, type_vocab_size=1, hidden_act="gelu"))


if __name__ == "__main__":
    main()
