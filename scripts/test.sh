#!/usr/bin/env bash
# Sets up (idempotent), builds, and runs every test. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
# The installed package: cmake --install to a scratch prefix, examples/ built against it
# with find_package(peft) (ctest's ecosystem.install_examples then runs them on a test model).
bash scripts/check_install.sh build
# Two tests at a time on CI's two cores, each on one intra-op thread: most of the suite's
# time is Python reference checks and process start-up, and two tests that each spin up
# two OpenMP threads on two cores slow each other down many times over.
# The job count comes first: GNU nproc honours OMP_NUM_THREADS, so counted after the export
# it says 1 and the suite ran one test at a time.
jobs="${CTEST_PARALLEL_LEVEL:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ $# -gt 0 ]; then  # the caller's selection, e.g. -L lora
  ctest --test-dir build --output-on-failure -j "$jobs" "$@"
  exit
fi
# The default suite, then the checks labelled slow (the 30-second fuzz runs, the
# 135M-parameter SmolLM2 model): `ctest -LE slow` stays the quick everyday run.
ctest --test-dir build --output-on-failure -j "$jobs" -LE slow
ctest --test-dir build --output-on-failure -j "$jobs" -L slow
