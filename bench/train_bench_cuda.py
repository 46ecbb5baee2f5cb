"""LoRA training throughput on CUDA: `peft train device=cuda` vs HF Trainer + PEFT, same model, data and GPU.

Usage: python bench/train_bench_cuda.py PEFT_BIN [steps] [batch] [seq] [shapes] [precisions]
  e.g. python bench/train_bench_cuda.py build/peft 20 8 512 gpt2,llama fp32,bf16

Models (random weights, train_bench.py's shapes) and random-token data are made in a temp
folder. Tokens/s exclude the first step; GPU memory is nvidia-smi's peak while each run
lives (plus torch's peak allocation for HF). Results: docs/BENCHMARKS.md."""
import json, os, random, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_bench import SHAPES, make_model  # noqa: E402

HF = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, TrainerCallback
from peft import LoraConfig, get_peft_model
model_dir, data, steps, targets, batch, out, prec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), int(sys.argv[5]), sys.argv[6], sys.argv[7]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
rows = [json.loads(l)["input_ids"] for l in open(data)]
class DS(torch.utils.data.Dataset):
    def __len__(self): return len(rows)
    def __getitem__(self, i):
        ids = torch.tensor(rows[i]); return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
times = []
class T(TrainerCallback):
    def on_step_end(self, args, state, control, **kw): torch.cuda.synchronize(); times.append(time.perf_counter())
args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0, bf16=(prec == "bf16"),
                         remove_unused_columns=False, disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=DS(), callbacks=[T()]).train()
print(json.dumps({"step_times": [b - a for a, b in zip(times, times[1:])], "peak_alloc": torch.cuda.max_memory_allocated()}))
'''


def gpu_mem_poll(stop, peak):
    while not stop.is_set():
        try:
            v = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                   capture_output=True, text=True).stdout.split()[0])
            peak[0] = max(peak[0], v)
        except Exception:
            pass
        time.sleep(0.1)


def run(cmd):
    stop, peak = threading.Event(), [0]
    th = threading.Thread(target=gpu_mem_poll, args=(stop, peak)); th.start()
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    stop.set(); th.join()
    if p.returncode != 0:
        raise RuntimeError(" ".join(cmd[:3]) + "\n" + p.stdout[-2000:] + p.stderr[-3000:])
    return p.stdout, peak[0], time.time() - t


peft_bin = sys.argv[1]
steps, batch, seq = (int(x) for x in (sys.argv[2:5] if len(sys.argv) > 4 else (20, 8, 512)))
shapes = (sys.argv[5] if len(sys.argv) > 5 else "gpt2").split(",")
precs = (sys.argv[6] if len(sys.argv) > 6 else "fp32,bf16").split(",")
print(f"batch {batch} x seq {seq}, {steps} steps (first excluded), LoRA r=8, CUDA")
with tempfile.TemporaryDirectory() as tmp:
    rng = random.Random(0)
    data = os.path.join(tmp, "data.jsonl")
    with open(data, "w") as f:
        for _ in range(batch * steps):
            f.write(json.dumps({"input_ids": [rng.randint(1, 31999) for _ in range(seq)]}) + "\n")
    for shape in shapes:
        md = os.path.join(tmp, shape)
        n_params, n_mm = make_model(shape, md)
        targets = SHAPES[shape][2]
        tokens = batch * seq
        for prec in precs:
            out, hf_mem, hf_wall = run([sys.executable, "-c", HF, md, data, str(steps), targets, str(batch), os.path.join(tmp, "hf"), prec])
            r = json.loads(out.strip().splitlines()[-1])
            hf_tps = tokens * len(r["step_times"]) / sum(r["step_times"])
            od = os.path.join(tmp, f"ours_{shape}_{prec}")
            method = json.dumps({"r": 8, "lora_alpha": 16, "target_modules": targets.split(",")})
            _, our_mem, our_wall = run([peft_bin, "train", f"model={md}", f"train_file={data}", f"output_dir={od}",
                                        f"max_steps={steps}", "shuffle=false", f"per_device_train_batch_size={batch}",
                                        f"max_length={seq}", "learning_rate=1e-4", "progress=false", f"method={method}",
                                        "device=cuda", f"precision={prec}"])
            logs = [json.loads(l) for l in open(os.path.join(od, "metrics.jsonl")) if '"loss"' in l]
            our_tps = tokens * (len(logs) - 1) / sum(tokens / l["tokens_per_second"] for l in logs[1:])
            print(f"{shape} {n_params/1e6:.1f}M {prec}: HF {hf_tps:9.0f} tok/s, ours {our_tps:9.0f} tok/s, ratio {our_tps/hf_tps:.2f}; "
                  f"GPU mem used (nvidia-smi peak) HF {hf_mem} MiB (torch peak alloc {r['peak_alloc']/2**20:.0f} MiB), ours {our_mem} MiB; "
                  f"wall HF {hf_wall:.1f}s ours {our_wall:.1f}s; losses ours first/last {logs[0]['loss']:.4f}/{logs[-1]['loss']:.4f}", flush=True)
