#!/usr/bin/env python
"""Random-weight mixture-of-experts models made by transformers (Mixtral; Qwen3-MoE with a
dense layer among the sparse ones; Qwen2-MoE with a gated shared expert, q/k/v bias and
decoder_sparse_step 2), with reference outputs, and an HF PEFT LoRA adapter on attention
and the stacked experts (target_parameters), for tests/test_moe.cpp.

Usage: python tests/parity/make_moe.py OUT_DIR

OUT_DIR/<case>/ holds the model (save_pretrained, float32: transformers writes per-expert
keys, Mixtral's block_sparse_moe.experts.N.w1/w2/w3, Qwen3-MoE's
mlp.experts.N.gate_proj/up_proj/down_proj) and reference.safetensors with
input_ids, attention_mask (right-padded rows), logits, loss (labels = input_ids, padding
-100; transformers' default output_router_logits=False, so no router loss in it),
gen_input_ids, gen_output_ids (32 greedy tokens), num_parameters.
OUT_DIR/<case>/lora/: the adapter HF PEFT saved (q_proj, v_proj and
experts.gate_up_proj / experts.down_proj, weights perturbed so outputs move), with
reference.safetensors holding the inputs, its unmerged logits and the logits after
merge_and_unload.
OUT_DIR/qwen2_moe/ia3/: an (IA)3 adapter HF PEFT saved (k_proj, v_proj, and the down_proj
of the dense MLPs and shared experts as feed-forward), with its logits.
OUT_DIR/<case>_aux/ (mixtral, qwen2_moe): the same weights with output_router_logits true
and router_aux_loss_coef 0.05; aux.safetensors holds transformers' loss (LM + coef * the
router load-balancing loss, padding masked) and aux_loss on the padded batch, with the
LoRA adapter <case>/lora loaded (trainable), and the gradients of its tensors after
loss.backward() under "grad.<its key in adapter_model.safetensors>".
"""

import os
import shutil
import sys

import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig,
                          Qwen2MoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

S = 9
LENGTHS = [9, 6, 2]
GEN_PROMPT_LEN = 5
GEN_NEW = 32
MIN_MARGIN = 1e-2
MIN_EFFECT = 1e-2  # the adapter must move the logits at least this much
SEED = 1357


def mixtral():
    # GQA 4:2, 5 experts top-2, untied, odd sizes
    return MixtralConfig(
        vocab_size=101, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2, tie_word_embeddings=False,
        max_position_embeddings=64, initializer_range=0.2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def qwen3_moe():
    # head_dim free of hidden / heads, 6 experts top-3 without renormalization, layer 1 dense
    # (mlp_only_layers), tied
    return Qwen3MoeConfig(
        vocab_size=101, hidden_size=32, head_dim=12, intermediate_size=48, moe_intermediate_size=24,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, num_experts=6, num_experts_per_tok=3,
        norm_topk_prob=False, mlp_only_layers=[1], tie_word_embeddings=True, max_position_embeddings=64,
        initializer_range=0.2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def qwen2_moe():
    # 6 experts top-2 without renormalization, a shared expert (gated), q/k/v bias, GQA,
    # decoder_sparse_step 2 (layers 1 and 3 sparse, 0 and 2 dense), untied
    return Qwen2MoeConfig(
        vocab_size=101, hidden_size=32, intermediate_size=44, moe_intermediate_size=20,
        shared_expert_intermediate_size=28, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        num_experts=6, num_experts_per_tok=2, decoder_sparse_step=2, tie_word_embeddings=False,
        max_position_embeddings=64, initializer_range=0.2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


AUX_COEF = 0.05

CASES = [
    ("mixtral", MixtralForCausalLM, mixtral,
     dict(target_modules=["q_proj", "v_proj"], rank_pattern={"layers.1.mlp.experts.down_proj": 2})),
    ("qwen3_moe", Qwen3MoeForCausalLM, qwen3_moe, dict(target_modules=["q_proj", "o_proj"])),
    # HF PEFT 0.21 rewrites gate_proj / up_proj / down_proj in target_modules into the
    # experts' target_parameters on transformers 5, so of the shared expert only its gate
    # is a LoRA module target.
    ("qwen2_moe", Qwen2MoeForCausalLM, qwen2_moe, dict(target_modules=["q_proj", "v_proj", "shared_expert_gate"])),
]


def build(cls, cfg_factory, seed):
    torch.manual_seed(seed)
    cfg = cfg_factory()
    cfg._attn_implementation = "eager"
    model = cls(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def greedy(model, vocab):
    gc = model.generation_config
    for k in ("temperature", "top_k", "top_p", "eos_token_id", "bos_token_id", "max_length", "cache_implementation"):
        setattr(gc, k, None)
    prompt = torch.randint(1, vocab, (1, GEN_PROMPT_LEN), dtype=torch.int64)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=GEN_NEW,
                             min_new_tokens=GEN_NEW, do_sample=False, eos_token_id=None, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True)
    margin = min(float(torch.topk(sc[0].float(), 2).values.diff().abs()) for sc in out.scores)
    return prompt, out.sequences.contiguous(), margin


def make_base(case_dir, cls, cfg_factory):
    seed = SEED
    for _ in range(100):
        model = build(cls, cfg_factory, seed)
        torch.manual_seed(seed + 1)
        prompt, seq, margin = greedy(model, model.config.vocab_size)
        if margin > MIN_MARGIN:
            break
        seed += 1
    else:
        raise RuntimeError("no seed with a stable greedy margin")
    vocab = model.config.vocab_size
    ids = torch.zeros(len(LENGTHS), S, dtype=torch.int64)
    mask = torch.zeros(len(LENGTHS), S, dtype=torch.int64)
    for b, n in enumerate(LENGTHS):
        ids[b, :n] = torch.randint(1, vocab, (n,), dtype=torch.int64)
        mask[b, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=labels)
    ref = dict(input_ids=ids, attention_mask=mask, logits=out.logits.float().contiguous(),
               loss=out.loss.float().reshape(1), gen_input_ids=prompt, gen_output_ids=seq,
               num_parameters=torch.tensor([model.num_parameters()], dtype=torch.int64))
    model.save_pretrained(case_dir, safe_serialization=True)
    save_file(ref, os.path.join(case_dir, "reference.safetensors"))
    return ref, margin


def make_lora(case_dir, ref, lora_kwargs):
    base = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager", dtype=torch.float32).eval()
    cfg = LoraConfig(r=3, lora_alpha=6, target_parameters=["experts.gate_up_proj", "experts.down_proj"],
                     init_lora_weights=False, **lora_kwargs)
    torch.manual_seed(7)
    model = get_peft_model(base, cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.3)
        logits = model(ref["input_ids"], attention_mask=ref["attention_mask"]).logits.float().contiguous()
    m = ref["attention_mask"].unsqueeze(-1)
    effect = ((logits - ref["logits"]).abs() * m).max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(case_dir, "lora")
    model.save_pretrained(out, safe_serialization=True)
    # the experts' share alone must move the outputs too (else the test would not see it)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and "experts" not in name:
                p.zero_()
        experts_only = model(ref["input_ids"], attention_mask=ref["attention_mask"]).logits
        expert_effect = ((experts_only - ref["logits"]).abs() * m).max().item()
    assert expert_effect > MIN_EFFECT, expert_effect
    model = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager", dtype=torch.float32).eval()
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, out).eval()
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(ref["input_ids"], attention_mask=ref["attention_mask"]).logits.float().contiguous()
    assert ((merged_logits - logits).abs() * m).max().item() < 1e-4
    save_file(dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], logits=logits,
                   merged_logits=merged_logits), os.path.join(out, "reference.safetensors"))
    return effect, expert_effect


def make_ia3(case_dir, ref):
    base = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager", dtype=torch.float32).eval()
    cfg = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    model = get_peft_model(base, cfg).eval()
    torch.manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.add_(torch.randn_like(p) * 0.3)
        logits = model(ref["input_ids"], attention_mask=ref["attention_mask"]).logits.float().contiguous()
    targets = sorted(n for n, m in model.named_modules() if hasattr(m, "ia3_l") and "shared_expert" in n)
    assert targets, "IA3 missed the shared experts"
    effect = ((logits - ref["logits"]).abs() * ref["attention_mask"].unsqueeze(-1)).max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(case_dir, "ia3")
    model.save_pretrained(out, safe_serialization=True)
    save_file(dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], logits=logits),
              os.path.join(out, "reference.safetensors"))
    return effect


def make_aux(out, name, ref):
    """The router load-balancing loss in transformers' training loss, and its gradients."""
    case_dir = os.path.join(out, name)
    aux_dir = os.path.join(out, name + "_aux")
    shutil.rmtree(aux_dir, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(case_dir, attn_implementation="eager", dtype=torch.float32,
                                                output_router_logits=True, router_aux_loss_coef=AUX_COEF).eval()
    base.save_pretrained(aux_dir, safe_serialization=True)
    model = PeftModel.from_pretrained(base, os.path.join(case_dir, "lora"), is_trainable=True).eval()
    ids, mask = ref["input_ids"], ref["attention_mask"]
    outputs = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    outputs.loss.backward()
    saved = dict(input_ids=ids, attention_mask=mask, loss=outputs.loss.detach().float().reshape(1),
                 aux_loss=outputs.aux_loss.detach().float().reshape(1))
    for n, p in model.named_parameters():
        if p.requires_grad:
            saved["grad." + n.replace(".default.", ".")] = p.grad.detach().float().contiguous()
    save_file(saved, os.path.join(aux_dir, "aux.safetensors"))
    return outputs.loss.item(), outputs.aux_loss.item()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    torch.set_num_threads(2)
    for name, cls, cfg_factory, lora_kwargs in CASES:
        case_dir = os.path.join(sys.argv[1], name)
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir)
        ref, margin = make_base(case_dir, cls, cfg_factory)
        effect, expert_effect = make_lora(case_dir, ref, lora_kwargs)
        print(f"{name}: greedy margin {margin:.3g}; LoRA moves logits {effect:.3g} "
              f"(experts alone {expert_effect:.3g})")
        if name == "qwen2_moe":
            print(f"{name}: IA3 moves logits {make_ia3(case_dir, ref):.3g}")
        if name in ("mixtral", "qwen2_moe"):
            loss, aux = make_aux(sys.argv[1], name, ref)
            print(f"{name}_aux: loss {loss:.6f} aux_loss {aux:.6f}")


if __name__ == "__main__":
    main()
