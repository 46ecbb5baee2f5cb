#!/usr/bin/env python
"""WaveFT references made by HF PEFT for tests/test_waveft.cpp.

Usage: python tests/parity/make_waveft.py make OUT_DIR
       python tests/parity/make_waveft.py check BASE ADAPTER OUTPUTS [BASE ADAPTER OUTPUTS ...]

make writes, as make_vera.py does: llama/, llama_bias/ and gpt2/ (tiny random bases with
inputs.safetensors) and per case <case>/adapter/ (waveft_spectrum set to N(0, 0.02²) values,
trained biases moved), <case>/reference.safetensors (inputs, logits, merged_logits,
"delta.<module path>": HF's get_delta_weight [out, in], and "indices.<module path>": HF's
waveft_indices [2, n], never filed) and case.json ({"base", "trainable"}).
waverec2d.safetensors: for every wavelet family WaveFT can use, "coeffs.<family>" [4, 15, 20]
(cA, cH, cV, cD drawn N(0, 1)) and "out.<family>", HF's waverec2d of them.
It also checks that HF's coif5 (in its config's list) does not reconstruct a layer's shape
and that HF's filters stop at db10 / sym10 (test_waveft refuses those families by name).
check: HF loads each of our adapters strictly with our logits.
Cases:
  waveft_llama        HF's default targets (q_proj, v_proj), db1, n_frequency 64, scaling 25
  waveft_llama_sym    all seven projections, sym4, scaling 10, n_frequency 100 with an
                      n_frequency_pattern (down_proj 200, k_proj 30), random_loc_seed -3
  waveft_llama_coif   layer 1's k_proj, o_proj, gate_proj, down_proj, coif2,
                      proportional_parameters (n_frequency 50 a layer on average), seed 5
  waveft_llama_direct Llama with biases, q/k/v/o, use_idwt false (the sparse matrix itself),
                      scaling 3, bias waveft_only
  waveft_gpt2         GPT-2's Conv1D c_attn and mlp.c_proj (fan_in_fan_out), db3, bias all
"""

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shira import fixture_main  # noqa: E402
from make_vera import load_base, make_base, make_case  # noqa: E402

from peft import WaveFTConfig, get_peft_model  # noqa: E402
from peft.tuners.waveft.wavelet import _WAVELET_COEFFS  # noqa: E402
from peft.tuners.waveft.waverec2d import waverec2d  # noqa: E402

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CASES = [
    ("waveft_llama", "llama", dict(n_frequency=64)),
    ("waveft_llama_sym", "llama",
     dict(n_frequency=100, scaling=10.0, wavelet_family="sym4", random_loc_seed=-3, target_modules=SEVEN,
          n_frequency_pattern={"down_proj": 200, "k_proj": 30})),
    ("waveft_llama_coif", "llama",
     dict(n_frequency=50, wavelet_family="coif2", random_loc_seed=5, proportional_parameters=True,
          target_modules=["k_proj", "o_proj", "gate_proj", "down_proj"], layers_to_transform=[1])),
    ("waveft_llama_direct", "llama_bias",
     dict(n_frequency=80, scaling=3.0, use_idwt=False, bias="waveft_only",
          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    ("waveft_gpt2", "gpt2",
     dict(n_frequency=90, wavelet_family="db3", target_modules=["c_attn", "mlp.c_proj"], fan_in_fan_out=True,
          bias="all")),
]
FAMILIES = [f for f in _WAVELET_COEFFS if f != "coif5"]


def waveft_layers(model):
    for name, m in model.named_modules():
        if "default" in getattr(m, "waveft_indices", {}):
            yield name.removeprefix("base_model.model."), m


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "waveft_spectrum" in n:
                p.copy_(0.02 * torch.randn_like(p))
            elif p.requires_grad and n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def deltas_and_indices(model):
    out = {}
    for path, m in waveft_layers(model):
        with torch.no_grad():
            out["delta." + path] = m.get_delta_weight("default").float().contiguous()
        out["indices." + path] = m.waveft_indices["default"].clone().contiguous()
    return out


def waverec2d_references(out):
    g = torch.Generator().manual_seed(21)
    tensors = {}
    for fam in FAMILIES:
        c = torch.randn(4, 15, 20, generator=g)
        tensors["coeffs." + fam] = c
        tensors["out." + fam] = waverec2d((c[0], (c[1], c[2], c[3])), fam).contiguous()
    save_file(tensors, os.path.join(out, "waverec2d.safetensors"))
    print(f"waverec2d: {len(FAMILIES)} families")


def check_hf_families(out):
    """coif5 is in HF's config list but gives a wrongly shaped delta; db11 has no filter."""
    model = get_peft_model(load_base(os.path.join(out, "llama")),
                           WaveFTConfig(n_frequency=8, wavelet_family="coif5", target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    shape = tuple(layer.get_delta_weight("default").shape)
    assert shape != (32, 32), "HF's coif5 now reconstructs the layer's shape: allow it in wavelets.cpp"
    print(f"coif5: HF's delta for q_proj [32, 32] is {list(shape)}")
    assert "db11" not in _WAVELET_COEFFS and "sym11" not in _WAVELET_COEFFS and "coif6" not in _WAVELET_COEFFS, \
        "HF has more wavelet filters now: add them to wavelet_coeffs.cpp"


def make(out):
    for kind in ("llama", "llama_bias", "gpt2"):
        make_base(kind, os.path.join(out, kind))
    for name, base, kw in CASES:
        make_case(out, name, base, WaveFTConfig(**kw), perturb, deltas_and_indices)
    waverec2d_references(out)
    check_hf_families(out)


if __name__ == "__main__":
    fixture_main(__doc__, make, threads=1)
