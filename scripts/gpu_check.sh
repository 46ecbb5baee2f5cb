#!/usr/bin/env bash
# The GPU checks and benchmarks, in one run on a machine with an NVIDIA GPU and a CUDA
# build of torch (its Python has transformers and peft). Two ways to run it:
#   - from a build made there:  bash scripts/gpu_check.sh build
#   - from binaries built elsewhere against the same torch version (a GPU machine that
#     lacks our -dev packages): DIR holds peft, libpeft.so, libpeft_cuda.so,
#     libpeft_nccl.so, test_quant_cuda, test_distributed and bench_quant_gemv_cuda,
#     LIBS the shared libraries they need beyond glibc and torch, FIX the ctest fixtures check_cuda.py reads:
#       PEFT_RUNTIME_LIBS=LIBS PEFT_FIXTURES=FIX bash scripts/gpu_check.sh DIR [steps...]
# Steps (default all): tests, parity, gemv, train1b, train8b, each under its own timeout
# (so that one hung step still leaves the others' figures). Logs go to $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:?usage: gpu_check.sh BIN_DIR [tests parity gemv train1b train8b]}"); shift
steps=${*:-tests parity gemv train1b train8b}
fix=${PEFT_FIXTURES:-$bin}
log=${OUT:-/tmp}/gpu_check.log
export PYTHONUNBUFFERED=1
torch_lib=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH="$bin:${PEFT_RUNTIME_LIBS:+$(realpath "$PEFT_RUNTIME_LIBS"):}$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
want=${PEFT_TORCH_VERSION:-}
# A test binary: in a build folder's tests/, or in a bundle's bin/ itself.
test_bin() { if [ -x "$bin/tests/$1" ]; then echo "$bin/tests/$1"; else echo "$bin/$1"; fi; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  if [ -n "$want" ] && ! python3 -c "import torch, sys; sys.exit(torch.__version__ != '$want')"; then
    echo "torch is not $want, which the binaries were built against"; exit 2
  fi
  missing=$(ldd "$bin/peft" "$bin/libpeft_cuda.so" "$bin/libpeft_nccl.so" | grep "not found")
  [ -z "$missing" ] || { echo "missing libraries: $missing"; exit 2; }
  for s in $steps; do
    echo "=== $s $(date +%T)"
    case $s in
      tests) timeout 120 "$(test_bin test_quant_cuda)" --gtest_brief=1
             # ProcessGroupNCCL from libpeft_nccl.so: a group of one on this GPU (two ranks
             # would need two GPUs; NCCL refuses two ranks on one).
             timeout 60 "$(test_bin test_distributed)" --gtest_filter='DataParallel.Nccl*' --gtest_brief=1 ;;
      parity) timeout 300 python3 tests/parity/check_cuda.py "$bin/peft" "$fix" ;;
      gemv) timeout 120 "$bin/bench_quant_gemv_cuda" ;;
      train1b) timeout 300 python3 bench/train_bench_cuda.py "$bin/peft" --shapes llama3_2_1b --batch 8 --seq 2048 \
                 --steps 12 --qlora ;;
      train8b) timeout 540 python3 bench/train_bench_cuda.py "$bin/peft" --shapes llama3_1_8b --batch 2 --seq 2048 \
                 --steps 8 --checkpointing llama3_1_8b --qlora --offload ;;
      *) echo "unknown step $s" ;;
    esac
    echo "=== $s exit $? $(date +%T)"
  done
} 2>&1 | tee "$log"
