"""Decode speed: `peft generate` vs HF `generate`, base model, unmerged LoRA and merged LoRA.

Usage: python bench/generate_bench.py --peft build/peft [--shape llama] [--layers N]
         [--batches 1,16] [--prompt 32] [--new 64] [--threads 2] [--quant nf4]

The model (random weights, a shape of bench/train_bench.py) gets a LoRA adapter (r=16 on
q,k,v,o, random non-zero B so it changes the outputs), made with HF PEFT. Greedy, fp32,
every sequence generating exactly --new tokens (no EOS). Ours: wall time of `peft
generate` with --new tokens minus the same command with 1 token, so model loading and the
prompt's forward cancel out; HF: the time of `model.generate` itself, the same
difference. Decode tokens/s = batch x (new - 1) / time. Each run in its own process.

--quant nf4: both on a 4-bit NF4 base (blocksize 64, no double quantization) computing in
bf16, the rest of the model bf16: ours `--load-in-4bit --compute-dtype bfloat16 --dtype
bfloat16`, HF through bitsandbytes' CPU backend with the same BitsAndBytesConfig; base and
unmerged LoRA only (a merge into a 4-bit base is not a plain 4-bit model).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_bench import make_model  # noqa: E402

HF_SCRIPT = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from transformers import AutoModelForCausalLM
model_dir, ids_file, mode, new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
adapter, quant = sys.argv[6], sys.argv[7]
if quant == "none":
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
else:
    from transformers import BitsAndBytesConfig
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_compute_dtype=torch.bfloat16))
if mode != "base":
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, adapter)
    if mode == "merged":
        model = model.merge_and_unload()
model.eval()
ids = torch.tensor(json.load(open(ids_file)))
def run(n):
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + n
    return time.perf_counter() - t
run(2)
print(json.dumps({"seconds": min(run(new) for _ in range(2)) - min(run(1) for _ in range(2))}))
'''


def make_adapter(model_dir, out):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                            task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    peft.save_pretrained(out)


def ours_seconds(peft, model_dir, ids, mode, adapter, n, threads, quant):
    cmd = [peft, "generate", model_dir, "--ids", ids, "--no-eos", "--max-new-tokens", str(n)]
    if quant != "none":
        cmd += ["--load-in-4bit", "--quant-type", quant, "--compute-dtype", "bfloat16", "--dtype", "bfloat16"]
    if mode != "base":
        cmd += ["--adapter", adapter]
    if mode == "merged":
        cmd.append("--merged")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--shape", default="llama")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quant", choices=("none", "nf4", "fp4"), default="none")
    args = ap.parse_args()
    import random
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, adapter = os.path.join(tmp, "model"), os.path.join(tmp, "adapter")
        make_model(args.shape, model_dir, args.layers)
        make_adapter(model_dir, adapter)
        precision = "fp32" if args.quant == "none" else f"{args.quant} base, bf16 compute"
        print(f"{args.shape}{f' ({args.layers} layers)' if args.layers else ''}, {precision}, prompt {args.prompt}, "
              f"{args.new} new tokens, greedy, {args.threads} threads; decode tokens/s\n")
        print(f"{'batch':>5} {'mode':>8} {'HF':>9} {'ours':>9} {'ours/HF':>8} {'ours vs base':>13}")
        for batch in [int(b) for b in args.batches.split(",")]:
            ids = os.path.join(tmp, f"ids{batch}.json")
            json.dump([[rng.randint(1, 31999) for _ in range(args.prompt)] for _ in range(batch)], open(ids, "w"))
            base_ours = None
            for mode in ("base", "unmerged") + (("merged",) if args.quant == "none" else ()):
                out = subprocess.run([sys.executable, "-c", HF_SCRIPT, model_dir, ids, mode, str(args.threads),
                                      str(args.new), adapter, args.quant], check=True, capture_output=True,
                                     text=True).stdout
                hf = batch * (args.new - 1) / json.loads(out.strip().splitlines()[-1])["seconds"]
                secs = [min(ours_seconds(args.peft, model_dir, ids, mode, adapter, n, args.threads, args.quant)
                             for _ in range(2)) for n in (args.new, 1)]
                ours = batch * (args.new - 1) / (secs[0] - secs[1])
                base_ours = base_ours or ours
                print(f"{batch:5} {mode:>8} {hf:9.1f} {ours:9.1f} {ours / hf:8.2f} {ours / base_ours:13.2f}", flush=True)


if __name__ == "__main__":
    main()
