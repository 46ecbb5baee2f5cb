"""QLoRA memory on a LLaMA-2-7B shape: 4-bit load and one training step, peak RSS.

Usage: python bench/qlora_memory_bench.py --peft build/peft [--dir /tmp/llama7b] [--hf] [--keep]

Writes a LLaMA-2-7B-shaped checkpoint (hidden 4096, 32 layers, 32 heads, MLP 11008, vocab
32000, untied; 6.74B parameters) with random bf16 weights as a sharded HF folder (about
13.5 GB; reused when --dir already holds it), then measures, each in its own process,
peak RSS (wait4) and wall time of:
  - `peft forward --load-in-4bit --dtype bfloat16` on 16 tokens (NF4, double quant): the
    load streams each tensor from the mmap and quantizes it, so the peak should stay
    near the 4-bit size (target <= 4.5 GB);
  - `peft train load_in_4bit=true precision=bf16 gradient_checkpointing=true`, one
    optimizer step of LoRA r=16 on q,k,v,o at batch 1 x 256 (target <= 6.5 GB);
  - with --hf, transformers + bitsandbytes (CPU) loading the same folder in 4-bit and
    running the same forward, for comparison.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SHAPE = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
             tie_word_embeddings=False, dtype="bfloat16")


def make_checkpoint(out, layers_per_shard=4):
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    if os.path.exists(os.path.join(out, "model.safetensors.index.json")):
        return
    os.makedirs(out, exist_ok=True)
    LlamaConfig(**SHAPE).save_pretrained(out)
    h, m, v, n = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"], SHAPE["num_hidden_layers"]
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    weight_map, shards = {}, []
    groups = [list(range(i, min(n, i + layers_per_shard))) for i in range(0, n, layers_per_shard)]
    for k, group in enumerate(groups + [None]):
        tensors = {}
        if group is None:
            tensors = {"model.embed_tokens.weight": rand(v, h), "lm_head.weight": rand(v, h),
                       "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
        else:
            for i in group:
                p = f"model.layers.{i}."
                for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    tensors[p + f"self_attn.{name}.weight"] = rand(h, h)
                tensors[p + "mlp.gate_proj.weight"] = rand(m, h)
                tensors[p + "mlp.up_proj.weight"] = rand(m, h)
                tensors[p + "mlp.down_proj.weight"] = rand(h, m)
                tensors[p + "input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
                tensors[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        name = f"model-{k + 1:05d}-of-{len(groups) + 1:05d}.safetensors"
        save_file(tensors, os.path.join(out, name), metadata={"format": "pt"})
        weight_map.update({key: name for key in tensors})
        print(f"  wrote {name}", flush=True)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def measured(cmd):
    """Runs cmd in its own process; returns (stdout, seconds, peak RSS bytes)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.communicate()[0]
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return out, seconds


def peak_of(cmd):
    # GNU time's %M is the peak RSS of the command alone, in KiB.
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        out, seconds = measured(["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd)
        return out, seconds, int(open(f.name).read().strip().splitlines()[-1]) * 1024


HF_FORWARD = r'''
import sys, torch, time
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
torch.set_num_threads(2)
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.bfloat16)
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], quantization_config=q, dtype=torch.bfloat16)
with torch.no_grad():
    m(torch.arange(1, 17).view(1, 16))
print("ok")
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "llama2_7b_shape"))
    ap.add_argument("--hf", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    args = ap.parse_args()
    print(f"checkpoint: {args.dir}", flush=True)
    make_checkpoint(args.dir)
    gb = 1e9
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "ids.json")
        json.dump([list(range(1, 17))], open(ids, "w"))
        _, s, peak = peak_of([args.peft, "forward", args.dir, "--ids", ids, "--out", os.path.join(tmp, "o.st"),
                              "--load-in-4bit", "--double-quant", "--dtype", "bfloat16", "--compute-dtype", "bfloat16"])
        print(f"ours  4-bit load + forward (16 tokens): peak RSS {peak / gb:.2f} GB, {s:.0f} s", flush=True)
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for i in range(2):
                f.write(json.dumps({"input_ids": [(7 * j + i) % 31999 + 1 for j in range(256)]}) + "\n")
        method = json.dumps({"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
        _, s, peak = peak_of([args.peft, "train", f"model={args.dir}", f"train_file={data}",
                              f"output_dir={os.path.join(tmp, 'run')}", "max_steps=1", "per_device_train_batch_size=1",
                              "max_length=256", "load_in_4bit=true", "double_quant=true", "precision=bf16",
                              "gradient_checkpointing=true", "progress=false", f"method={method}"])
        print(f"ours  QLoRA step (1 x 256, checkpointing): peak RSS {peak / gb:.2f} GB, {s:.0f} s", flush=True)
        if args.hf:
            _, s, peak = peak_of([sys.executable, "-c", HF_FORWARD, args.dir])
            print(f"HF+bnb 4-bit load + forward (16 tokens): peak RSS {peak / gb:.2f} GB, {s:.0f} s", flush=True)
    if not args.keep:
        import shutil
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
