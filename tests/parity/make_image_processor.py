#!/usr/bin/env python
"""Image preprocessing references made by transformers for tests/test_image_processor.cpp.

Usage: python tests/parity/make_image_processor.py OUT_DIR

Writes, all generated here with PIL and numpy (seeded):
  images/*.png, *.jpg   odd sizes, RGB, L, LA, RGBA, P with tRNS, 16-bit gray, 1-bit,
                        interlaced PNG; baseline 4:2:0, 4:4:4, progressive and gray JPEG
  processors/<name>/preprocessor_config.json
                        CLIPImageProcessor / ViTImageProcessor configs: defaults (224),
                        small sizes, a crop larger than the resized image (zero padding),
                        shortest_edge + longest_edge, nearest, rescale or normalize alone
  reference.safetensors rgb/<image>: uint8 [H, W, 3], what transformers' convert_to_rgb makes
                        of PIL's decoding (PIL.Image.open); decoded/<image>: np.array of the
                        PIL image as opened (L, LA, RGB, RGBA modes only);
                        pv/<processor>/<image>: pixel_values[0] of
                        AutoImageProcessor.from_pretrained(folder)(Image.open(image)), float32
  manifest.json         {"images": [...], "processors": {name: {"class", "backend"}},
                         "errors": {"<processor>/<image>": message}, "cpu_capability"}
  hostile/              files no decoder may crash on: truncated PNG/JPEG, garbage, empty,
                        GIF, BMP, a PNG declaring 100000x100000, a JPEG declaring 65000x65000,
                        a PNG whose IHDR claims 12000x12000 (under the pixel limit) in 83 bytes
  vit_tiny/             a random ViTForImageClassification (16x16, patch 8, hidden 32, 2
                        layers, 3 labels named red/green/blue in id order 0, 1, 2) with a
                        ViTImageProcessor config (16x16, do_convert_rgb)
  colors/train/<class>/, colors/eval/<class>/
                        PNG and JPEG images of 17-40 px whose dominant color is the class
                        (blue, green, red: sorted order differs from the label ids)
  colors/train.jsonl, colors/eval.jsonl
                        the same images as {"image": relative path, "label": class name}

AutoImageProcessor in transformers 5 picks the torchvision backend when torchvision is
installed; the script asserts that, so the reference is the processor users get.
"""

import io
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification, ViTImageProcessor
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
warnings.simplefilter("ignore")


def smooth_noise(rng, h, w, c):
    """Gradients plus noise: edges for the resampling filters to work on."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / max(w - 1, 1)), (y * 255 / max(h - 1, 1)), ((x + y) * 127 / max(h + w - 2, 1))], -1)
    base = np.concatenate([base] * ((c + 2) // 3), -1)[..., :c]
    return np.clip(base + rng.normal(0, 40, (h, w, c)), 0, 255).astype(np.uint8)


def make_images(d, rng):
    os.makedirs(d, exist_ok=True)
    ims = {}
    ims["rgb_37x23.png"] = Image.fromarray(smooth_noise(rng, 23, 37, 3), "RGB")
    ims["rgb_300x211.png"] = Image.fromarray(smooth_noise(rng, 211, 300, 3), "RGB")
    ims["rgb_1x1.png"] = Image.fromarray(smooth_noise(rng, 1, 1, 3), "RGB")
    ims["gray_50x31.png"] = Image.fromarray(smooth_noise(rng, 31, 50, 1)[..., 0], "L")
    rgba = smooth_noise(rng, 41, 29, 4)
    rgba[:5, :, 3] = 0
    rgba[5:10, :, 3] = 255
    ims["rgba_29x41.png"] = Image.fromarray(rgba, "RGBA")
    ims["la_33x18.png"] = Image.fromarray(smooth_noise(rng, 18, 33, 2), "LA")
    pal = Image.fromarray(smooth_noise(rng, 27, 19, 3), "RGB").quantize(colors=16)
    pal.info["transparency"] = 3
    ims["palette_trns_19x27.png"] = pal
    ims["palette_19x27.png"] = Image.fromarray(smooth_noise(rng, 27, 19, 3), "RGB").quantize(colors=64)
    g16 = (rng.integers(0, 400, (21, 26))).astype(np.uint16)
    ims["gray16_26x21.png"] = Image.fromarray(g16)
    ims["bw_40x25.png"] = Image.fromarray(smooth_noise(rng, 25, 40, 1)[..., 0], "L").convert("1")
    for name, im in ims.items():
        kw = {"transparency": 3} if name == "palette_trns_19x27.png" else {}
        im.save(os.path.join(d, name), **kw)
    Image.fromarray(smooth_noise(rng, 45, 52, 3), "RGB").save(os.path.join(d, "interlaced_52x45.png"), interlace=1)
    rgb = Image.fromarray(smooth_noise(rng, 33, 45, 3), "RGB")
    rgb.save(os.path.join(d, "rgb420_45x33.jpg"), quality=90)
    rgb.save(os.path.join(d, "rgb444_45x33.jpg"), quality=95, subsampling=0)
    Image.fromarray(smooth_noise(rng, 250, 170, 3), "RGB").save(os.path.join(d, "progressive_170x250.jpg"), quality=85,
                                                                  progressive=True)
    Image.fromarray(smooth_noise(rng, 31, 47, 1)[..., 0], "L").save(os.path.join(d, "gray_47x31.jpg"), quality=90)
    return sorted(os.listdir(d))


PROCESSORS = {
    "clip_default": ("CLIPImageProcessor", {}),
    "clip_small": ("CLIPImageProcessor", dict(size={"shortest_edge": 30}, crop_size={"height": 24, "width": 28})),
    "clip_pad": ("CLIPImageProcessor", dict(size={"shortest_edge": 20}, crop_size={"height": 26, "width": 32})),
    "clip_bilinear_norm_only": ("CLIPImageProcessor", dict(size={"shortest_edge": 25}, crop_size=22, resample=2,
                                                           do_rescale=False, image_mean=[120.0, 110.0, 100.0],
                                                           image_std=[60.0, 61.0, 62.0])),
    "clip_longest_edge": ("CLIPImageProcessor", dict(size={"shortest_edge": 40, "longest_edge": 50},
                                                     do_center_crop=False, rescale_factor=0.5 / 255)),
    "vit_default": ("ViTImageProcessor", dict(do_convert_rgb=True)),
    "vit_small": ("ViTImageProcessor", dict(size={"height": 16, "width": 20}, do_convert_rgb=True,
                                            image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.25, 0.3])),
    "vit_nearest_rescale_only": ("ViTImageProcessor", dict(size=18, resample=0, do_normalize=False,
                                                           do_convert_rgb=True)),
    "vit_no_convert": ("ViTImageProcessor", dict(size={"height": 12, "width": 12})),
}


def write_processors(d):
    from transformers import CLIPImageProcessor
    classes = {"CLIPImageProcessor": CLIPImageProcessor, "ViTImageProcessor": ViTImageProcessor}
    for name, (cls, kw) in PROCESSORS.items():
        p = os.path.join(d, name)
        os.makedirs(p, exist_ok=True)
        classes[cls](**kw).save_pretrained(p)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_hostile(d, images_dir):
    os.makedirs(d, exist_ok=True)
    png = open(os.path.join(images_dir, "rgb_300x211.png"), "rb").read()
    jpg = open(os.path.join(images_dir, "progressive_170x250.jpg"), "rb").read()
    base = open(os.path.join(images_dir, "rgb420_45x33.jpg"), "rb").read()
    files = {
        "truncated.png": png[: len(png) // 2],
        "truncated_header.png": png[:20],
        "truncated.jpg": base[: len(base) * 2 // 3],
        "truncated_progressive.jpg": jpg[: len(jpg) // 3],
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)),
        "garbage.jpg": b"\xff\xd8\xff" + bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8)),
        "random.bin": bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8)),
        "empty.png": b"",
    }
    sig = b"\x89PNG\r\n\x1a\n"
    for name, (w, h) in {"huge_100000x100000.png": (100000, 100000), "bomb_12000x12000.png": (12000, 12000)}.items():
        ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        files[name] = sig + ihdr + idat + png_chunk(b"IEND", b"")
    # A baseline JPEG whose SOF0 says 65000x65000: patch the real file's frame header.
    i = base.index(b"\xff\xc0")
    files["huge_65000x65000.jpg"] = base[: i + 5] + struct.pack(">HH", 65000, 65000) + base[i + 9:]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "GIF")
    files["image.gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "BMP")
    files["image.bmp"] = buf.getvalue()
    for name, data in files.items():
        open(os.path.join(d, name), "wb").write(data)


def write_vit(d):
    cfg = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=3,
                    id2label={0: "red", 1: "green", 2: "blue"}, label2id={"red": 0, "green": 1, "blue": 2})
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(d)
    ViTImageProcessor(size={"height": 16, "width": 16}, do_convert_rgb=True).save_pretrained(d)


def write_colors(d, rng):
    channel = {"red": 0, "green": 1, "blue": 2}
    for split, per_class in (("train", 24), ("eval", 8)):
        lines = []
        for cls in sorted(channel):
            os.makedirs(os.path.join(d, split, cls), exist_ok=True)
            for k in range(per_class):
                h, w = rng.integers(17, 41, 2)
                a = rng.normal(90, 30, (h, w, 3))
                a[..., channel[cls]] += 70
                im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
                name = f"{cls}_{k:02d}." + ("jpg" if k % 3 == 0 else "png")
                im.save(os.path.join(d, split, cls, name), quality=92)
                lines.append({"image": f"{split}/{cls}/{name}", "label": cls})
        with open(os.path.join(d, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)


def main(out):
    rng = np.random.default_rng(1234)
    images_dir = os.path.join(out, "images")
    names = make_images(images_dir, rng)
    write_processors(os.path.join(out, "processors"))
    tensors, manifest = {}, {"images": names, "processors": {}, "errors": {},
                             "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for n in names:
        im = Image.open(os.path.join(images_dir, n))
        from transformers.image_transforms import convert_to_rgb
        tensors[f"rgb/{n}"] = torch.from_numpy(convert_to_rgb(im, return_numpy=True).copy())
        if im.mode in ("L", "LA", "RGB", "RGBA"):
            tensors[f"decoded/{n}"] = torch.from_numpy(np.array(im).copy())
    for p in PROCESSORS:
        proc = AutoImageProcessor.from_pretrained(os.path.join(out, "processors", p))
        assert proc.backend == "torchvision", f"{p}: AutoImageProcessor chose {proc.backend}"
        manifest["processors"][p] = {"class": type(proc).__name__, "backend": proc.backend}
        for n in names:
            try:
                pv = proc(Image.open(os.path.join(images_dir, n)), return_tensors="pt")["pixel_values"][0]
                tensors[f"pv/{p}/{n}"] = pv.to(torch.float32).contiguous()
            except Exception as e:  # transformers refuses it: so must we
                manifest["errors"][f"{p}/{n}"] = str(e).splitlines()[0][:200]
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    write_hostile(os.path.join(out, "hostile"), images_dir)
    write_vit(os.path.join(out, "vit_tiny"))
    write_colors(os.path.join(out, "colors"), rng)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(names)} images x {len(PROCESSORS)} processors, {len(manifest['errors'])} refused by transformers")


if __name__ == "__main__":
    main(sys.argv[1])
