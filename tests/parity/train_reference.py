#!/usr/bin/env python
"""Reference LoRA training run with transformers.Trainer, for C++ training parity.

Usage:
  python tests/parity/train_reference.py BASE_DIR DATA.jsonl OUT_DIR
      [--steps 24] [--grad-accum 2] [--batch 2] [--lr 1e-3] [--warmup 3]
      [--weight-decay 0.01] [--max-grad-norm 1.0] [--scheduler linear]
      [--r 4] [--alpha 8] [--targets q_proj,v_proj] [--seed 0]
      [--padding-free] (micro-batches collated by DataCollatorWithFlattening)
      [--gen-rows N]   (first (re)write DATA.jsonl with N random rows)
      [--verify]       (re-run the whole loop by hand, without Trainer, and
                        compare losses / lr / grad_norm / final adapter)

BASE_DIR  a small LlamaForCausalLM folder (tests/parity/make_models.py OUT ->
          OUT/llama_mha).
DATA.jsonl one JSON object per line: {"input_ids": [int, ...]} (pre-tokenized,
          ragged). Rows are used in file order (SequentialSampler), cycling
          through epochs when max_steps needs more than one pass.

OUT_DIR/ (re)created with:
  initial_adapter/  PeftModel.save_pretrained BEFORE training (lora_A = PEFT
                    default kaiming init, lora_B = randn * 0.01 so that A gets
                    gradients from the first step). The C++ side starts here.
  final_adapter/    PeftModel.save_pretrained after `steps` optimizer steps.
  losses.json       {"loss": [...], "learning_rate": [...], "grad_norm": [...]}
                    one entry per optimizer step (exactly `steps` entries), the
                    values Trainer logs with logging_steps=1, plus
                    "num_items_in_batch" (label tokens after the shift, per
                    step), "micro_batches" (row indices per micro-batch, per
                    step), "config" (all hyper-parameters) and "trainer"
                    (optimizer param groups, flags, micro-batches the
                    Trainer's dataloader actually collated).
  hf_run/           Trainer output_dir (nothing saved there: save_strategy=no).

Exact semantics of one optimizer step in transformers 5.23 (see the report /
comments in `manual_loop` below, which re-implements it without Trainer):
  N      = sum over the step's micro-batches of count(labels[:, 1:] != -100)
  loss_m = sum_tokens CE(logits[:, :-1], labels[:, 1:]) / N   (per micro-batch m)
  backward(loss_m) for every m (gradients accumulate; no 1/grad_accum factor)
  logged loss = float32 sum_m loss_m (not rounded)
  grad_norm   = pre-clip total L2 norm over all trainable grads; grads *= min(1, max_norm / (grad_norm + 1e-6))
  AdamW step (torch.optim.AdamW, single-tensor CPU path, betas (0.9, 0.999), eps 1e-8,
              weight decay on every LoRA tensor), lr = base_lr * lambda(k) for step k = 0, 1, ...
  logged learning_rate = the lr that step used; then scheduler.step(); zero_grad.
  Forwards run with use_cache=False (Trainer sets model.config.use_cache = False).
With --verify the hand-written loop reproduces the Trainer run bit for bit on CPU.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import (
    AutoModelForCausalLM,
    DataCollatorWithFlattening,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from peft import LoraConfig, get_peft_model

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

PAD_ID = 0
IGNORE = -100


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def gen_rows(path, n, vocab, seed):
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for _ in range(n):
            length = rng.randint(3, 20)
            f.write(json.dumps({"input_ids": [rng.randint(1, vocab - 1) for _ in range(length)]}) + "\n")


def read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append([int(t) for t in json.loads(line)["input_ids"]])
    return rows


class RowsDataset(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "row": i}


PADDING_FREE = False  # --padding-free: transformers' DataCollatorWithFlattening instead


def collate(features):
    """Right-pad with PAD_ID to the longest row; labels = input_ids, -100 on padding.
    Padding-free: one row [1, total] with position ids restarting per example."""
    if PADDING_FREE:
        return DataCollatorWithFlattening()([{"input_ids": f["input_ids"]} for f in features])
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), longest), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(features), longest), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------


def load_base(base_dir):
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")


def build_peft(base_dir, args):
    torch.manual_seed(args.seed)
    base = load_base(base_dir)
    cfg = LoraConfig(
        r=args.r,
        lora_alpha=args.alpha,
        target_modules=args.targets.split(","),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, cfg)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.01)
    return model


def trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------


class SequentialTrainer(Trainer):
    # transformers 5.23: Trainer._get_train_sampler(self, train_dataset=None)
    def _get_train_sampler(self, train_dataset=None):
        if train_dataset is None:
            train_dataset = self.train_dataset
        return SequentialSampler(train_dataset)


class LogCapture(TrainerCallback):
    def __init__(self):
        self.loss, self.lr, self.grad_norm, self.steps = [], [], [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss.append(float(logs["loss"]))
            self.lr.append(float(logs["learning_rate"]))
            gn = logs.get("grad_norm")
            self.grad_norm.append(float(gn) if gn is not None else None)
            self.steps.append(state.global_step)


def run_trainer(model, rows, out_dir, args):
    targs = TrainingArguments(
        output_dir=os.path.join(out_dir, "hf_run"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=True,
        fp16=False,
        bf16=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        optim="adamw_torch",
        train_sampling_strategy="sequential",
        disable_tqdm=True,
    )
    cap = LogCapture()
    seen = []  # row indices of every micro-batch the Trainer's dataloader collated, in order

    def collate_recording(features):
        seen.append([f["row"] for f in features])
        return collate(features)

    trainer = SequentialTrainer(
        model=model,
        args=targs,
        train_dataset=RowsDataset(rows),
        data_collator=collate_recording,
        callbacks=[cap],
    )
    trainer.remove_callback(PrinterCallback)  # console echo only (values rounded for display)
    trainer.train()
    groups = [
        {
            "weight_decay": g["weight_decay"],
            "n_params": len(g["params"]),
            "lr0": g.get("initial_lr"),
            "betas": list(g["betas"]),
            "eps": g["eps"],
            "foreach": g.get("foreach"),
            "fused": g.get("fused"),
        }
        for g in trainer.optimizer.param_groups
    ]
    info = {
        "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer).__name__,
        "param_groups": groups,
        "model_accepts_loss_kwargs": trainer.model_accepts_loss_kwargs,
        "loss_shifts_labels": trainer._loss_shifts_labels,
        "logged_steps": cap.steps,
        "collated_micro_batches": seen,
    }
    return cap, info


# ---------------------------------------------------------------------------
# hand-written re-implementation (no Trainer) used by --verify
# ---------------------------------------------------------------------------


def lr_lambda(kind, k, warmup, total):
    # transformers/optimization.py _get_linear_schedule_with_warmup_lr_lambda /
    # _get_cosine_schedule_with_warmup_lr_lambda (num_cycles=0.5); constant_with_warmup
    if kind == "constant":  # get_constant_schedule ignores warmup
        return 1.0
    if k < warmup:
        return float(k) / float(max(1, warmup))
    if kind == "linear":
        return max(0.0, float(total - k) / float(max(1, total - warmup)))
    if kind == "cosine":
        progress = float(k - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    if kind == "constant_with_warmup":
        return 1.0
    raise ValueError(kind)


def schedule(rows, args):
    """Micro-batch row indices per optimizer step, as Trainer._run_epoch walks them."""
    n_micro = math.ceil(len(rows) / args.batch)  # drop_last=False: last micro-batch may be short
    micro = [list(range(i * args.batch, min((i + 1) * args.batch, len(rows)))) for i in range(n_micro)]
    per_epoch = [micro[i : i + args.grad_accum] for i in range(0, n_micro, args.grad_accum)]
    steps = []
    while len(steps) < args.steps:  # accumulation never spans an epoch boundary
        steps.extend(per_epoch)
    return steps[: args.steps]


def step_loss(model, step_rows, rows):
    """Forward + backward of one optimizer step; returns (logged loss float32 tensor, N)."""
    batches = [collate([{"input_ids": rows[i]} for i in mb]) for mb in step_rows]
    n_items = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    total = torch.tensor(0.0)
    for b in batches:
        # Trainer sets model.config.use_cache = args.use_cache (False): no KV cache in training forwards
        # (with a DynamicCache, K/V go through torch.cat and results differ in the last ulp)
        masks = {"position_ids": b["position_ids"]} if PADDING_FREE else {"attention_mask": b["attention_mask"]}
        logits = model(input_ids=b["input_ids"], **masks, use_cache=False).logits.float()
        shift = torch.nn.functional.pad(b["labels"], (0, 1), value=IGNORE)[:, 1:]
        ce_sum = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), shift.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        loss = ce_sum / torch.tensor(n_items)
        if torch.is_grad_enabled():
            loss.backward()
        total = total + loss.detach()
    return total, n_items


def manual_loop(model, rows, args):
    params = [p for _, p in trainable(model)]
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    out = {"loss": [], "learning_rate": [], "grad_norm": [], "num_items_in_batch": []}
    model.train()
    for k, step_rows in enumerate(schedule(rows, args)):
        loss, n_items = step_loss(model, step_rows, rows)
        grads = [p.grad for p in params]
        # torch.nn.utils.clip_grad_norm_: norm of per-tensor norms; coef clamped at 1, always applied
        # (CPU default is the foreach path: torch._foreach_norm per tensor, then vector_norm of the stack)
        total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2)), 2)
        coef = torch.clamp(args.max_grad_norm / (total_norm + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
        lr = args.lr * lr_lambda(args.scheduler, k, args.warmup, args.steps)
        t = k + 1
        with torch.no_grad():
            for i, p in enumerate(params):
                g = p.grad
                p.mul_(1 - lr * args.weight_decay)  # decoupled weight decay, all LoRA tensors
                m[i].lerp_(g, 1 - b1)
                v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1 = 1 - b1**t
                bc2 = 1 - b2**t
                denom = (v[i].sqrt() / (bc2**0.5)).add_(eps)
                p.addcdiv_(m[i], denom, value=-(lr / bc1))
        model.zero_grad()
        out["loss"].append(loss.item())
        out["learning_rate"].append(lr)
        out["grad_norm"].append(total_norm.item())
        out["num_items_in_batch"].append(n_items)
    return out


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_dir")
    ap.add_argument("data")
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--scheduler", default="linear")
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gen-rows", type=int, default=0)
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--padding-free", action="store_true")
    args = ap.parse_args()
    global PADDING_FREE
    PADDING_FREE = args.padding_free

    t0 = time.time()
    if args.gen_rows > 0:
        with open(os.path.join(args.base_dir, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        gen_rows(args.data, args.gen_rows, vocab, args.seed)
    rows = read_rows(args.data)

    if os.path.isdir(args.out_dir):
        shutil.rmtree(args.out_dir)
    os.makedirs(args.out_dir)

    model = build_peft(args.base_dir, args)
    init_dir = os.path.join(args.out_dir, "initial_adapter")
    model.save_pretrained(init_dir)
    init_state = {n: p.detach().clone() for n, p in trainable(model)}

    # manual loss of step 1 from the initial adapter (no grad), before training
    step1_rows = schedule(rows, args)[0]
    with torch.no_grad():
        model.train()
        manual_step1, _ = step_loss(model, step1_rows, rows)

    cap, info = run_trainer(model, rows, args.out_dir, args)
    if len(cap.loss) != args.steps:
        sys.exit(f"expected {args.steps} logged steps, got {len(cap.loss)} ({cap.steps})")
    model.save_pretrained(os.path.join(args.out_dir, "final_adapter"))

    sched = schedule(rows, args)
    result = {
        "loss": cap.loss,
        "learning_rate": cap.lr,
        "grad_norm": cap.grad_norm,
        "num_items_in_batch": [
            sum(max(0, len(rows[i]) - 1) for mb in step for i in mb) for step in sched
        ],
        "micro_batches": sched,
        "config": {k: v for k, v in vars(args).items() if k not in ("verify", "gen_rows")},
        "trainer": info,
    }
    with open(os.path.join(args.out_dir, "losses.json"), "w") as f:
        json.dump(result, f, indent=1)

    flat = [mb for step in sched for mb in step]
    order_ok = info["collated_micro_batches"][: len(flat)] == flat
    print(f"data order: Trainer micro-batches == sequential schedule: {order_ok}")

    d1 = abs(manual_step1.item() - cap.loss[0])
    print(f"step-1 loss: trainer {cap.loss[0]!r} manual {manual_step1.item()!r} |diff| {d1:.3e}")
    print(f"losses: first {cap.loss[0]:.6f} last {cap.loss[-1]:.6f}; wall {time.time() - t0:.1f}s")
    ok = d1 <= 1e-6 and order_ok

    if args.verify:
        ref = build_peft(args.base_dir, args)
        with torch.no_grad():
            for n, p in trainable(ref):
                p.copy_(init_state[n])
        man = manual_loop(ref, rows, args)
        for key in ("loss", "learning_rate", "grad_norm"):
            diff = max(abs(a - b) for a, b in zip(man[key], result[key]))
            print(f"verify {key:14s} max|manual - trainer| = {diff:.3e}")
            ok &= diff <= 1e-5 * max(1.0, max(abs(x) for x in result[key]))
        ok &= man["num_items_in_batch"] == result["num_items_in_batch"]
        final = dict(trainable(model))
        wdiff = max((p.detach() - final[n].detach()).abs().max().item() for n, p in trainable(ref))
        print(f"verify final adapter max|diff| = {wdiff:.3e}")
        ok &= wdiff <= 1e-5
    print(f"total wall {time.time() - t0:.1f}s  {'OK' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
