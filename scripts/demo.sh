#!/usr/bin/env bash
# The main job on a built-in default, as far as the project goes today: build, make a
# small LLaMA-shaped model locally (random weights via transformers' config classes; no
# hub), inspect it, score token ids and generate from it. Fine-tuning arrives with the
# trainer (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target peft_cli
.venv/bin/python tests/parity/make_models.py build/parity >/dev/null
model=build/parity/llama_gqa_tied
echo "== peft inspect $model"
build/peft inspect "$model"
echo "== peft forward $model --ids $model/ids.json"
build/peft forward "$model" --ids "$model/ids.json" --out build/demo_logits.safetensors
echo "== peft generate (greedy, then sampled)"
echo '[[5, 9, 13, 2], [11, 3]]' > build/demo_prompts.json
build/peft generate "$model" --ids build/demo_prompts.json --max-new-tokens 16 --no-eos
build/peft generate "$model" --ids build/demo_prompts.json --max-new-tokens 16 --no-eos --temperature 0.8 --top-p 0.9 --seed 1
