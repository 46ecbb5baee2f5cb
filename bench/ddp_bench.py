"""Data-parallel LoRA training: `peft train --nproc N` vs HF Trainer + PEFT under torchrun (DDP over
Gloo), side by side, on the same model, data and global batch; plus ours with the gradient sums
started during the backward in buckets of --bucket-mb MiB, against ddp_bucket_cap_mb=65536
(a first bucket of 1 MiB, then everything else in one, started when the backward ends).

Usage: python bench/ddp_bench.py --peft build/peft [--nproc 2] [--shape llama] [--layers 4]
         [--steps 6] [--seq 128] [--batch 4] [--targets q_proj,v_proj] [--r 8] [--bucket-mb 1] [--repeats 3]

Each process runs with OMP_NUM_THREADS = cores / nproc, so N processes share the machine's cores
as one process with all of them would; the one-process runs of both trainers are printed too
(scaling). The global batch is --batch sequences per step: HF's per_device_train_batch_size is
batch / nproc, ours is batch (ours deals a micro-batch over the ranks; docs/TRAINING.md). Tokens/s
counts the global batch's tokens over the steps after the first (warm-up), from rank 0's step times.
Shapes are bench/train_bench.py's (random weights).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_bench import HF_SCRIPT, SHAPES, make_model, matmul_peak, write_random_data  # noqa: E402


def run(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + p.stdout[-2000:] + p.stderr[-3000:])
    return p.stdout


def hf_tps(args, nproc, model_dir, data, tmp, tokens):
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, os.cpu_count() // nproc)))
    script = os.path.join(tmp, "hf_train.py")
    with open(script, "w") as f:
        f.write(HF_SCRIPT)
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
              if nproc > 1 else [sys.executable])
    # train_bench's HF run: model, data, steps, targets, threads, per-device batch, output, precision,
    # quantization, checkpointing, r. Under torchrun every rank prints its step times (DDP's sums
    # keep the ranks' steps together).
    out = run(launch + [script, model_dir, data, str(args.steps), args.targets, env["OMP_NUM_THREADS"],
                        str(args.batch // nproc), os.path.join(tmp, "hf_out"), "fp32", "none", "0", str(args.r)], env)
    times = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])["step_times"]
    return tokens * len(times) / sum(times)


def ours_tps(args, nproc, model_dir, data, tmp, tokens, bucket_mb):
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, os.cpu_count() // nproc)))
    out_dir = os.path.join(tmp, f"ours_{nproc}_{bucket_mb}")
    method = json.dumps({"r": args.r, "lora_alpha": 2 * args.r, "target_modules": args.targets.split(",")})
    run([args.peft, "train", f"model={model_dir}", f"train_file={data}", f"output_dir={out_dir}",
         f"max_steps={args.steps}", "shuffle=false", f"per_device_train_batch_size={args.batch}",
         f"max_length={args.seq}", "learning_rate=1e-4", "progress=false", f"method={method}",
         f"ddp_bucket_cap_mb={bucket_mb}", "--overwrite"] + (["--nproc", str(nproc)] if nproc > 1 else []), env)
    logs = [json.loads(l) for l in open(os.path.join(out_dir, "metrics.jsonl")) if '"loss"' in l]
    return tokens * (len(logs) - 1) / sum(tokens / l["tokens_per_second"] for l in logs[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--shape", default="llama", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--bucket-mb", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.batch % args.nproc:
        sys.exit("--batch must be a multiple of --nproc (HF's per-device batch is batch / nproc)")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n")[0]
    print(f"matmul peak (2048^3, {os.cpu_count()} threads): fp32 {matmul_peak(os.cpu_count()) / 1e9:.1f} GFLOP/s, "
          f"bf16 {matmul_peak(os.cpu_count(), 'bf16') / 1e9:.1f} GFLOP/s; AVX-512 {'avx512f' in flags}, "
          f"AVX-512 BF16 {'avx512_bf16' in flags}, AMX-BF16 {'amx_bf16' in flags}")
    print(f"machine: {cpu}, {os.cpu_count()} cores; {args.shape} shape, {args.layers} layers, LoRA r={args.r} on "
          f"{args.targets}; global batch {args.batch} x {args.seq}, {args.steps} steps (first is warm-up), fp32")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_random_data(os.path.join(tmp, "data.jsonl"), args.batch * args.steps, args.seq)
        model_dir = os.path.join(tmp, "model")
        make_model(args.shape, model_dir, args.layers)
        tokens = args.batch * args.seq
        rows = []
        for n in (1, args.nproc):
            hf = hf_tps(args, n, model_dir, data, tmp, tokens)
            # The two bucket settings alternate, best of --repeats each: on a shared machine one run
            # of each differs by more than the setting does.
            ours, one_bucket = 0.0, float("nan") if n == 1 else 0.0
            for _ in range(args.repeats):
                ours = max(ours, ours_tps(args, n, model_dir, data, tmp, tokens, args.bucket_mb))
                if n > 1:
                    one_bucket = max(one_bucket, ours_tps(args, n, model_dir, data, tmp, tokens, 65536))
            rows.append((n, hf, ours, one_bucket))
            print(f"  {n} process(es): HF {hf:.1f} tok/s, ours {ours:.1f}, ours summed at the end {one_bucket:.1f}", flush=True)
    print(f"\n{'processes':>9} {'HF tok/s':>9} {'ours tok/s':>10} {'ours / HF':>9} {'ours, sum at end':>16} "
          f"{'buckets / end':>13}")
    for n, hf, ours, one in rows:
        print(f"{n:9d} {hf:9.1f} {ours:10.1f} {ours / hf:9.2f} {one:16.1f} {ours / one:13.2f}")


if __name__ == "__main__":
    main()
