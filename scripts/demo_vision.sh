#!/usr/bin/env bash
# The vision example: adapt a small ViT to Fashion-MNIST (Debian's dataset-fashion-mnist;
# no download) with three methods, VPT-deep, AdaptFormer and LoRA, each with a new
# classifier head trained in full (modules_to_save), and compare them.
# The base is a random-weight ViT (transformers' ViTConfig: 28x28 images, 7x7 patches,
# hidden 64, 4 layers) pretrained for 200 steps in PyTorch on classes 0-4 only
# (scripts/demo_vision_data.py), so the frozen backbone has never seen sandals, shirts,
# sneakers, bags or boots. The images are PNG files that peft decodes and preprocesses
# itself (preprocessor_config.json). A few minutes on 2 CPU cores.
# BUILD=folder uses another build folder than build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${BUILD:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target peft_cli
peft="$build/peft"
out=$build/demo_vision
rm -rf "$out"
echo; echo "== data (2000 train / 500 test PNGs) and the pretrained base"
.venv/bin/python scripts/demo_vision_data.py "$out" 2000 500
base=$out/base data=$out/data

common=(model="$base" train_file="$data/train.jsonl" eval_file="$data/test.jsonl"
        per_device_train_batch_size=32 num_train_epochs=3 warmup_ratio=0.1 logging_steps=20 eval_steps=0 seed=0)
declare -A method lr
method[VPT-deep]='{"peft_type": "VPT", "num_virtual_tokens": 10, "deep": true, "modules_to_save": ["classifier"]}'
lr[VPT-deep]=1e-2
method[AdaptFormer]='{"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 16, "scaling": 1.0, "modules_to_save": ["classifier"]}'
lr[AdaptFormer]=5e-3
method[LoRA]='{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["classifier"]}'
lr[LoRA]=5e-3

echo; echo "== before: the base with its untrained head"
before=$("$peft" eval "$base" --data "$data/test.jsonl" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["eval_accuracy"])')
echo "test accuracy $before"

rows=()
for m in VPT-deep AdaptFormer LoRA; do
  echo; echo "== peft train: $m (lr ${lr[$m]})"
  line=$("$peft" inspect "$base" --method "${method[$m]}" | grep -m1 "trainable params")
  echo "$line"
  start=$(date +%s)
  "$peft" train "${common[@]}" method="${method[$m]}" learning_rate="${lr[$m]}" output_dir="$out/$m" \
    2>&1 | tee "$out/$m.log" | grep -E "eval @|adapter written" || true
  secs=$(( $(date +%s) - start ))
  [ -f "$out/$m/adapter_model.safetensors" ] || { echo "training $m failed: $out/$m.log" >&2; exit 1; }
  acc=$("$peft" eval "$base" --data "$data/test.jsonl" --adapter "$out/$m" |
        .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["eval_accuracy"])')
  rows+=("$m"$'\t'"$line"$'\t'"$acc"$'\t'"$secs")
done

echo; echo "== Fashion-MNIST, 2000 training / 500 test images, 10 classes; before: test accuracy of the base"
echo "   with its untrained head; head only: that head trained alone on the frozen backbone (PyTorch)"
.venv/bin/python - "$before" "$out/linear_probe.json" "${rows[@]}" <<'EOF'
import json, re, sys
before, probe = float(sys.argv[1]), json.load(open(sys.argv[2]))
print(f"| {'method':<12} | {'trainable params':>16} | {'trainable %':>11} | {'before':>6} | {'head only':>9} | {'after':>5} | {'train s':>7} |")
print(f"|{'-' * 14}|{'-' * 18}|{'-' * 13}|{'-' * 8}|{'-' * 11}|{'-' * 7}|{'-' * 9}|")
for row in sys.argv[3:]:
    name, line, acc, secs = row.split("\t")
    t = re.search(r"trainable params: ([\d,]+)", line).group(1)
    pct = re.search(r"trainable%: ([\d.]+)", line).group(1)
    print(f"| {name:<12} | {t:>16} | {float(pct):>10.2f}% | {before:>6.3f} | {probe['test_accuracy']:>9.3f} | "
          f"{float(acc):>5.3f} | {secs:>7} |")
print(f"(head only: {probe['trainable']:,} of {probe['all']:,} parameters, "
      f"{100 * probe['trainable'] / probe['all']:.2f}%, 3 epochs, lr 1e-3)")
EOF
