#!/usr/bin/env bash
# Checks the installed package: installs BUILD_DIR to a scratch prefix, builds examples/
# against it with find_package(peft) and a one-file program with pkg-config's flags. Given
# a causal LM folder (the tests' llama_mha), also runs the examples on it: training must
# lower the loss, and the saved adapter must generate what HF PEFT generates with it.
#   scripts/check_install.sh BUILD_DIR [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:?usage: scripts/check_install.sh BUILD_DIR [MODEL_DIR]}")
model=${2:-}
work=$build/install-check
prefix=$work/prefix
mkdir -p "$work"
say() { printf '[check_install] %s\n' "$*"; }

rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
say "installed to $prefix"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
for ex in train_lora generate_with_adapter; do
  cmake -S "examples/$ex" -B "$work/$ex" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" > "$work/$ex.configure.log" ||
    { cat "$work/$ex.configure.log"; exit 1; }
  cmake --build "$work/$ex" > "$work/$ex.build.log" || { cat "$work/$ex.build.log"; exit 1; }
done
say "examples built with find_package(peft)"

# pkg-config: a program that parses a safetensors header (no LibTorch headers to compile).
cat > "$work/pc_check.cpp" <<'CPP'
#include <peft/safetensors_header.h>
#include <cstring>
#include <iostream>
int main() {
  const char json[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  std::string file(8, '\0');
  const uint64_t n = sizeof(json) - 1;
  std::memcpy(file.data(), &n, 8);
  file += json;
  file += std::string(8, '\0');
  const auto* bytes = reinterpret_cast<const uint8_t*>(file.data());
  std::cout << peft::parse_safetensors_header(bytes, file.size(), "check").tensors.size() << "\n";
}
CPP
flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs peft)
# shellcheck disable=SC2086
c++ -std=c++20 "$work/pc_check.cpp" -o "$work/pc_check" $flags
[ "$("$work/pc_check")" = 1 ] || { say "pkg-config program failed"; exit 1; }
say "pkg-config program built and ran"

[ -n "$model" ] || exit 0
adapter=$work/adapter
rm -rf "$adapter"
"$work/train_lora/train_lora" "$model" "$adapter" 12 | tee "$work/train.log"
awk '/^step /{ if (!first) first = $4; last = $4 } END {
       if (!(last < first)) { print "[check_install] loss did not fall: " first " -> " last; exit 1 } }' "$work/train.log"
"$work/generate_with_adapter/generate_with_adapter" "$model" "$adapter" "3 4 5" | tee "$work/generate.txt"
# The same adapter in HF PEFT (transformers' greedy generate, the same 16 new tokens).
"${PEFT_PYTHON:-.venv/bin/python}" - "$model" "$adapter" "$(cat "$work/generate.txt")" <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
model_dir, adapter_dir, ours = sys.argv[1:]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
eos = model.config.eos_token_id
out = model.generate(input_ids=torch.tensor([[3, 4, 5]]), attention_mask=torch.ones(1, 3, dtype=torch.long),
                     max_new_tokens=16, do_sample=False, eos_token_id=eos, pad_token_id=eos if eos is not None else 0)
theirs = " ".join(str(t) for t in out[0].tolist())
if theirs != ours:
    sys.exit(f"[check_install] generate_with_adapter gave {ours}, HF PEFT {theirs}")
print("[check_install] generation equals HF PEFT's")
PY
