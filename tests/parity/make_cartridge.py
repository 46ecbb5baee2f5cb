#!/usr/bin/env python
"""CARTRIDGE references made by HF PEFT for tests/test_cartridge.cpp.

Usage: python tests/parity/make_cartridge.py make OUT_DIR

make writes llama/ and gpt2/ (make_vera.py's tiny random bases with inputs.safetensors; the
Llama has grouped-query attention, 2 key/value heads of 4), a word-level tokenizer in
llama/ (tokenizer.json, tokenizer_config.json without a chat template) and in llama_chat/
(the same base and tokenizer with a chat template), and per case <case>/adapter/ (HF's
save_pretrained) and <case>/reference.safetensors (the inputs, the adapter's "logits", and
"prompt_embeddings" as saved). case.json: the base and, for the text inits, the text.
Cases:
  cart_llama       num_virtual_tokens 5, num_frozen_tokens 2, HF's random init
  cart_gpt2        num_virtual_tokens 4, num_frozen_tokens 0
  cart_text_llama  6 tokens, 1 frozen, initialize_kv_prefix_from_text (no chat template:
                   the plain text)
  cart_chat_llama  6 tokens on llama_chat: the text as a system message through the chat
                   template
  prefix_text_llama PREFIX_TUNING (no projection), 4 tokens, initialize_kv_prefix_from_text
"""

import json
import os
import shutil
import sys
import warnings

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vera import load_base, make_base, pin_hash_seed  # noqa: E402

from peft import CartridgeConfig, PrefixTuningConfig, get_peft_model  # noqa: E402
from peft.tuners.cartridge.utils import initialize_kv_prefix_from_text  # noqa: E402

warnings.simplefilter("ignore")

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "to", "park", "and", "then", "slept", "in", "sun",
         "<|system|>", "<|end|>"]
TEXT = "the cat sat on the mat and then the dog ran to the park"
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} <|end|> {% endfor %}"


def write_tokenizer(folder, chat):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(folder, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>"}
    if chat:
        cfg["chat_template"] = CHAT_TEMPLATE
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)


def make_case(out, name, base, config, text=None):
    from transformers import AutoTokenizer
    case_dir = os.path.join(out, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    base_dir = os.path.join(out, base)
    inputs = load_file(os.path.join(out, base.removesuffix("_chat"), "inputs.safetensors"))
    torch.manual_seed(11)
    model = get_peft_model(load_base(base_dir), config)
    if text is not None:
        initialize_kv_prefix_from_text(model, AutoTokenizer.from_pretrained(base_dir), text=text)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits.float().contiguous()
    model.save_pretrained(os.path.join(case_dir, "adapter"))
    saved = load_file(os.path.join(case_dir, "adapter", "adapter_model.safetensors"))
    save_file(dict(inputs, logits=logits, prompt_embeddings=saved["prompt_embeddings"]),
              os.path.join(case_dir, "reference.safetensors"))
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(dict(base=base, text=text), f, indent=1)
    print(f"{name}: prompt_embeddings {tuple(saved['prompt_embeddings'].shape)}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    pin_hash_seed()
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    for kind in ("llama", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    write_tokenizer(os.path.join(out, "llama"), chat=False)
    chat_dir = os.path.join(out, "llama_chat")
    shutil.rmtree(chat_dir, ignore_errors=True)
    shutil.copytree(os.path.join(out, "llama"), chat_dir)
    write_tokenizer(chat_dir, chat=True)
    causal = dict(task_type="CAUSAL_LM")
    make_case(out, "cart_llama", "llama", CartridgeConfig(num_virtual_tokens=5, num_frozen_tokens=2, **causal))
    make_case(out, "cart_gpt2", "gpt2", CartridgeConfig(num_virtual_tokens=4, num_frozen_tokens=0, **causal))
    make_case(out, "cart_text_llama", "llama", CartridgeConfig(num_virtual_tokens=6, **causal), TEXT)
    make_case(out, "cart_chat_llama", "llama_chat", CartridgeConfig(num_virtual_tokens=6, **causal), TEXT)
    make_case(out, "prefix_text_llama", "llama", PrefixTuningConfig(num_virtual_tokens=4, **causal), TEXT)


if __name__ == "__main__":
    main()
