#!/usr/bin/env python
"""Loads an adapter we trained into transformers + HF PEFT and compares its logits with ours.

Usage: python check_encoder_adapter.py MODEL_DIR ADAPTER_DIR OURS.safetensors
OURS holds input_ids, attention_mask and our logits. Prints the max abs difference;
exits 1 above 1e-4. A *ForTokenClassification model (config.json's architectures) loads
as one; any other as a sequence classifier.
"""
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()

model_dir, adapter_dir, ours_path = sys.argv[1:4]
ours = load_file(ours_path)
with open(os.path.join(model_dir, "config.json")) as f:
    arch = (json.load(f).get("architectures") or [""])[0]
auto = AutoModelForTokenClassification if arch.endswith("ForTokenClassification") else AutoModelForSequenceClassification
base = auto.from_pretrained(model_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    want = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits
diff = (want - ours["logits"]).abs().max().item()
print(f"max abs diff {diff:.3g}")
sys.exit(0 if diff <= 1e-4 else 1)
