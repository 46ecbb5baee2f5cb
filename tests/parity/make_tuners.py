#!/usr/bin/env python
"""Generate non-LoRA PEFT adapters plus reference outputs for C++ parity tests.

Usage: python tests/parity/make_tuners.py PARITY_DIR OUT_DIR

PARITY_DIR is the output of tests/parity/make_models.py (base models). Methods: IA3, LN_TUNING,
PROMPT_TUNING, P_TUNING (MLP / LSTM), PREFIX_TUNING (plain / projected / GQA), LOHA, LOKR.
For every case a directory OUT_DIR/<case>/ is (re)created with (same layout as make_adapters.py):
  * trainable.txt           the line printed by print_trainable_parameters()
  * case.json               {"base", "peft_type", "config": <XxxConfig kwargs>,
                             "adapter_config": <adapter_config.json as written>,
                             "adapter_tensors": {key: shape} of adapter_model.safetensors,
                             "num_virtual_tokens" and "virtual_positions_removed" (prompt learning),
                             "generation": true when generation.json is written,
                             "hf_generate_use_cache_false", "cache_generation_unreliable": see
                             generation.json below}
  * adapter/                PeftModel.save_pretrained (adapter_config.json + adapter_model.safetensors)
  * merged/                 merge_and_unload().save_pretrained (IA3 / LoHa / LoKr cases that merge)
  * reference.safetensors   inputs copied from PARITY_DIR/<base>/reference.safetensors plus
                            outputs of the adapted model: logits (+ merged_logits when merged).
                            PROMPT_TUNING / P_TUNING on causal LMs: HF returns logits for
                            num_virtual_tokens + S positions; the stored logits are
                            logits[:, num_virtual_tokens:] (the real tokens only).
  * encoder.safetensors     (prompt-learning cases) the prompt encoder's state_dict
                            (embedding.weight, mlp_head.*, lstm_head.*, transform.*)
  * generation.json         (some prompt-learning cases) {"prompts", "max_new_tokens", "outputs",
                            "min_margin"}: greedy decoding of the reloaded adapter on 2 unpadded
                            prompts of equal length; outputs = prompt + generated ids, from
                            re-running the full sequence through peft_model.forward each step,
                            checked equal to peft_model.generate(use_cache=True) (else
                            "cache_generation_unreliable" and "outputs_use_cache"). The result
                            of generate(use_cache=False) is recorded in case.json
                            "hf_generate_use_cache_false" (equal / differs / error: ...).

Every trainable parameter is perturbed after creation so that the adapter is non-trivial
(ia3_l = 1 + 0.3*randn, LN copies differ from the base norms, all LoHa/LoKr factors non-zero,
prompt / prefix embeddings and the P-tuning / prefix-projection encoders perturbed,
modules_to_save copies differ from the base). Before a case is written the saved adapter is
reloaded with PeftModel.from_pretrained into a fresh base (strict key check as in
check_adapter.py) and must reproduce the stored outputs to 1e-5.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import time
import warnings

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.utils import logging as hf_logging

# same folder: one rule for which class a base is, how adapters are loaded strictly, and which
# output positions are virtual tokens
from check_adapter import load_model, real_token_output, virtual_output_positions
from make_adapters import load_base, load_inputs, reproducible  # same folder: one way to load a base
from peft import (
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    get_peft_model,
)

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

MIN_EFFECT = 1e-3
RELOAD_TOL = 1e-5
GEN_PROMPT_LEN = 6
GEN_NEW = 12
GEN_MIN_MARGIN = 1e-2
GEN_MAX_TRIES = 20

# name -> (base dir, config class, kwargs, options). options: merge (write merged/ + merged_logits),
# generate (write generation.json).
CASES = [
    (
        "ia3_llama",
        "llama_mha",
        IA3Config,
        dict(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
        dict(merge=True),
    ),
    # default targets for gpt2: c_attn + mlp.c_proj, feedforward mlp.c_proj (Conv1D layers)
    ("ia3_gpt2", "gpt2", IA3Config, dict(), dict(merge=True)),
    (
        "ia3_bert_cls",
        "bert_cls",
        IA3Config,
        dict(task_type="SEQ_CLS", target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"]),
        dict(),
    ),
    # default targets for llama: input_layernorm, post_attention_layernorm, norm
    ("ln_tuning_llama", "llama_mha", LNTuningConfig, dict(), dict()),
    ("ln_tuning_bert_cls", "bert_cls", LNTuningConfig, dict(task_type="SEQ_CLS", target_modules=["LayerNorm"]), dict()),
    (
        "prompt_tuning_llama",
        "llama_mha",
        PromptTuningConfig,
        dict(task_type="CAUSAL_LM", num_virtual_tokens=5, prompt_tuning_init="RANDOM"),
        dict(generate=True),
    ),
    # prompt_tuning_init TEXT needs a tokenizer and the parity model dirs hold none: SAMPLE_VOCAB
    # (prompt initialised from randomly sampled rows of the word embeddings) instead
    (
        "prompt_tuning_text_gpt2",
        "gpt2",
        PromptTuningConfig,
        dict(task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init="SAMPLE_VOCAB"),
        dict(),
    ),
    (
        "prompt_tuning_bert_cls",
        "bert_cls",
        PromptTuningConfig,
        dict(task_type="SEQ_CLS", num_virtual_tokens=4, prompt_tuning_init="RANDOM"),
        dict(),
    ),
    (
        "p_tuning_mlp_llama",
        "llama_mha",
        PromptEncoderConfig,
        dict(
            task_type="CAUSAL_LM",
            num_virtual_tokens=4,
            encoder_reparameterization_type="MLP",
            encoder_hidden_size=24,
        ),
        dict(generate=True),
    ),
    (
        "p_tuning_lstm_gpt2",
        "gpt2",
        PromptEncoderConfig,
        dict(
            task_type="CAUSAL_LM",
            num_virtual_tokens=4,
            encoder_reparameterization_type="LSTM",
            encoder_hidden_size=16,
        ),
        dict(),
    ),
    (
        "prefix_llama",
        "llama_mha",
        PrefixTuningConfig,
        dict(task_type="CAUSAL_LM", num_virtual_tokens=6),
        dict(generate=True),
    ),
    (
        "prefix_proj_gpt2",
        "gpt2",
        PrefixTuningConfig,
        dict(task_type="CAUSAL_LM", num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=32),
        dict(generate=True),
    ),
    (
        "prefix_gqa",
        "llama_gqa_tied",
        PrefixTuningConfig,
        dict(task_type="CAUSAL_LM", num_virtual_tokens=4),
        dict(generate=True),
    ),
    (
        "prefix_bert_cls",
        "bert_cls",
        PrefixTuningConfig,
        dict(task_type="SEQ_CLS", num_virtual_tokens=4),
        dict(),
    ),
    ("loha_llama", "llama_mha", LoHaConfig, dict(target_modules=["q_proj", "v_proj"], r=4, alpha=8), dict(merge=True)),
    (
        "lokr_llama",
        "llama_mha",
        LoKrConfig,
        dict(target_modules=["q_proj", "v_proj", "down_proj"], r=4, alpha=8),
        dict(merge=True),
    ),
    # r=2 so that both Kronecker factors are low-rank (w1 is decomposed only if r < max(a, c) / 2)
    (
        "lokr_decompose_both_llama",
        "llama_mha",
        LoKrConfig,
        dict(target_modules=["q_proj", "v_proj", "down_proj"], r=2, alpha=3, decompose_both=True),
        dict(merge=True),
    ),
]

BASE_SEED = 8765


def output_key(out):
    return "logits" if getattr(out, "logits", None) is not None else "last_hidden_state"


def perturb(peft_model):
    """Perturbs every trainable parameter; fails on a trainable parameter no rule covers."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if not p.requires_grad:
                continue
            if ".ia3_l." in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif ".ln_tuning_layers." in name:
                if name.endswith("weight"):
                    p.mul_(1 + 0.2 * torch.randn_like(p))
                else:
                    p.add_(torch.randn_like(p) * 0.1)
            elif any(s in name for s in (".hada_", ".lokr_")):
                p.add_(torch.randn_like(p) * 0.1)
            elif ".modules_to_save." in name:
                p.add_(torch.randn_like(p) * 0.05)
            elif name.startswith("prompt_encoder."):
                # embeddings (prompt / prefix / p-tuning input) and the encoder MLP / LSTM weights
                p.add_(torch.randn_like(p) * 0.1)
            else:
                raise AssertionError(f"no perturbation rule for trainable parameter {name}")


def adapter_tensors(adapter_dir):
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def generate(model, prompts, use_cache):
    """peft_model.generate, greedy; returns (prompt + generated ids, min top1-top2 margin)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=GEN_NEW,
            min_new_tokens=GEN_NEW,
            do_sample=False,
            num_beams=1,
            eos_token_id=None,
            pad_token_id=0,
            use_cache=use_cache,
            output_scores=True,
            return_dict_in_generate=True,
        )
    seq = out.sequences.to(torch.int64)
    assert seq.shape == (prompts.shape[0], GEN_PROMPT_LEN + GEN_NEW), seq.shape
    assert torch.equal(seq[:, :GEN_PROMPT_LEN], prompts)
    margin = float("inf")
    for sc in out.scores:
        top2 = torch.topk(sc.float(), 2, dim=-1).values
        margin = min(margin, float((top2[:, 0] - top2[:, 1]).min()))
    return seq, margin


def greedy_full_forward(model, prompts):
    """Greedy decoding by re-running the whole sequence through peft_model.forward at every step (no
    KV cache at all): the reference the cached generate must reproduce."""
    seq = prompts
    with torch.no_grad():
        for _ in range(GEN_NEW):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


def make_generation(model, vocab, seed):
    """Two unpadded prompts of equal length with a clear greedy margin. generate(use_cache=True) is
    checked against full-forward greedy decoding and against generate(use_cache=False)."""
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(GEN_MAX_TRIES):
        prompts = torch.randint(1, vocab, (2, GEN_PROMPT_LEN), dtype=torch.int64, generator=gen)
        seq_cache, margin = generate(model, prompts, use_cache=True)
        if best is None or margin > best[2]:
            best = (prompts, seq_cache, margin)
        if margin > GEN_MIN_MARGIN:
            break
    prompts, seq_cache, margin = best
    seq_full = greedy_full_forward(model, prompts)
    try:
        seq_nocache, _ = generate(model, prompts, use_cache=False)
        nocache = "equal" if torch.equal(seq_nocache, seq_full) else "differs"
    except Exception as e:  # PREFIX_TUNING: see the note in case.json
        nocache = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    consistent = torch.equal(seq_cache, seq_full)
    gen_json = {
        "prompts": prompts.tolist(),
        "max_new_tokens": GEN_NEW,
        "outputs": seq_full.tolist(),
        "min_margin": round(margin, 6),
    }
    if not consistent:
        gen_json["outputs_use_cache"] = seq_cache.tolist()
    return gen_json, consistent, nocache


def make_case(parity_dir, out_root, idx, name, base_name, cfg_cls, kwargs, opts):
    t0 = time.time()
    case_dir = os.path.join(out_root, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    base_dir = os.path.join(parity_dir, base_name)
    adapter_dir = os.path.join(case_dir, "adapter")
    cfg_kwargs = dict(kwargs)

    inputs = load_inputs(base_dir)
    base = load_base(base_dir)
    with torch.no_grad():
        base_raw = base(**inputs)
        out_key = output_key(base_raw)
        base_out = getattr(base_raw, out_key).float()

    torch.manual_seed(BASE_SEED + 100 * idx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = get_peft_model(base, cfg_cls(**cfg_kwargs))
    peft_warnings = sorted({str(w.message).splitlines()[0] for w in caught})
    peft_model.eval()
    peft_cfg = peft_model.peft_config["default"]
    peft_type = str(peft_cfg.peft_type.value)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        peft_model.print_trainable_parameters()
    trainable = buf.getvalue().strip()
    assert trainable and "\n" not in trainable, repr(buf.getvalue())
    with open(os.path.join(case_dir, "trainable.txt"), "w") as f:
        f.write(trainable + "\n")

    torch.manual_seed(BASE_SEED + 100 * idx + 1)
    perturb(peft_model)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            adapted = real_token_output(peft_model, peft_model(**inputs), out_key)
        peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    peft_warnings += sorted({str(w.message).splitlines()[0] for w in caught})
    n_virtual = virtual_output_positions(peft_model)
    assert adapted.shape == base_out.shape, (name, adapted.shape, base_out.shape)

    # the fixture must reload in HF (strict keys) and reproduce its own outputs
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded, problems = load_model(base_dir, adapter_dir)
    hf_logging.set_verbosity_error()  # load_model raises it to warning to collect load messages
    assert not problems, (name, problems, buf.getvalue())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = real_token_output(reloaded, reloaded(**inputs), out_key)
    reload_err = (again - adapted).abs().max().item()
    assert reload_err <= RELOAD_TOL, (name, reload_err)

    ref = dict(inputs)
    ref[out_key] = adapted
    merge_note = ""
    if opts.get("merge"):
        with torch.no_grad():
            merged = peft_model.merge_and_unload()
            merged.eval()
            merged_out = getattr(merged(**inputs), out_key).float().contiguous()
        merged.save_pretrained(os.path.join(case_dir, "merged"), safe_serialization=True)
        ref["merged_" + out_key] = merged_out
        merge_note = f" max|merged-adapted|={(adapted - merged_out).abs().max().item():.3g}"
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(case_dir, "reference.safetensors"))
    if peft_cfg.is_prompt_learning and not peft_cfg.inference_mode:
        # The trained prompt encoder itself (HF saves only its output): lets the C++ side
        # check its MLP / LSTM / projection against the saved prompt_embeddings.
        enc = peft_model.prompt_encoder["default"].state_dict()
        save_file({k: v.detach().contiguous() for k, v in enc.items()}, os.path.join(case_dir, "encoder.safetensors"))

    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        adapter_config = json.load(f)
    case = {
        "base": base_name,
        "peft_type": peft_type,
        "config": cfg_kwargs,
        "adapter_config": adapter_config,
        "adapter_tensors": adapter_tensors(adapter_dir),
    }
    if peft_cfg.is_prompt_learning:
        case["num_virtual_tokens"] = peft_cfg.num_virtual_tokens
        case["virtual_positions_removed"] = n_virtual if adapted.dim() == 3 else 0

    gen_note = ""
    if opts.get("generate"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Position ids are not supported ..." for prompt tuning
            gen_json, consistent, nocache = make_generation(
                reloaded, reloaded.config.vocab_size, BASE_SEED + 100 * idx + 2
            )
        with open(os.path.join(case_dir, "generation.json"), "w") as f:
            json.dump(gen_json, f)
            f.write("\n")
        case["generation"] = True
        case["hf_generate_use_cache_false"] = nocache
        if not consistent:
            case["cache_generation_unreliable"] = True
        gen_note = (
            f" gen[cache={'ok' if consistent else 'MISMATCH'} no_cache={nocache.split(':')[0]}]"
            f" margin={gen_json['min_margin']:.3g}"
        )

    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(case, f, indent=2)
        f.write("\n")

    effect = (adapted - base_out).abs().max().item()
    assert effect > MIN_EFFECT, (name, effect)
    print(
        f"{name:26s} {peft_type:13s} base={base_name:14s} {out_key}{list(adapted.shape)} "
        f"max|adapted-base|={effect:.4g} reload={reload_err:.1e}{merge_note}{gen_note} "
        f"({time.time() - t0:.2f}s) | {trainable}"
    )
    for w in peft_warnings:
        if "is_gradient_checkpointing" not in w:  # transformers deprecation noise
            print(f"    peft warning: {w}")
    return case


def print_summary(summary):
    print("\nsummary:")
    print(f"  {'case':26s} {'peft_type':13s} {'base':14s} {'tensors':>7s}  files")
    for name, case, files in summary:
        tensors = case["adapter_tensors"]
        print(f"  {name:26s} {case['peft_type']:13s} {case['base']:14s} {len(tensors):7d}  {', '.join(files)}")
        for k, shape in list(tensors.items())[:4]:
            print(f"      {k} {shape}")
        if len(tensors) > 4:
            print(f"      ... ({len(tensors) - 4} more)")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    reproducible(__file__)
    parity_dir, out_root = sys.argv[1], sys.argv[2]
    os.makedirs(out_root, exist_ok=True)
    t0 = time.time()
    summary = []
    for idx, (name, base_name, cfg_cls, kwargs, opts) in enumerate(CASES):
        case = make_case(parity_dir, out_root, idx, name, base_name, cfg_cls, kwargs, opts)
        summary.append((name, case, sorted(os.listdir(os.path.join(out_root, name)))))
    print_summary(summary)
    unreliable = [n for n, c, _ in summary if c.get("cache_generation_unreliable")]
    if unreliable:
        print(f"WARNING: HF generation with use_cache=True differs from use_cache=False for: {unreliable}")
    print(f"done: {len(CASES)} cases in {time.time() - t0:.1f}s -> {out_root}")


if __name__ == "__main__":
    main()
