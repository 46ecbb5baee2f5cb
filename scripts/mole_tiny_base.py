"""A small causal LM for the MoLE experiment on a machine too busy for SmolLM2
(scripts/mole_experiment.sh with BASE=tiny): a byte-level BPE tokenizer (2000 tokens)
and a 4-layer LLaMA (hidden 128) trained briefly from random init on both domains'
lines that are in neither eval set, saved as a Hugging Face folder.

Usage: python scripts/mole_tiny_base.py DATA_DIR OUT_DIR [STEPS]
"""
import json
import os
import random
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))
from make_tokenizers import bible_lines, fortune_lines  # noqa: E402

EOS = "<|endoftext|>"


def main():
    data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 250
    held_out = set()
    for name in ("bible_eval", "fortunes_eval", "bible_train", "fortunes_train"):
        with open(os.path.join(data, name + ".jsonl")) as f:
            held_out.update(json.loads(l)["text"] for l in f)
    rng = random.Random(7)
    pools = [[l for l in src() if 40 <= len(l) <= 160 and l not in held_out] for src in (bible_lines, fortune_lines)]
    for p in pools:
        rng.shuffle(p)
    # The base sees little of each domain, so that each expert has something to learn.
    corpus = pools[0][:1500] + pools[1][:1500]
    rng.shuffle(corpus)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=2000, min_frequency=2, show_progress=False, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = tok.token_to_id(EOS)

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rows = [tok.encode(t).ids[:47] + [eos] for t in corpus]
    model.train()
    for step in range(steps):
        batch = [rows[(step * 16 + i) % len(rows)] for i in range(16)]
        n = max(len(r) for r in batch)
        ids = torch.tensor([r + [eos] * (n - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (n - len(r)) for r in batch])
        mask = (labels != -100).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        for g in opt.param_groups:
            g["lr"] = 3e-3 * (1 - step / steps)
        if step % 100 == 0 or step == steps - 1:
            print(f"base step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()
    model.save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": EOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)


if __name__ == "__main__":
    main()
