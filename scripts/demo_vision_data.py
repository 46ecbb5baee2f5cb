"""Data and base model for scripts/demo_vision.sh, with nothing downloaded.

Usage: demo_vision_data.py OUT_DIR [N_TRAIN N_TEST]

Reads Debian's Fashion-MNIST (package dataset-fashion-mnist, idx files under
/usr/share/datasets/fashion-mnist) and writes
  OUT_DIR/data/{train,test}/NNNNN.png and {train,test}.jsonl ({"image", "label"}): the
      adaptation task, all 10 classes (first N_TRAIN training images, first N_TEST test
      images), as PNG files that `peft train` decodes and preprocesses itself;
  OUT_DIR/base/: a small ViTForImageClassification (config.json, model.safetensors,
      preprocessor_config.json) with a new, untrained 10-class head.

The base starts from random weights (transformers' config classes, no hub) and is then
pretrained here briefly, in plain PyTorch, on a *different* task: the first five classes
only (T-shirt, trouser, pullover, dress, coat), on training images the adaptation set does
not use. So the frozen backbone knows clothes but has never seen sandals, shirts,
sneakers, bags or boots, and the adapters have something to learn. Also prints the
accuracy of a linear probe (the 10-class head trained alone on the frozen backbone), the
baseline the adapters should beat.
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification

SRC = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and std (of x / 255)
PRETRAIN_STEPS = 200  # batches of 64: under a minute on two idle cores


def read_idx(name):
    with gzip.open(os.path.join(SRC, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_split(out, split, images, labels):
    os.makedirs(os.path.join(out, split), exist_ok=True)
    with open(os.path.join(out, split + ".jsonl"), "w") as f:
        for i, (img, y) in enumerate(zip(images, labels)):
            rel = f"{split}/{i:05d}.png"
            Image.fromarray(img, mode="L").save(os.path.join(out, rel))
            f.write(json.dumps({"image": rel, "label": int(y)}) + "\n")


def pixels(images):
    # What peft's ViTImageProcessor path gives for these PNGs: gray -> RGB, x/255, normalize.
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = (x - MEAN) / STD
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def config(num_labels):
    return ViTConfig(image_size=28, patch_size=7, num_channels=3, hidden_size=64,
                     num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                     num_labels=num_labels, id2label={i: c for i, c in enumerate(CLASSES[:num_labels])},
                     label2id={c: i for i, c in enumerate(CLASSES[:num_labels])})


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(pixel_values=x[i:i + 500]).logits.argmax(-1) for i in range(0, len(x), 500)])
    model.train()
    return (pred == y).float().mean().item()


def pretrain(x, y, steps):
    """Full training of a random ViT on the five-class task, for `steps` batches of 64."""
    torch.manual_seed(0)
    model = ViTForImageClassification(config(5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step, g = 0, torch.Generator().manual_seed(0)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - 63, 64):
            idx = perm[i:i + 64]
            loss = model(pixel_values=x[idx], labels=y[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                return model, loss.item()


def linear_probe(model, xtr, ytr, xte, yte, epochs=3, lr=1e-3):
    """The 10-class head alone on the frozen backbone, with the adapters' batch size and lr."""
    for p in model.vit.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.classifier.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 32):
            idx = perm[i:i + 32]
            loss = model(pixel_values=xtr[idx], labels=ytr[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return accuracy(model, xte, yte)


def main():
    out = sys.argv[1]
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    n_test = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    train_x, train_y = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")

    data = os.path.join(out, "data")
    write_split(data, "train", train_x[:n_train], train_y[:n_train])
    write_split(data, "test", test_x[:n_test], test_y[:n_test])

    # Pretraining set: classes 0-4 among the training images after the adaptation subset.
    rest_x, rest_y = train_x[n_train:], train_y[n_train:]
    keep = rest_y < 5
    px, py = pixels(rest_x[keep][:20000]), torch.from_numpy(rest_y[keep][:20000].astype(np.int64))
    t0 = time.time()
    pre, loss = pretrain(px, py, PRETRAIN_STEPS)
    te5 = test_y[n_test:] < 5
    acc5 = accuracy(pre, pixels(test_x[n_test:][te5][:2000]), torch.from_numpy(test_y[n_test:][te5][:2000].astype(np.int64)))
    print(f"pretrained the random ViT on classes 0-4 ({len(px)} images): {PRETRAIN_STEPS} steps "
          f"of 64 ({time.time() - t0:.0f} s), last loss {loss:.3f}, "
          f"5-class test accuracy {acc5:.3f}")

    # The base: the pretrained backbone with a new 10-class head (HF's init, seeded).
    torch.manual_seed(1)
    base = ViTForImageClassification(config(10))
    missing, unexpected = base.load_state_dict({k: v for k, v in pre.state_dict().items()
                                                if not k.startswith("classifier.")}, strict=False)
    assert sorted(missing) == ["classifier.bias", "classifier.weight"] and not unexpected, (missing, unexpected)
    base_dir = os.path.join(out, "base")
    base.save_pretrained(base_dir)
    with open(os.path.join(base_dir, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "ViTImageProcessor", "do_convert_rgb": True, "do_resize": False,
                   "size": {"height": 28, "width": 28}, "do_rescale": True, "rescale_factor": 1 / 255,
                   "do_normalize": True, "image_mean": [MEAN] * 3, "image_std": [STD] * 3}, f, indent=2)

    xtr, ytr = pixels(train_x[:n_train]), torch.from_numpy(train_y[:n_train].astype(np.int64))
    xte, yte = pixels(test_x[:n_test]), torch.from_numpy(test_y[:n_test].astype(np.int64))
    print(f"base model: {sum(p.numel() for p in base.parameters()):,} parameters, "
          f"untrained 10-class head: test accuracy {accuracy(base, xte, yte):.3f}")
    probe = linear_probe(base, xtr, ytr, xte, yte)
    with open(os.path.join(out, "linear_probe.json"), "w") as f:
        json.dump({"test_accuracy": probe, "trainable": sum(p.numel() for p in base.classifier.parameters()),
                   "all": sum(p.numel() for p in base.parameters())}, f)
    print(f"linear probe (head only, frozen backbone, 3 epochs, PyTorch): test accuracy {probe:.3f}")


if __name__ == "__main__":
    main()
