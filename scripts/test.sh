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
ctest --test-dir build --output-on-failure "$@"
