"""llama.cpp itself on what `peft export-gguf` writes (make_gguf_export.py llamacpp).

For each adapter fixture: llama.cpp (llama-cpp-python) runs our f32 base GGUF with our
adapter GGUF (--lora), and our f32 GGUF of the model HF PEFT merged in float32; both must
give transformers + PEFT's logits, and the adapter must move them. Returns 77 (skipped)
when llama_cpp is not installed.
"""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

CASES = [  # adapter, base
    ("lora_all", "llama_untied"),
    ("lora_rslora", "llama_untied"),
    ("lora_rank_pattern", "llama_untied"),
    ("lora_embed_head", "llama_untied"),
    ("lora_f16", "llama_untied"),
    ("lora_tied", "llama_tied"),
    ("lora_mistral", "mistral_llama3"),
]
TOL = 2e-5  # relative to the largest logit (float32 throughout: about 1e-6 is seen)


def export(cli, src, out):
    r = subprocess.run([cli, "export-gguf", src, out, "--type", "f32"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("export-gguf %s failed: %s" % (src, r.stderr))


def llama_logits(model, ids, lora=None):
    import llama_cpp
    # A float32 KV cache (llama.cpp's default is f16) so that only the weights differ.
    llm = llama_cpp.Llama(model_path=model, lora_path=lora, logits_all=True, n_ctx=64, n_threads=2, n_gpu_layers=0,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return out


def hf_logits(base_dir, adapter_dir, ids, merged_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    x = torch.tensor([ids])
    with torch.no_grad():
        plain = base(x).logits[0].numpy()
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
        adapted = model(x).logits[0].numpy()
        merged = model.merge_and_unload()
    merged.save_pretrained(merged_dir)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(base_dir, f)):
            shutil.copy(os.path.join(base_dir, f), merged_dir)
    return plain, adapted


def check(cli, fixtures):
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama_cpp (llama-cpp-python) is not installed: skipped")
        return 77
    ok = True
    ids = [0, 17, 230, 45, 301, 99, 5, 412, 120, 64, 7, 250, 33, 580, 2, 150]
    with tempfile.TemporaryDirectory() as tmp:
        bases = {}
        for adapter, base in CASES:
            base_dir, adapter_dir = os.path.join(fixtures, base), os.path.join(fixtures, adapter)
            if base not in bases:
                bases[base] = os.path.join(tmp, base + ".gguf")
                export(cli, base_dir, bases[base])
            merged_dir = os.path.join(tmp, adapter + "_merged")
            plain, want = hf_logits(base_dir, adapter_dir, ids, merged_dir)
            lora_gguf, merged_gguf = os.path.join(tmp, adapter + ".gguf"), os.path.join(tmp, adapter + "_merged.gguf")
            export(cli, adapter_dir, lora_gguf)
            export(cli, merged_dir, merged_gguf)
            with_lora = llama_logits(bases[base], ids, lora_gguf)
            merged = llama_logits(merged_gguf, ids)
            scale = float(np.abs(want).max())
            d_lora = float(np.abs(with_lora - want).max()) / scale
            d_merged = float(np.abs(merged - want).max()) / scale
            moved = float(np.abs(want - plain).max()) / scale
            good = d_lora < TOL and d_merged < TOL and moved > 100 * TOL
            ok &= good
            print("%-18s base+lora vs PEFT %.2g, merged vs PEFT %.2g (relative); the adapter moves logits by %.2g %s"
                  % (adapter, d_lora, d_merged, moved, "" if good else "FAIL"))
    return 0 if ok else 1
