#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a GPU machine that cannot build peft-cpp
# itself (no -dev packages there): the binaries of BUILD_DIR (built against the same torch
# version as that machine's), the shared libraries they need beyond glibc, libstdc++ and
# torch, and the ctest fixtures of FIXTURE_BUILD (a build folder whose suite has run).
#   bash scripts/gpu_bundle.sh BUILD_DIR FIXTURE_BUILD OUT_DIR
# Then, on the GPU machine, from the repository root:
#   PEFT_RUNTIME_LIBS=OUT_DIR/lib PEFT_FIXTURES=OUT_DIR/fix bash scripts/gpu_check.sh OUT_DIR/bin
# docs/GPU.md gives the whole recipe.
set -euo pipefail
build=${1:?usage: gpu_bundle.sh BUILD_DIR FIXTURE_BUILD OUT_DIR}
fixtures=${2:?fixture build folder}
out=${3:?output folder}
mkdir -p "$out/bin" "$out/lib" "$out/fix/parity" "$out/fix/parity_adapters" "$out/fix/parity_train"
for f in peft libpeft.so libpeft_cuda.so libpeft_nccl.so tests/test_quant_cuda tests/test_distributed \
         bench_quant_gemv_cuda; do
  [ -e "$build/$f" ] || { echo "gpu_bundle: $build/$f missing (a build with nvcc and a CUDA torch makes it)" >&2; exit 1; }
  cp "$build/$f" "$out/bin/"
done
strip --strip-unneeded "$out"/bin/*
# Libraries an Ubuntu image with Python has anyway (and Python itself loads), and the CUDA
# libraries that machine's torch brings, stay behind.
ldd "$build/peft" "$build/libpeft.so" | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/usr/local/cuda|/(libcu[a-z]*|libnv[A-Za-z]*|libnccl|libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libutil|libz|libssl|libcrypto|libpcre2-8)\.so|torch|nvidia|libpeft|libgomp' |
  xargs -r -I{} cp -L {} "$out/lib/"
for m in gpt2 gpt2_odd llama_mha llama_gqa_tied llama3_rope mistral qwen2; do
  cp -r "$fixtures/parity/$m" "$out/fix/parity/"
done
for c in lora_dora lora_gpt2 lora_all_linear_bias lora_layers; do
  cp -r "$fixtures/parity_adapters/$c" "$out/fix/parity_adapters/"
done
cp -r "$fixtures/parity_qlora" "$out/fix/"
cp -r "$fixtures/parity_train/initial_adapter" "$fixtures/parity_train/losses.json" "$out/fix/parity_train/"
cp "$fixtures/parity_train_data.jsonl" "$out/fix/"
du -sh "$out"
