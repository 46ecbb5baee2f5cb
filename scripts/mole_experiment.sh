#!/usr/bin/env bash
# MoLE acceptance experiment (docs/MOLE.md): one LoRA expert per domain (KJV Bible verses,
# fortune-cookie lines) on SmolLM2-135M-Instruct, then a MoLE router over the two frozen
# experts trained on the mixed set; eval loss of base / each expert / MoLE on bible-only,
# fortunes-only and mixed held-out lines. Each expert trains for EXPERT_STEPS (8) steps of
# 8 lines, the router for MOLE_STEPS (16) steps of 8 mixed lines: short runs that fit a
# busy two-core machine (raise them where there is time).
#
#   scripts/mole_experiment.sh [OUT_DIR]      (PEFT=path/to/peft to use another build;
#                                              BASE=tiny for a small model trained here)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/peft_mole_experiment}
peft=${PEFT:-build/peft}
mkdir -p "$out"
.venv/bin/python scripts/mole_data.py "$out/data" ${N_TRAIN:-192} ${N_EVAL:-32}
common=(max_length=48 per_device_train_batch_size=8 warmup_steps=1 logging_steps=2
        progress=false seed=15)
if [ "${BASE:-smollm2}" = tiny ]; then
  # A 4-layer LLaMA trained here from random init (scripts/mole_tiny_base.py), for a
  # machine too busy for SmolLM2; LoRA on every linear layer.
  base="$out/tiny_base"
  [ -f "$base/config.json" ] || .venv/bin/python scripts/mole_tiny_base.py "$out/data" "$base" ${BASE_STEPS:-250}
  lora='{"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}'
  expert_steps=${EXPERT_STEPS:-24} mole_steps=${MOLE_STEPS:-24}
else
  base=$(.venv/bin/python tests/parity/smollm2_gguf.py)
  # LoRA on every linear layer of the top 8 of SmolLM2's 30 blocks: backward stops there.
  lora='{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "layers_to_transform": [22, 23, 24, 25, 26, 27, 28, 29]}'
  expert_steps=${EXPERT_STEPS:-8} mole_steps=${MOLE_STEPS:-16}
fi

for d in bible fortunes; do
  [ -f "$out/expert_$d/adapter_model.safetensors" ] && continue
  echo "== LoRA expert: $d"
  "$peft" train model="$base" train_file="$out/data/${d}_train.jsonl" output_dir="$out/expert_$d" \
    "method=$lora" learning_rate=3e-3 max_steps=$expert_steps "${common[@]}" --overwrite
done

if [ ! -f "$out/mole/adapter_model.safetensors" ]; then
  echo "== MoLE router over the frozen experts, on the mixed set"
  "$peft" train model="$base" train_file="$out/data/mixed_train.jsonl" output_dir="$out/mole" \
    "method={\"peft_type\": \"MOLE\", \"experts\": {\"bible\": \"$out/expert_bible\", \"fortunes\": \"$out/expert_fortunes\"}, \"top_k\": 2, \"router_aux_loss_coef\": 0.001}" \
    learning_rate=1e-2 max_steps=$mole_steps "${common[@]}" --overwrite
fi

echo "== eval loss"
printf "%-16s %10s %10s %10s\n" model bible fortunes mixed | tee "$out/results.txt"
for m in base expert_bible expert_fortunes mole; do
  row=$(printf "%-16s" "$m")
  for e in bible fortunes mixed; do
    args=("$base" --data "$out/data/${e}_eval.jsonl" --max-length 48)
    [ "$m" != base ] && args+=(--adapter "$out/$m")
    loss=$("$peft" eval "${args[@]}" 2>/dev/null | .venv/bin/python -c 'import json,sys; print("%.4f" % json.loads(sys.stdin.read().strip().splitlines()[-1])["eval_loss"])')
    row+=$(printf " %10s" "$loss")
  done
  echo "$row" | tee -a "$out/results.txt"
done
