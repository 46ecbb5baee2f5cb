"""LoRA training throughput and peak memory: `peft train` vs HF Trainer + PEFT, side by side.

Usage: python bench/train_bench.py --peft build/peft [--steps 6] [--seq 128] [--batch 4] [--shapes gpt2,llama]
         [--precisions fp32,bf16] [--layers N] [--quant nf4|fp4] [--checkpoint-every K]

Shapes (random weights): gpt2 (124M, tied), llama (134M, untied), llama_tied, smollm2_360m
(960 wide, GQA 15/5, vocab 49,152, tied), qwen2_5_0_5b (896 wide, GQA 14/2, vocab 151,936,
tied), llama3_2_1b (2048 wide, GQA 32/8, vocab 128,256, tied). --layers N keeps each
shape's widths and vocabulary but uses N layers (the big shapes take minutes per step on
2 cores at full depth).

For each model shape (random weights made with transformers' config classes, saved as a
HF folder), both trainers run the same LoRA config (r=8, attention projections), data
(random token ids, fixed length), batch, sequence length and thread count, in separate
processes. Tokens/s is measured over the steps after the first (warm-up); peak memory is
the process's max RSS. LoRA training costs about 4 x N FLOPs per token, N the parameters
that take part in matrix products (all but the input and position embeddings; a tied
lm_head counts): forward 2N, backward through activations 2N, frozen weights get no
gradient; attention adds 12 x layers x hidden x seq. The fraction of the machine's
measured matmul peak for the run's precision (fp32 or bf16) is printed. HF runs with
`bf16=True` (CPU autocast) for bf16; ours with precision=bf16.

--checkpoint-every K turns gradient checkpointing on: ours recomputes every K-th block
(gradient_checkpointing_every=K; 1: all), HF every block (its only mode; non-reentrant).
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
bf16 = sys.argv[8] == "bf16"
quant = {}
if sys.argv[9] != "none":  # QLoRA: bitsandbytes 4-bit base (its CPU backend)
    from transformers import BitsAndBytesConfig
    quant["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=sys.argv[9],
                                                      bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa", **quant)
r = int(sys.argv[11]) if len(sys.argv) > 11 else 8  # bench/ddp_bench.py's --r
model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"))
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
                         remove_unused_columns=False, disable_tqdm=True, bf16=bf16,
                         gradient_checkpointing=sys.argv[10] != "0",
                         gradient_checkpointing_kwargs={"use_reentrant": False})
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
    "llama_tied": ("LlamaConfig", dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                       num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                                       tie_word_embeddings=True), "q_proj,v_proj"),
    # SmolLM2-360M: tied, GQA 15/5, 49k vocabulary.
    "smollm2_360m": ("LlamaConfig", dict(vocab_size=49152, hidden_size=960, intermediate_size=2560,
                                         num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                                         max_position_embeddings=2048, tie_word_embeddings=True), "q_proj,v_proj"),
    # Qwen2.5-0.5B: tied, GQA 14/2, q/k/v biases, 152k vocabulary.
    "qwen2_5_0_5b": ("Qwen2Config", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                         max_position_embeddings=2048, tie_word_embeddings=True), "q_proj,v_proj"),
    # Llama-3.2-1B: tied, GQA 32/8, 128k vocabulary.
    "llama3_2_1b": ("LlamaConfig", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                        num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                        max_position_embeddings=2048, tie_word_embeddings=True,
                                        rope_theta=500000.0), "q_proj,v_proj"),
    # Llama-3.1-8B: untied, GQA 32/8, 128k vocabulary (GPU benchmarks).
    "llama3_1_8b": ("LlamaConfig", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                        max_position_embeddings=8192, tie_word_embeddings=False,
                                        rope_theta=500000.0), "q_proj,v_proj"),
}


def make_model(shape, out, layers=None, device="cpu", dtype=None):
    """Random weights (seed 0), saved to `out`; initialised on `device` (a GPU makes an 8B
    shape in seconds) and saved in `dtype` (default fp32)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    cls, kwargs, _ = SHAPES[shape]
    kwargs = dict(kwargs)
    if layers:
        kwargs["n_layer" if cls == "GPT2Config" else "num_hidden_layers"] = layers
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(getattr(transformers, cls)(**kwargs), dtype=dtype or torch.float32)
    model.save_pretrained(out)
    total = sum(p.numel() for p in model.parameters())
    embeds = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    lookup_only = sum(e.weight.numel() for e in embeds)
    out_emb = model.get_output_embeddings()
    if any(out_emb.weight is e.weight for e in embeds):  # tied: the matrix is also lm_head
        lookup_only -= out_emb.weight.numel()
    cfg = model.config
    # Attention score and value products, forward and backward, per token (PaLM's 12 * L * d * T).
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size
    return total, total - lookup_only, attn


def write_random_data(path, rows, seq):
    """`rows` lines of `seq` random token ids (seed 0), as JSONL; returns path."""
    import random
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"input_ids": [rng.randint(1, 31999) for _ in range(seq)]}) + "\n")
    return path


def matmul_peak(threads, dtype="fp32", size=2048, n=10):
    import torch
    torch.set_num_threads(threads)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
    for _ in range(3 if n > 1 else 1):
        a @ b
    t = time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * size ** 3 * n / (time.perf_counter() - t)


def bf16_is_fast(threads):
    """False on CPUs where ATen's bf16 GEMM takes its reference path (no AVX-512: ~1 GFLOP/s,
    where a 2048^3 product alone takes minutes); precision=bf16 then trains in fp32 here.
    Five timed products, not one: a single 0.1 ms product is at the mercy of a thread wake-up
    and once called this AVX-512 BF16 host slow."""
    return matmul_peak(threads, "bf16", 256, 5) > 0.25 * matmul_peak(threads, "fp32", 256, 5)


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
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--quant", choices=["none", "nf4", "fp4"], default="none",
                    help="QLoRA: both trainers on a 4-bit base (HF: bitsandbytes' CPU backend)")
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="gradient checkpointing: ours of every K-th block, HF of all (0: off)")
    args = ap.parse_args()
    fast_bf16 = bf16_is_fast(args.threads)
    peaks = {p: matmul_peak(args.threads, p) for p in (("fp32", "bf16") if fast_bf16 else ("fp32",))}
    if not fast_bf16:
        peaks["bf16"] = float("nan")
    flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n")[0] if os.path.exists("/proc/cpuinfo") else ""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores; AVX-512 {'avx512f' in flags}, AMX-BF16 {'amx_bf16' in flags}")
    print(f"matmul peak (2048^3, {args.threads} threads): fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, "
          + (f"bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s" if fast_bf16 else
             "bf16: no fast bf16 product on this CPU (ATen's reference GEMM); bf16 rows skipped "
             "(precision=bf16 computes in fp32 here, and HF's autocast would take hours)"))
    print(f"batch {args.batch} x seq {args.seq}, {args.steps} steps (first is warm-up), LoRA r=8"
          + (f", {args.layers} layers per shape" if args.layers else "")
          + (f", gradient checkpointing (ours every {args.checkpoint_every} blocks, HF all)"
             if args.checkpoint_every else "") + "\n")
    rows, sizes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_random_data(os.path.join(tmp, "data.jsonl"), args.batch * args.steps, args.seq)
        precisions = [p for p in args.precisions.split(",") if p != "bf16" or fast_bf16]
        for shape, precision in [(s, p) for s in args.shapes.split(",") for p in precisions]:
            model_dir = os.path.join(tmp, shape)
            if not os.path.isdir(model_dir):
                sizes[shape] = make_model(shape, model_dir, args.layers)
            n_params, n_matmul, attn_flops = sizes[shape]
            targets = SHAPES[shape][2]
            tokens = args.batch * args.seq
            out, _, hf_peak = timed([sys.executable, "-c", HF_SCRIPT, model_dir, data, str(args.steps), targets,
                                     str(args.threads), str(args.batch), os.path.join(tmp, "hf_out"), precision,
                                     args.quant, str(args.checkpoint_every)])
            hf_times = json.loads(out.strip().splitlines()[-1])["step_times"]
            hf_tps = tokens * len(hf_times) / sum(hf_times)
            method = json.dumps({"r": 8, "lora_alpha": 16, "target_modules": targets.split(",")})
            ours_out = os.path.join(tmp, f"ours_{shape}_{precision}")
            _, _, our_peak = timed([args.peft, "train", f"model={model_dir}", f"train_file={data}",
                                    f"output_dir={ours_out}", f"max_steps={args.steps}", "shuffle=false",
                                    f"per_device_train_batch_size={args.batch}", f"max_length={args.seq}",
                                    "learning_rate=1e-4", "progress=false", f"method={method}",
                                    f"precision={precision}"]
                                   + ([] if args.quant == "none" else ["load_in_4bit=true", f"quant_type={args.quant}"])
                                   + ([] if not args.checkpoint_every else
                                      ["gradient_checkpointing=true",
                                       f"gradient_checkpointing_every={args.checkpoint_every}"]))
            logs = [json.loads(l) for l in open(os.path.join(ours_out, "metrics.jsonl")) if '"loss"' in l]
            our_tps = tokens * (len(logs) - 1) / sum(tokens / l["tokens_per_second"] for l in logs[1:])
            flops = 4 * n_matmul + attn_flops * args.seq
            rows.append((shape, precision, n_params, hf_tps, our_tps, hf_peak, our_peak,
                         flops * our_tps / peaks[precision]))
            print(f"  {shape} {precision}: HF {hf_tps:.1f} tok/s, ours {our_tps:.1f}", flush=True)
    print(f"\n{'model':13} {'prec':4} {'params':>8} {'HF tok/s':>9} {'ours tok/s':>10} {'ratio':>6} {'HF peak MiB':>11} "
          f"{'ours peak MiB':>13} {'mem ratio':>9} {'ours % of peak':>14}")
    for shape, prec, n, hf, ours, hfm, om, frac in rows:
        print(f"{shape:13} {prec:4} {n / 1e6:7.1f}M {hf:9.1f} {ours:10.1f} {ours / hf:6.2f} {hfm / 2**20:11.0f} "
              f"{om / 2**20:13.0f} {om / hfm:9.2f} {100 * frac:13.1f}%")


if __name__ == "__main__":
    main()
