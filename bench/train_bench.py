"""LoRA training throughput and peak memory: `peft train` vs HF Trainer + PEFT, side by side.

Usage: python bench/train_bench.py --peft build/peft [--steps 6] [--seq 128] [--batch 4] [--shapes gpt2,llama]

For each model shape (random weights made with transformers' config classes, saved as a
HF folder), both trainers run the same LoRA config (r=8, attention projections), data
(random token ids, fixed length), batch, sequence length and thread count, in separate
processes. Tokens/s is measured over the steps after the first (warm-up); peak memory is
the process's max RSS. LoRA training costs about 4 x N FLOPs per token, N the parameters
that take part in matrix products (all but the input and position embeddings; a tied
lm_head counts): forward 2N, backward through activations 2N, frozen weights get no
gradient. The fraction of the machine's measured float32 matmul peak is printed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HF_SCRIPT = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[5]))
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, TrainerCallback
from peft import LoraConfig, get_peft_model
model_dir, data, steps, targets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
batch = int(sys.argv[6])
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
rows = [json.loads(l)["input_ids"] for l in open(data)]
class DS(torch.utils.data.Dataset):
    def __len__(self): return len(rows)
    def __getitem__(self, i):
        ids = torch.tensor(rows[i]); return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
times = []
class T(TrainerCallback):
    def on_step_end(self, args, state, control, **kw): times.append(time.perf_counter())
args = TrainingArguments(output_dir=sys.argv[7], per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                         remove_unused_columns=False, disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=DS(), callbacks=[T()]).train()
print(json.dumps({"step_times": [b - a for a, b in zip(times, times[1:])]}))
'''

SHAPES = {
    # ~124M parameters, GPT-2 small.
    "gpt2": ("GPT2Config", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12), "c_attn"),
    # ~110M parameters, LLaMA-shaped.
    "llama": ("LlamaConfig", dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024),
              "q_proj,v_proj"),
}


def make_model(shape, out):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    cls, kwargs, _ = SHAPES[shape]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(getattr(transformers, cls)(**kwargs))
    model.save_pretrained(out)
    total = sum(p.numel() for p in model.parameters())
    embeds = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    lookup_only = sum(e.weight.numel() for e in embeds)
    out_emb = model.get_output_embeddings()
    if any(out_emb.weight is e.weight for e in embeds):  # tied: the matrix is also lm_head
        lookup_only -= out_emb.weight.numel()
    return total, total - lookup_only


def matmul_peak(threads):
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    n = 10
    for _ in range(n):
        a @ b
    return 2 * 2048 ** 3 * n / (time.perf_counter() - t)


def timed(cmd):
    """Runs cmd under /usr/bin/time -f %M to get its own peak RSS (KiB)."""
    p = subprocess.run(["/usr/bin/time", "-f", "PEAKRSS %M"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + p.stdout[-2000:] + p.stderr[-3000:])
    peak = int([l for l in p.stderr.splitlines() if l.startswith("PEAKRSS")][-1].split()[1])
    return p.stdout, p.stderr, peak * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--shapes", default="gpt2,llama")
    args = ap.parse_args()
    peak = matmul_peak(args.threads)
    print(f"machine: {os.cpu_count()} cores; float32 matmul peak {peak / 1e9:.1f} GFLOP/s ({args.threads} threads)")
    print(f"batch {args.batch} x seq {args.seq}, {args.steps} steps (first is warm-up), LoRA r=8\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        import random
        rng = random.Random(0)
        data = os.path.join(tmp, "data.jsonl")
        with open(data, "w") as f:
            for _ in range(args.batch * args.steps):
                f.write(json.dumps({"input_ids": [rng.randint(1, 31999) for _ in range(args.seq)]}) + "\n")
        for shape in args.shapes.split(","):
            model_dir = os.path.join(tmp, shape)
            n_params, n_matmul = make_model(shape, model_dir)
            targets = SHAPES[shape][2]
            tokens = args.batch * args.seq
            out, _, hf_peak = timed([sys.executable, "-c", HF_SCRIPT, model_dir, data, str(args.steps), targets,
                                     str(args.threads), str(args.batch), os.path.join(tmp, "hf_out")])
            hf_times = json.loads(out.strip().splitlines()[-1])["step_times"]
            hf_tps = tokens * len(hf_times) / sum(hf_times)
            method = json.dumps({"r": 8, "lora_alpha": 16, "target_modules": targets.split(",")})
            ours_out = os.path.join(tmp, "ours_" + shape)
            _, _, our_peak = timed([args.peft, "train", f"model={model_dir}", f"train_file={data}",
                                    f"output_dir={ours_out}", f"max_steps={args.steps}", "shuffle=false",
                                    f"per_device_train_batch_size={args.batch}", f"max_length={args.seq}",
                                    "learning_rate=1e-4", "progress=false", f"method={method}"])
            logs = [json.loads(l) for l in open(os.path.join(ours_out, "metrics.jsonl")) if '"loss"' in l]
            our_tps = tokens * (len(logs) - 1) / sum(tokens / l["tokens_per_second"] for l in logs[1:])
            flops = 4 * n_matmul
            rows.append((shape, n_params, hf_tps, our_tps, hf_peak, our_peak, flops * our_tps / peak))
    print(f"{'model':8} {'params':>8} {'HF tok/s':>9} {'ours tok/s':>10} {'ratio':>6} {'HF peak MiB':>11} "
          f"{'ours peak MiB':>13} {'mem ratio':>9} {'ours % of peak':>14}")
    for shape, n, hf, ours, hfm, om, frac in rows:
        print(f"{shape:8} {n / 1e6:7.1f}M {hf:9.1f} {ours:10.1f} {ours / hf:6.2f} {hfm / 2**20:11.0f} {om / 2**20:13.0f} "
              f"{om / hfm:9.2f} {100 * frac:13.1f}%")


if __name__ == "__main__":
    main()
