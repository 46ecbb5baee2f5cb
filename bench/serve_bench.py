"""Multi-adapter serving: our engine against HF PEFT's mixed-batch generation, side by side.

Usage: python bench/serve_bench.py --bench build/bench_serve [--family llama|bart] [--adapters 100]
           [--requests 128] [--batch 16] [--prompt 32] [--new 32] [--layers 4] [--registered 1000]

One run makes a model with random weights, --layers deep: the LLaMA 134M shape
(bench/train_bench.py's `llama`) or, with --family bart, the BART-base shape (768 wide,
12 heads, FFN 3072, vocab 50,265, --layers encoder and as many decoder layers; the prompt
is the encoder's input) and --adapters LoRA adapters (r=8 on q_proj,v_proj, random A and
B) with HF PEFT, then serves --requests greedy requests whose adapters follow Zipf(1)
popularity:
- HF: PeftModel with every adapter loaded; requests in batches of --batch, each batch one
  `generate(..., adapter_names=[...])` call (HF's mixed-batch LoRA), prompts of equal length.
- ours (bench/serve_bench.cpp): the engine with continuous batching at the same batch size,
  the same load with the adapters mixed and on one merged model, and a registry of
  --registered adapters (memory per adapter, submit latency, per-request cost).
Prints tokens/s for each and the ratios.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def auto_class(family):
    import transformers
    return transformers.AutoModelForSeq2SeqLM if family == "bart" else transformers.AutoModelForCausalLM


def make_bart(out, layers):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=50265, d_model=768, encoder_layers=layers, decoder_layers=layers,
                     encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                     decoder_ffn_dim=3072, max_position_embeddings=1024)
    BartForConditionalGeneration(cfg).eval().save_pretrained(out)


def make_adapters(model_dir, out_dir, n, family):
    import torch
    from peft import LoraConfig, get_peft_model
    base = auto_class(family).from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    for i in range(n):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        model.save_pretrained(os.path.join(out_dir, f"a{i:03d}"))


def hf_mixed(model_dir, adapters_dir, requests, batch, prompt, new, threads, family):
    import torch
    from peft import PeftModel
    torch.set_num_threads(threads)
    names = sorted(os.listdir(adapters_dir))
    base = auto_class(family).from_pretrained(model_dir, dtype=torch.float32)
    gc = base.generation_config  # plain greedy, as the engine decodes
    for k in ("forced_bos_token_id", "forced_eos_token_id", "no_repeat_ngram_size", "eos_token_id", "max_length"):
        setattr(gc, k, None)
    gc.num_beams = 1
    model = PeftModel.from_pretrained(base, os.path.join(adapters_dir, names[0]), adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(os.path.join(adapters_dir, n), adapter_name=n)
    model.eval()
    rng = random.Random(0)
    weights = [1.0 / (k + 1) for k in range(len(names))]
    vocab = base.config.vocab_size
    load = [([rng.randint(1, vocab - 1) for _ in range(prompt)], rng.choices(names, weights)[0]) for _ in range(requests)]

    def run(items, new_tokens):
        ids = torch.tensor([p for p, _ in items])
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), adapter_names=[a for _, a in items],
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    run(load[:batch], 4)  # warm-up
    t = time.perf_counter()
    for i in range(0, requests, batch):
        run(load[i:i + batch], new)
    return requests * new / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--family", choices=["llama", "bart"], default="llama")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--registered", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import train_bench
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read().split("flags", 2)[1].split("\n")[0]
    print(f"machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads; AVX-512 {'avx512f' in flags}, "
          f"AMX-BF16 {'amx_bf16' in flags}; matmul peak (2048^3): fp32 "
          f"{train_bench.matmul_peak(args.threads) / 1e9:.0f} GFLOP/s, bf16 "
          f"{train_bench.matmul_peak(args.threads, 'bf16') / 1e9:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, adapters_dir = os.path.join(tmp, "model"), os.path.join(tmp, "adapters")
        if args.family == "bart":
            make_bart(model_dir, args.layers)
        else:
            train_bench.make_model("llama", model_dir, args.layers)
        make_adapters(model_dir, adapters_dir, args.adapters, args.family)
        shape = f"BART-base shape, {args.layers}+{args.layers}" if args.family == "bart" else \
            f"LLaMA 134M shape, {args.layers}"
        print(f"model: {shape} layers; {args.adapters} LoRA adapters (r=8, q_proj,v_proj); "
              f"{args.requests} requests, prompt {args.prompt}, {args.new} new tokens, batch {args.batch}, Zipf(1)")
        hf = hf_mixed(model_dir, adapters_dir, args.requests, args.batch, args.prompt, args.new, args.threads,
                      args.family)
        out = subprocess.run([args.bench, model_dir, adapters_dir, str(args.requests), str(args.batch),
                              str(args.prompt), str(args.new), str(args.registered)],
                             capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
        ours = json.loads(out.stdout.strip().splitlines()[-1])
    m, g, r = ours["mixed"], ours["merged"], ours["registry"]
    print(f"HF PEFT mixed-batch generate: {hf:.1f} tok/s")
    print(f"ours, mixed ({m['distinct_adapters']} distinct adapters): {m['tokens_per_second']:.1f} tok/s; "
          f"TTFT p50 {m['ttft_p50_ms']:.1f} ms p99 {m['ttft_p99_ms']:.1f} ms; "
          f"inter-token p50 {m['itl_p50_ms']:.1f} ms p99 {m['itl_p99_ms']:.1f} ms")
    print(f"ours, one merged model: {g['tokens_per_second']:.1f} tok/s")
    print(f"mixed / merged: {m['tokens_per_second'] / g['tokens_per_second']:.2f}; ours mixed / HF mixed: "
          f"{m['tokens_per_second'] / hf:.2f}")
    print(f"registry of {r['adapters']} adapters: {r['bytes_per_adapter'] / 1024:.0f} KiB per adapter; submit p50 "
          f"{r['submit_us_p50']:.1f} us p99 {r['submit_us_p99']:.1f} us; a one-token request takes "
          f"{r['request_base_ms_p50']:.2f} ms on the base, {r['request_adapter_ms_p50']:.2f} ms with one of the "
          f"registered adapters (median; +{r['request_overhead_ms']:.2f} ms)")


if __name__ == "__main__":
    main()
