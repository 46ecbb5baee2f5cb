"""LoRA training throughput on CUDA: `peft train device=cuda` vs HF Trainer + PEFT, same model, data and GPU.

Usage: python bench/train_bench_cuda.py PEFT_BIN [--shapes llama3_2_1b,llama3_1_8b] [--steps 12] [--batch 8]
           [--seq 2048] [--precisions bf16] [--checkpointing llama3_1_8b] [--qlora] [--offload] [--layers N]
  e.g. python bench/train_bench_cuda.py build/peft --shapes llama3_2_1b --batch 8 --seq 2048

Models (random weights, train_bench.py's shapes, made on the GPU and saved in the run's
precision) and random-token data are made in a temp folder. HF loads the model in that
precision too (bf16 base, PEFT's fp32 adapter weights: its autocast_adapter_dtype default)
with SDPA attention and Trainer(bf16=True), the strongest plain HF setup; ours runs
precision=bf16 (bf16 base stored once, fp32 adapter master weights). Tokens/s exclude the
first step. Memory: nvidia-smi's peak while each run lives (driver context included) and,
for HF, torch's peak allocation. MFU counts 4 N FLOPs per token (N = the parameters of
the matrix products: forward, and backward to the inputs; frozen weights get no gradient)
plus attention's 12 L d T (PaLM's count), against the measured 8192^3 bf16 matmul rate and
the H100/H200 dense bf16 figure of 989 TFLOP/s. --qlora adds ours with load_in_4bit
(NF4, bf16 compute), which HF can only match with bitsandbytes' CUDA build.
Results: docs/BENCHMARKS.md."""
import argparse, json, os, random, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_bench import SHAPES, make_model  # noqa: E402

HF = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, TrainerCallback
from peft import LoraConfig, get_peft_model
model_dir, data, steps, targets, batch, out, prec, ckpt = sys.argv[1:9]
steps, batch, targets, ckpt = int(steps), int(batch), targets.split(","), ckpt == "1"
dtype = torch.bfloat16 if prec == "bf16" else torch.float32
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").cuda()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
rows = [json.loads(l)["input_ids"] for l in open(data)]
class DS(torch.utils.data.Dataset):
    def __len__(self): return len(rows)
    def __getitem__(self, i):
        ids = torch.tensor(rows[i]); return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
times, losses = [], []
class T(TrainerCallback):
    def on_step_end(self, args, state, control, **kw): torch.cuda.synchronize(); times.append(time.perf_counter())
    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs: losses.append(logs["loss"])
args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0, bf16=(prec == "bf16"),
                         remove_unused_columns=False, disable_tqdm=True, gradient_checkpointing=ckpt,
                         gradient_checkpointing_kwargs={"use_reentrant": False})
Trainer(model=model, args=args, train_dataset=DS(), callbacks=[T()]).train()
print(json.dumps({"step_times": [b - a for a, b in zip(times, times[1:])], "peak_alloc": torch.cuda.max_memory_allocated(),
                  "losses": losses}))
'''


def gpu_mem_poll(stop, peak):
    while not stop.is_set():
        try:
            v = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                   capture_output=True, text=True).stdout.split()[0])
            peak[0] = max(peak[0], v)
        except Exception:
            pass
        time.sleep(0.05)


def run(cmd):
    stop, peak = threading.Event(), [0]
    th = threading.Thread(target=gpu_mem_poll, args=(stop, peak))
    th.start()
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    stop.set()
    th.join()
    if p.returncode != 0:
        raise RuntimeError(" ".join(cmd[:3]) + "\n" + p.stdout[-2000:] + p.stderr[-3000:])
    return p.stdout, peak[0], time.time() - t


def bf16_peak():
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * 10 / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peft_bin")
    ap.add_argument("--shapes", default="llama3_2_1b")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", default="8", help="one batch size, or shape=size pairs: llama3_2_1b=8,llama3_1_8b=2")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--checkpointing", default="", help="shapes trained with gradient checkpointing (both sides)")
    ap.add_argument("--layers", type=int, default=None, help="override the layer count (quick runs)")
    ap.add_argument("--qlora", action="store_true", help="also ours with load_in_4bit (NF4, bf16 compute)")
    ap.add_argument("--offload", action="store_true",
                    help="with checkpointing, also ours 4-bit with gradient_checkpointing_offload (issue 12's 8 GB)")
    ap.add_argument("--skip-hf", action="store_true")
    a = ap.parse_args()
    batches = {}
    for item in a.batch.split(","):
        k, _, v = item.rpartition("=")
        batches[k or "*"] = int(v)
    ckpt_shapes = set(filter(None, a.checkpointing.split(",")))
    measured = bf16_peak()
    print(f"seq {a.seq}, {a.steps} steps (first excluded), LoRA r=8, CUDA; 8192^3 bf16 matmul {measured / 1e12:.0f} TFLOP/s",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in a.shapes.split(","):
            batch = batches.get(shape, batches.get("*", 8))
            ckpt = shape in ckpt_shapes
            rng = random.Random(0)
            data = os.path.join(tmp, f"data_{shape}.jsonl")
            with open(data, "w") as f:
                for _ in range(batch * a.steps):
                    f.write(json.dumps({"input_ids": [rng.randint(1, 31999) for _ in range(a.seq)]}) + "\n")
            for prec in a.precisions.split(","):
                import torch
                md = os.path.join(tmp, f"{shape}_{prec}")
                t0 = time.time()
                _, n_mm, attn = make_model(shape, md, layers=a.layers, device="cuda",
                                           dtype=torch.bfloat16 if prec == "bf16" else torch.float32)
                torch.cuda.empty_cache()
                flops_tok = 4 * n_mm + attn * a.seq
                tokens = batch * a.seq
                targets = SHAPES[shape][2]
                print(f"{shape}: {n_mm / 1e9:.2f}B matmul params, batch {batch} x {a.seq}, {prec}, "
                      f"checkpointing {ckpt}; model made in {time.time() - t0:.0f}s", flush=True)

                def report(name, tps, mem, wall, extra=""):
                    mfu = tps * flops_tok
                    print(f"  {name:10s} {tps:9.0f} tok/s  {mfu / 1e12:6.1f} TFLOP/s = {100 * mfu / 989e12:5.1f}% of 989 "
                          f"({100 * mfu / measured:5.1f}% of measured)  GPU peak {mem} MiB  wall {wall:.0f}s {extra}",
                          flush=True)

                hf_tps = None
                if not a.skip_hf:
                    out, hf_mem, hf_wall = run([sys.executable, "-c", HF, md, data, str(a.steps), targets, str(batch),
                                                os.path.join(tmp, "hf"), prec, "1" if ckpt else "0"])
                    r = json.loads(out.strip().splitlines()[-1])
                    hf_tps = tokens * len(r["step_times"]) / sum(r["step_times"])
                    report("HF", hf_tps, hf_mem, hf_wall,
                           f"(torch peak alloc {r['peak_alloc'] / 2**20:.0f} MiB; loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f})")
                four_bit = ["load_in_4bit=true", "compute_dtype=bfloat16"]
                modes = [("ours", [])] + ([("ours 4bit", four_bit)] if a.qlora else []) + (
                    [("ours 4bit offload", four_bit + ["gradient_checkpointing_offload=true"])]
                    if a.qlora and a.offload and ckpt else [])
                for name, extra in modes:
                    od = os.path.join(tmp, f"ours_{shape}_{prec}_{len(extra)}")
                    method = json.dumps({"r": 8, "lora_alpha": 16, "target_modules": targets.split(",")})
                    _, our_mem, our_wall = run([a.peft_bin, "train", f"model={md}", f"train_file={data}",
                                                f"output_dir={od}", f"max_steps={a.steps}", "shuffle=false",
                                                f"per_device_train_batch_size={batch}", f"max_length={a.seq}",
                                                "learning_rate=1e-4", "progress=false", f"method={method}",
                                                "device=cuda", f"precision={prec}",
                                                f"gradient_checkpointing={'true' if ckpt else 'false'}"] + extra)
                    logs = [json.loads(l) for l in open(os.path.join(od, "metrics.jsonl")) if '"loss"' in l]
                    tps = tokens * (len(logs) - 1) / sum(tokens / l["tokens_per_second"] for l in logs[1:])
                    ratio = f"ratio {tps / hf_tps:.2f}x HF" if hf_tps else ""
                    report(name, tps, our_mem, our_wall,
                           f"{ratio}; loss {logs[0]['loss']:.4f} -> {logs[-1]['loss']:.4f}")
                subprocess.run(["rm", "-rf", md])


if __name__ == "__main__":
    main()
