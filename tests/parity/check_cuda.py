"""The CLI on a CUDA GPU against the references the CPU suite uses (run on a GPU machine).

Usage: python tests/parity/check_cuda.py PEFT_BIN BUILD_DIR [--device cuda]

BUILD_DIR holds the fixtures ctest made (parity/, parity_adapters/, parity_qlora/,
parity_train/, parity_train_data.jsonl): transformers', HF PEFT's and bitsandbytes'
outputs, computed on the CPU. Each check runs `peft` with --device cuda and compares:
  - forward logits of the decoder parity models (fp32, <= 1e-4 at unmasked positions);
  - LoRA and DoRA adapters on them, unmerged (<= 1e-4);
  - greedy generation: transformers' 32 tokens, token for token;
  - 4-bit models saved by transformers + bitsandbytes, and HF PEFT LoRA on them (fp32
    <= 2e-5, bf16 <= 0.25: test_qlora's tolerances, which it justifies);
  - training: HF Trainer + PEFT's 24 per-step losses (relative <= 1e-4, as TrainParity),
    with precision=bf16 (relative <= 1e-2), and with gradient checkpointing offloaded to
    host memory or of every other block (relative <= 1e-4), and data-parallel with two
    workers sharing the GPU against the one-process run (relative <= 1e-5);
  - QLoRA training (4-bit base, LoRA on all linear layers): the GPU's 12 per-step losses
    against the same build's host run (relative <= 1e-4).
Prints one line per check and exits 1 if any failed."""
import argparse, json, os, subprocess, sys, tempfile

import torch
from safetensors.torch import load_file

DECODERS = ["gpt2", "gpt2_odd", "llama_mha", "llama_gqa_tied", "llama3_rope", "mistral", "qwen2"]
ADAPTERS = ["lora_dora", "lora_gpt2", "lora_all_linear_bias", "lora_layers"]
failures = []


def peft(*args):
    device = [] if args[0] == "train" else ["--device", a.device]  # train takes device=...
    p = subprocess.run([a.peft, *args, *device], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(" ".join(args[:2]) + ": " + (p.stderr or p.stdout)[-1500:])
    return p.stdout


def report(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def masked_max_diff(got, want, mask):
    m = mask.bool().unsqueeze(-1)
    return ((got - want).abs() * m).max().item()


def forward_logits(model, ref, tmp, extra=(), key="input_ids"):
    ids, mask = ref[key], ref.get("attention_mask")
    rows = [r[: int(m.sum())].tolist() for r, m in zip(ids, mask)] if mask is not None else ids.tolist()
    ids_file, out = os.path.join(tmp, "ids.json"), os.path.join(tmp, "out.safetensors")
    json.dump(rows, open(ids_file, "w"))
    peft("forward", model, "--ids", ids_file, "--out", out, *extra)
    return load_file(out)["logits"], (mask if mask is not None else torch.ones_like(ids))


def check(name, fn):
    try:
        fn()
    except Exception as e:  # one broken check must not hide the others
        report(name, False, str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))


def main(tmp):
    b = a.build
    for m in DECODERS:
        d = os.path.join(b, "parity", m)
        ref = load_file(os.path.join(d, "reference.safetensors"))

        def fwd():
            got, mask = forward_logits(d, ref, tmp)
            diff = masked_max_diff(got, ref["logits"], mask)
            report(f"forward {m}", diff <= 1e-4, f"max |logits - transformers| = {diff:.2e}")

        def gen():
            ids_file = os.path.join(tmp, "gen.json")
            json.dump(ref["gen_input_ids"].tolist(), open(ids_file, "w"))
            out = json.loads(peft("generate", d, "--ids", ids_file, "--max-new-tokens", "32", "--no-eos"))
            want = ref["gen_output_ids"][0].tolist()
            same = sum(x == y for x, y in zip(out[0], want))
            report(f"generate {m}", out[0] == want, f"{same}/{len(want)} tokens equal transformers'")
        check(f"forward {m}", fwd)
        check(f"generate {m}", gen)
    for c in ADAPTERS:
        d = os.path.join(b, "parity_adapters", c)
        info = json.load(open(os.path.join(d, "case.json")))
        ref = load_file(os.path.join(d, "reference.safetensors"))

        def lora():
            got, mask = forward_logits(os.path.join(b, "parity", info["base"]), ref, tmp,
                                       ("--adapter", os.path.join(d, "adapter")))
            diff = masked_max_diff(got, ref["logits"], mask)
            report(f"adapter {c}", diff <= 1e-4, f"max |logits - HF PEFT| = {diff:.2e}")
        check(f"adapter {c}", lora)
    qdir = os.path.join(b, "parity_qlora")
    for c in sorted(os.listdir(qdir)):
        d = os.path.join(qdir, c)
        info = json.load(open(os.path.join(d, "case.json")))
        tol = 0.25 if info["dtype"] == "bfloat16" else 2e-5
        ref = load_file(os.path.join(d, "reference.safetensors"))

        def q4():
            got, mask = forward_logits(os.path.join(d, "hf4bit"), ref, tmp)
            diff = masked_max_diff(got, ref["logits"], mask)
            short, _ = forward_logits(os.path.join(d, "hf4bit"), {"input_ids": ref["short_input_ids"]}, tmp)
            dshort = (short - ref["short_logits"]).abs().max().item()
            report(f"4-bit {c}", max(diff, dshort) <= tol,
                   f"max |logits - transformers+bnb| = {diff:.2e}, 5-token row (GEMV) {dshort:.2e}, tol {tol}")

        def q4lora():
            got, mask = forward_logits(os.path.join(d, "hf4bit"), ref, tmp, ("--adapter", os.path.join(d, "adapter")))
            diff = masked_max_diff(got, ref["lora_logits"], mask)
            report(f"4-bit + LoRA {c}", diff <= tol, f"max |logits - HF PEFT on bnb| = {diff:.2e}")
        check(f"4-bit {c}", q4)
        if os.path.isdir(os.path.join(d, "adapter")) and info["dtype"] != "bfloat16":
            check(f"4-bit + LoRA {c}", q4lora)

    # HF Trainer's run (TrainParity's settings) in fp32 (within 1e-4) and with
    # precision=bf16, which builds the model on the host, stores the frozen base in bf16 and
    # then moves it (PeftModel::to): the same steps within issue 11's 1e-2 of fp32.
    def hf_run(name, tol, *extra):
        out = os.path.join(tmp, name.replace(" ", "_"))
        ref = json.load(open(os.path.join(b, "parity_train", "losses.json")))
        peft("train", f"model={os.path.join(b, 'parity', 'llama_mha')}",
             f"train_file={os.path.join(b, 'parity_train_data.jsonl')}",
             f"init_adapter={os.path.join(b, 'parity_train', 'initial_adapter')}", f"output_dir={out}", "max_steps=24",
             "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "learning_rate=1e-3", "warmup_steps=3",
             "weight_decay=0.01", "max_grad_norm=1.0", "shuffle=false", "progress=false", f"device={a.device}", *extra)
        got = [json.loads(l)["loss"] for l in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in l]
        rel = max(abs(g - w) / abs(w) for g, w in zip(got, ref["loss"]))
        report(name, len(got) == 24 and rel <= tol, f"{len(got)} steps, max relative |loss - HF Trainer fp32| = {rel:.2e}")
    check("train llama_mha", lambda: hf_run("train llama_mha", 1e-4))
    check("train llama_mha bf16", lambda: hf_run("train llama_mha bf16", 1e-2, "precision=bf16"))
    # Data-parallel on the GPU: two workers share it (Gloo, through host memory) and take
    # the one-process GPU run's steps (the distributed tests' bound on CPU: 1e-5 relative).
    def data_parallel():
        one, two = (os.path.join(tmp, n) for n in ("train_llama_mha", "train_llama_mha_nproc2"))
        peft("train", "--nproc", "2", f"model={os.path.join(b, 'parity', 'llama_mha')}",
             f"train_file={os.path.join(b, 'parity_train_data.jsonl')}",
             f"init_adapter={os.path.join(b, 'parity_train', 'initial_adapter')}", f"output_dir={two}", "max_steps=24",
             "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "learning_rate=1e-3", "warmup_steps=3",
             "weight_decay=0.01", "max_grad_norm=1.0", "shuffle=false", "progress=false", f"device={a.device}")
        got, want = ([json.loads(l)["loss"] for l in open(os.path.join(d, "metrics.jsonl")) if '"loss"' in l]
                     for d in (two, one))
        rel = max(abs(g - w) / abs(w) for g, w in zip(got, want))
        report("data-parallel train llama_mha, 2 workers on one GPU", len(got) == len(want) == 24 and rel <= 1e-5,
               f"{len(got)} steps, max relative |loss - 1 process| = {rel:.2e}")
    check("data-parallel train llama_mha, 2 workers on one GPU", data_parallel)

    # Gradient checkpointing with the blocks' inputs offloaded to pinned host memory, and
    # selective (every other block): the same steps as HF Trainer without checkpointing.
    check("train llama_mha offloaded checkpointing",
          lambda: hf_run("train llama_mha offloaded checkpointing", 1e-4, "gradient_checkpointing=true",
                         "gradient_checkpointing_offload=true"))
    check("train llama_mha checkpointing every 2",
          lambda: hf_run("train llama_mha checkpointing every 2", 1e-4, "gradient_checkpointing=true",
                         "gradient_checkpointing_every=2"))

    # No HF + bnb training reference exists per step; the 4-bit backward on the GPU is
    # checked against this build's host run of the same steps (whose forward equals bnb's).
    def qlora_train():
        losses = {}
        for i, dev in enumerate(("cpu", a.device)):
            out = os.path.join(tmp, f"qlora_{i}")
            peft("train", f"model={os.path.join(b, 'parity', 'llama_mha')}",
                 f"train_file={os.path.join(b, 'parity_train_data.jsonl')}", f"output_dir={out}", "max_steps=12",
                 "per_device_train_batch_size=2", "learning_rate=1e-3", "shuffle=false", "progress=false",
                 'method={"r": 4, "target_modules": "all-linear"}', "load_in_4bit=true", f"device={dev}")
            losses[i] = [json.loads(l)["loss"] for l in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in l]
        rel = max(abs(g - w) / abs(w) for g, w in zip(losses[1], losses[0]))
        report("QLoRA train llama_mha", len(losses[0]) == len(losses[1]) == 12 and rel <= 1e-4,
               f"max relative |loss(GPU) - loss(host)| over 12 steps = {rel:.2e}; "
               f"loss {losses[1][0]:.4f} -> {losses[1][-1]:.4f}")
    check("QLoRA train llama_mha", qlora_train)


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("peft")
ap.add_argument("build")
ap.add_argument("--device", default="cuda")
a = ap.parse_args()
with tempfile.TemporaryDirectory() as t:
    main(t)
print(f"{len(failures)} failed" + (": " + ", ".join(failures) if failures else ""))
sys.exit(1 if failures else 0)
