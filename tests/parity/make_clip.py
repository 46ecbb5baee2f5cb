#!/usr/bin/env python
"""Random-weight CLIP models made by transformers, with reference outputs, an HF PEFT LoRA,
a zero-shot classification reference and an image-text training task, for
tests/test_clip.cpp; and the check of the adapters the C++ side saves.

Usage: python tests/parity/make_clip.py make OUT_DIR
       python tests/parity/make_clip.py check BASE_DIR ADAPTER_DIR|- OUTPUTS.safetensors [BASE ADAPTER OUTPUTS ...]

make:
  OUT_DIR/clip/: a CLIPModel (text: 2 layers, hidden 32, 4 heads; vision: 2 layers,
    hidden 24, 2 heads, 16x16 images in 4x4 patches; projection 20; quick_gelu), layer
    norms perturbed, logit_scale 2.0, over a CLIP-style BPE tokenizer (CLIP's normalizer,
    pre-tokenizer, </w> suffix and RobertaProcessing, a fixed vocabulary of bytes and
    merges for the prompts' words; <|endoftext|> is eos and pad) and a CLIPImageProcessor (shortest_edge 16, crop 16).
    reference.safetensors: input_ids (4 rows right-padded with the eos id, so the first
    eos, not the last, is the pooled one), attention_mask, pixel_values [4, 3, 16, 16],
    text_embeds, image_embeds, logits_per_image, loss (return_loss=True), num_parameters.
  OUT_DIR/clip/lora/: HF PEFT LoRA (r 4, q_proj and v_proj of both towers,
    init_lora_weights=False, lora_B perturbed) with reference.safetensors: the same inputs,
    logits_per_image, merged_logits_per_image (merge_and_unload).
  OUT_DIR/clip/clip_adapter/: a CLIP-Adapter (alpha 0.3, reduction 4) on visual_projection
    and text_projection in our file format, its MLPs the paper's plain-PyTorch module
    (Linear, ReLU, Linear, ReLU, no biases) applied as f' = alpha A(f) + (1 - alpha) f to
    get_image_features / get_text_features; reference: the inputs and logits_per_image.
  OUT_DIR/clip/vpt/: deep visual prompts (3 per layer, random) on the vision tower in our
    file format (vpt_prompts [layers, 3, hidden]), applied in plain PyTorch by hooks on
    transformers' CLIPModel (after [CLS] past pre_layrnorm, replaced before each later
    layer); reference: the inputs and logits_per_image.
  OUT_DIR/clip_text_proj/: CLIPTextModelWithProjection with the legacy eos_token_id 2
    (pooled at each row's largest id); reference: input_ids, attention_mask, text_embeds,
    last_hidden_state, num_parameters.
  OUT_DIR/clip_vision_proj/: CLIPVisionModelWithProjection; reference: pixel_values,
    image_embeds, last_hidden_state, num_parameters.
  OUT_DIR/clip/images/*.png and zero_shot.json: images, labels, template and, per image,
    transformers' probabilities (logits_per_image.softmax(-1)) over the label prompts,
    and the prompts' ids as the tokenizer gives them.
  OUT_DIR/colors/: train.jsonl / eval.jsonl of {"image": path, "text": "a <color> photo"},
    six colors; reference.safetensors: the first BATCH training pairs as one batch
    (input_ids padded with eos, attention_mask, pixel_values) and their loss.
check: loads BASE_DIR with CLIPModel (and the adapter with PeftModel.from_pretrained, whose
  saved keys must equal the file's), runs input_ids, attention_mask, pixel_values from
  OUTPUTS and fails (exit 1) when max |logits_per_image - OUTPUTS'| > 1e-4; several
  triples are checked in one process.
"""

import json
import os
import shutil
import sys
import warnings

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (AutoImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig,
                          CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
warnings.simplefilter("ignore")

COLORS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0), "cyan": (0, 1, 1),
          "magenta": (1, 0, 1)}
LABELS = ["red", "green", "blue", "yellow"]
TEMPLATE = "a photo of a {}"
BATCH = 6
MIN_EFFECT = 1e-2


WORDS = ["a", "photo", "of", "this", "is", "cat", "dog"] + list(COLORS)


def build_tokenizer():
    """A CLIP-style tokenizer.json (openai/clip-vit-base-patch32's pipeline) over a fixed
    vocabulary: the byte-level alphabet (alone and with </w>) and merges that build each of
    WORDS left to right (written out, since BpeTrainer breaks ties differently per run)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
            vocab.setdefault(left, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>",
                               continuing_subword_prefix=""))
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                                   r"|[^\s\p{L}\p{N}]+"), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", eos), ("<|startoftext|>", bos),
                                                      trim_offsets=False, add_prefix_space=False)
    return tok, bos, eos


def write_tokenizer(tok, d):
    tok.save(os.path.join(d, "tokenizer.json"))
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 16, "bos_token": "<|startoftext|>",
           "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def encode_padded(tok, texts, pad):
    rows = [tok.encode(t).ids for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r)
        mask[b, :len(r)] = 1
    return ids, mask, rows


def perturb_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)


def text_config(vocab, **kw):
    return CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=16, **kw)


def vision_config(**kw):
    return CLIPVisionConfig(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                            image_size=16, patch_size=4, **kw)


def random_text(vocab, eos, lengths, width, pad):
    ids = torch.full((len(lengths), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(2, vocab, (n,))
        ids[b, n - 1] = eos
        mask[b, :n] = 1
    return ids, mask


def make_clip(d, tok, bos, eos):
    torch.manual_seed(0)
    vocab = tok.get_vocab_size()
    cfg = CLIPConfig(text_config=text_config(vocab, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos).to_dict(),
                     vision_config=vision_config().to_dict(), projection_dim=20)
    model = CLIPModel(cfg).eval()
    perturb_norms(model)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    model.save_pretrained(d)
    write_tokenizer(tok, d)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(d)
    ids, mask = random_text(vocab, eos, [9, 5, 3, 7], 9, eos)
    pixels = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True)
    ref = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, text_embeds=out.text_embeds.contiguous(),
               image_embeds=out.image_embeds.contiguous(), logits_per_image=out.logits_per_image.contiguous(),
               loss=out.loss.reshape(1), num_parameters=torch.tensor([model.num_parameters()]))
    again = CLIPModel.from_pretrained(d).eval()
    with torch.no_grad():
        assert (again(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_image
                - ref["logits_per_image"]).abs().max() < 1e-6
    save_file(ref, os.path.join(d, "reference.safetensors"))
    return ref


def make_lora(d, ref):
    from peft import LoraConfig, PeftModel, get_peft_model
    inputs = dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], pixel_values=ref["pixel_values"])
    torch.manual_seed(7)
    model = get_peft_model(CLIPModel.from_pretrained(d).eval(),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.3)
        logits = model(**inputs).logits_per_image.contiguous()
    effect = (logits - ref["logits_per_image"]).abs().max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(d, "lora")
    model.save_pretrained(out)
    merged = PeftModel.from_pretrained(CLIPModel.from_pretrained(d).eval(), out).eval().merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(**inputs).logits_per_image.contiguous()
    assert (merged_logits - logits).abs().max() < 1e-4
    save_file(dict(inputs, logits_per_image=logits, merged_logits_per_image=merged_logits),
              os.path.join(out, "reference.safetensors"))
    return effect


class PaperAdapter(torch.nn.Module):
    """CLIP-Adapter's Adapter module, as the paper's code has it."""

    def __init__(self, c_in, reduction=4):
        super().__init__()
        self.fc = torch.nn.Sequential(torch.nn.Linear(c_in, c_in // reduction, bias=False), torch.nn.ReLU(inplace=True),
                                      torch.nn.Linear(c_in // reduction, c_in, bias=False), torch.nn.ReLU(inplace=True))

    def forward(self, x):
        return self.fc(x)


def make_clip_adapter(d, ref, alpha=0.3):
    torch.manual_seed(11)
    model = CLIPModel.from_pretrained(d).eval()
    dim = model.config.projection_dim
    image_adapter, text_adapter = PaperAdapter(dim), PaperAdapter(dim)
    with torch.no_grad():
        f_img = model.get_image_features(pixel_values=ref["pixel_values"]).pooler_output
        f_txt = model.get_text_features(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).pooler_output
        f_img = alpha * image_adapter(f_img) + (1 - alpha) * f_img
        f_txt = alpha * text_adapter(f_txt) + (1 - alpha) * f_txt
        f_img = f_img / f_img.norm(p=2, dim=-1, keepdim=True)
        f_txt = f_txt / f_txt.norm(p=2, dim=-1, keepdim=True)
        logits = (f_txt @ f_img.t() * model.logit_scale.exp()).t().contiguous()
    effect = (logits - ref["logits_per_image"]).abs().max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(d, "clip_adapter")
    os.makedirs(out)
    cfg = {"peft_type": "CLIP_ADAPTER", "alpha": alpha, "reduction": 4,
           "target_modules": ["visual_projection", "text_projection"], "task_type": None,
           "base_model_name_or_path": None, "inference_mode": True}
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {}
    for layer, adapter in (("visual_projection", image_adapter), ("text_projection", text_adapter)):
        tensors[f"base_model.model.{layer}.clip_adapter_down"] = adapter.fc[0].weight.detach().contiguous()
        tensors[f"base_model.model.{layer}.clip_adapter_up"] = adapter.fc[2].weight.detach().contiguous()
    save_file(tensors, os.path.join(out, "adapter_model.safetensors"))
    save_file(dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], pixel_values=ref["pixel_values"],
                   logits_per_image=logits), os.path.join(out, "reference.safetensors"))
    return effect


def vpt_hooks(model, P):
    """Visual prompt tuning (Jia et al. 2022, deep) on CLIP's vision tower, in plain PyTorch:
    P[0] goes after [CLS] as the first layer's input (after pre_layrnorm); before layer i
    >= 1 the previous layer's prompt outputs are replaced by P[i]."""
    tower, n = model.vision_model, P.shape[1]
    handles = [tower.pre_layrnorm.register_forward_hook(
        lambda m, a, out: torch.cat([out[:, :1], P[0].expand(out.shape[0], -1, -1), out[:, 1:]], 1))]
    for i, layer in enumerate(tower.encoder.layers):
        if i == 0:
            continue

        def pre(module, args, kwargs, i=i):
            h = args[0] if args else kwargs["hidden_states"]
            h = torch.cat([h[:, :1], P[i].expand(h.shape[0], -1, -1), h[:, 1 + n:]], 1)
            if args:
                return (h,) + tuple(args[1:]), kwargs
            kwargs["hidden_states"] = h
            return args, kwargs

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    return handles


def make_vpt(d, ref, n=3):
    torch.manual_seed(13)
    model = CLIPModel.from_pretrained(d).eval()
    vc = model.config.vision_config
    P = torch.randn(vc.num_hidden_layers, n, vc.hidden_size)
    handles = vpt_hooks(model, P)
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"],
                       pixel_values=ref["pixel_values"]).logits_per_image.contiguous()
    for h in handles:
        h.remove()
    effect = (logits - ref["logits_per_image"]).abs().max().item()
    assert effect > MIN_EFFECT, effect
    out = os.path.join(d, "vpt")
    os.makedirs(out)
    cfg = {"peft_type": "VPT", "num_virtual_tokens": n, "deep": True, "task_type": None,
           "base_model_name_or_path": None, "inference_mode": True, "modules_to_save": None}
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file({"vpt_prompts": P.contiguous()}, os.path.join(out, "adapter_model.safetensors"))
    save_file(dict(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], pixel_values=ref["pixel_values"],
                   logits_per_image=logits), os.path.join(out, "reference.safetensors"))
    return effect


def make_projection_models(out_dir):
    torch.manual_seed(3)
    d = os.path.join(out_dir, "clip_text_proj")
    # the legacy eos_token_id 2: transformers pools at each row's largest id
    model = CLIPTextModelWithProjection(text_config(61, eos_token_id=2, projection_dim=12)).eval()
    perturb_norms(model)
    model.save_pretrained(d)
    ids, mask = random_text(61, 5, [8, 6, 4], 8, 0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    save_file(dict(input_ids=ids, attention_mask=mask, text_embeds=out.text_embeds.contiguous(),
                   last_hidden_state=out.last_hidden_state.contiguous(),
                   num_parameters=torch.tensor([model.num_parameters()])), os.path.join(d, "reference.safetensors"))
    d = os.path.join(out_dir, "clip_vision_proj")
    model = CLIPVisionModelWithProjection(vision_config(projection_dim=10, hidden_act="gelu")).eval()
    perturb_norms(model)
    model.save_pretrained(d)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    save_file(dict(pixel_values=pixels, image_embeds=out.image_embeds.contiguous(),
                   last_hidden_state=out.last_hidden_state.contiguous(),
                   num_parameters=torch.tensor([model.num_parameters()])), os.path.join(d, "reference.safetensors"))


def color_image(rng, color):
    h, w = rng.integers(17, 41, 2)
    a = rng.normal(70, 25, (h, w, 3)) + np.array(COLORS[color]) * 120
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def make_zero_shot(d, tok, eos, rng):
    os.makedirs(os.path.join(d, "images"))
    model = CLIPModel.from_pretrained(d).eval()
    proc = AutoImageProcessor.from_pretrained(d)
    assert proc.backend == "torchvision", proc.backend
    prompts = [TEMPLATE.format(label) for label in LABELS]
    ids, mask, rows = encode_padded(tok, prompts, eos)
    images = []
    for k, color in enumerate(["red", "blue", "yellow"]):
        name = f"images/{color}.png"
        color_image(rng, color).save(os.path.join(d, name))
        images.append(name)
    pixels = proc([Image.open(os.path.join(d, n)) for n in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_image.softmax(-1)
    ref = {"labels": LABELS, "template": TEMPLATE, "prompt_ids": rows, "images": images,
           "probabilities": probs.tolist()}
    with open(os.path.join(d, "zero_shot.json"), "w") as f:
        json.dump(ref, f, indent=1)


def make_colors(d, clip_dir, tok, eos, rng):
    os.makedirs(d)
    for split, per_color in (("train", 8), ("eval", 3)):
        lines = []
        for k in range(per_color):
            for color in COLORS:
                name = f"{split}/{color}_{k}.png"
                os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
                color_image(rng, color).save(os.path.join(d, name))
                lines.append({"image": name, "text": f"a {color} photo"})
        with open(os.path.join(d, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)
        if split == "train":
            first = lines[:BATCH]
    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = AutoImageProcessor.from_pretrained(clip_dir)
    ids, mask, _ = encode_padded(tok, [x["text"] for x in first], eos)
    pixels = proc([Image.open(os.path.join(d, x["image"])) for x in first], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
    save_file(dict(input_ids=ids, attention_mask=mask, pixel_values=pixels.contiguous(), loss=loss.reshape(1)),
              os.path.join(d, "reference.safetensors"))
    return loss.item()


def make(out_dir):
    torch.set_num_threads(2)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    rng = np.random.default_rng(18)
    tok, bos, eos = build_tokenizer()
    clip_dir = os.path.join(out_dir, "clip")
    ref = make_clip(clip_dir, tok, bos, eos)
    effect = make_lora(clip_dir, ref)
    adapter_effect = make_clip_adapter(clip_dir, ref)
    vpt_effect = make_vpt(clip_dir, ref)
    make_projection_models(out_dir)
    make_zero_shot(clip_dir, tok, eos, rng)
    loss = make_colors(os.path.join(out_dir, "colors"), clip_dir, tok, eos, rng)
    print(f"clip: vocabulary {tok.get_vocab_size()}, {int(ref['num_parameters'])} parameters, "
          f"LoRA moves logits_per_image {effect:.3g}, CLIP-Adapter {adapter_effect:.3g}, VPT {vpt_effect:.3g}; colors batch loss {loss:.4f}")


def check(base_dir, adapter_dir, outputs, tol):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    model = CLIPModel.from_pretrained(base_dir).eval()
    if adapter_dir != "-":
        model = PeftModel.from_pretrained(model, adapter_dir).eval()
        file_keys = set(load_file(os.path.join(adapter_dir, "adapter_model.safetensors")).keys())
        model_keys = set(get_peft_model_state_dict(model).keys())
        if file_keys != model_keys:
            print(f"adapter keys differ: only in the file {sorted(file_keys - model_keys)[:5]}, "
                  f"only in the model {sorted(model_keys - file_keys)[:5]}")
            return 1
    t = load_file(outputs)
    with torch.no_grad():
        logits = model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                       pixel_values=t["pixel_values"]).logits_per_image
    diff = (logits - t["logits_per_image"]).abs().max().item()
    print(f"{adapter_dir}: max |logits_per_image - expected| = {diff:.3g}")
    return 0 if diff <= tol else 1


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "make":
        make(args[1])
        return 0
    if len(args) >= 4 and args[0] == "check" and len(args) % 3 == 1:
        torch.set_num_threads(2)
        failed = 0
        for i in range(1, len(args), 3):
            failed |= check(args[i], args[i + 1], args[i + 2], 1e-4)
        return failed
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
