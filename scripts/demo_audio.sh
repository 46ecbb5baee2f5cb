#!/usr/bin/env bash
# The speech example: adapt a small Whisper-shaped recognizer to new accents with audio
# adapters and LoRA, and measure the word error rate before and after (no download).
# Spoken digits come from Debian's espeak-ng (scripts/demo_audio_data.py): the base is a
# random-weight WhisperForConditionalGeneration (d_model 96, 2 + 2 layers, a byte-level BPE
# Whisper tokenizer, 2 s log-mel windows) pretrained in PyTorch on American English voices
# only (scripts/demo_whisper_base.py). Each method then trains with `peft train` on three
# British accents (Southern, Scottish, RP) at one pitch, on WAV files peft decodes,
# resamples and turns into log-mel features itself, and `peft transcribe` measures the WER
# on the same accents at another pitch (recordings the adapter never heard) and on a
# Caribbean accent (en-029) that neither base nor adapter heard. A few minutes on 2 CPU cores.
# BUILD=folder uses another build folder than build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${BUILD:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target peft_cli
peft="$build/peft"
out=$build/demo_audio
rm -rf "$out"
echo; echo "== data: spoken digits by espeak-ng (22050 Hz WAV)"
.venv/bin/python scripts/demo_audio_data.py "$out/digits"
echo; echo "== the base: pretrained on American English only (PyTorch, about 2 minutes)"
.venv/bin/python scripts/demo_whisper_base.py "$out/digits" "$out/base"
base=$out/base data=$out/digits

wer() {  # wer ADAPTER_DIR|- DATA.jsonl: the WER (0-1) of `peft transcribe`
  local adapter=()
  [ "$1" = - ] || adapter=(--adapter "$1")
  "$peft" transcribe "$base" "${adapter[@]}" --data "$2" --batch-size 32 --metrics "$out/wer.json" > /dev/null 2>&1
  .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["wer"])' "$out/wer.json"
}

echo; echo "== before: the base"
before_new=$(wer - "$data/adapt_eval.jsonl") before_unheard=$(wer - "$data/eval.jsonl")
echo "WER: British accents $before_new, Caribbean accent $before_unheard"

common=(model="$base" train_file="$data/adapt_train.jsonl" per_device_train_batch_size=16 num_train_epochs=20
        logging_steps=50 seed=1)
declare -A method lr
method[Houlsby]='{"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "reduction_factor": 4}'
lr[Houlsby]=5e-3
method[Pfeiffer]='{"peft_type": "BOTTLENECK", "adapter_type": "pfeiffer", "reduction_factor": 4}'
lr[Pfeiffer]=5e-3
method[LoRA]='{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}'
lr[LoRA]=1e-2

rows=()
for m in Houlsby Pfeiffer LoRA; do
  echo; echo "== peft train: $m (lr ${lr[$m]})"
  line=$("$peft" inspect "$base" --method "${method[$m]}" | grep -m1 "trainable params")
  echo "$line"
  start=$(date +%s)
  "$peft" train "${common[@]}" method="${method[$m]}" learning_rate="${lr[$m]}" output_dir="$out/$m" \
    2>&1 | tee "$out/$m.log" | grep -E "adapter written" || true
  secs=$(( $(date +%s) - start ))
  [ -f "$out/$m/adapter_model.safetensors" ] || { echo "training $m failed: $out/$m.log" >&2; exit 1; }
  rows+=("$m"$'\t'"$line"$'\t'"$(wer "$out/$m" "$data/adapt_eval.jsonl")"$'\t'"$(wer "$out/$m" "$data/eval.jsonl")"$'\t'"$secs")
done

echo; echo "== spoken digits, word error rate of the base (before) and with each adapter (after):"
echo "   British accents at an unheard pitch (180 utterances), and the unheard Caribbean accent (120)"
.venv/bin/python - "$before_new" "$before_unheard" "${rows[@]}" <<'PY'
import re, sys
b_new, b_unheard = float(sys.argv[1]), float(sys.argv[2])
print(f"| {'method':<9} | {'trainable params':>16} | {'trainable %':>11} | {'British before':>14} | {'after':>6} "
      f"| {'Caribbean before':>16} | {'after':>6} | {'train s':>7} |")
print(f"|{'-' * 11}|{'-' * 18}|{'-' * 13}|{'-' * 16}|{'-' * 8}|{'-' * 18}|{'-' * 8}|{'-' * 9}|")
for row in sys.argv[3:]:
    name, line, new, unheard, secs = row.split("\t")
    t = re.search(r"trainable params: ([\d,]+)", line).group(1)
    pct = re.search(r"trainable%: ([\d.]+)", line).group(1)
    print(f"| {name:<9} | {t:>16} | {float(pct):>10.2f}% | {100 * b_new:>13.1f}% | {100 * float(new):>5.1f}% "
          f"| {100 * b_unheard:>15.1f}% | {100 * float(unheard):>5.1f}% | {secs:>7} |")
PY
