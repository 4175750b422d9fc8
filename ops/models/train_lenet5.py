#!/usr/bin/env python3
"""Trains LeNet5 on the MNIST-5k split and exports it for nercc's native runtime.

    pip install -r ops/models/requirements.txt torch
    python3 ops/models/train_lenet5.py [--out models/lenet5]

Offline tooling: never run in tests or CI. Same data and split as the MLP (ops/models/mnist_data.py:
train 3,500 / calibration 500 / test 1,000, pixels in [0, 1]). Fixed seeds, one thread,
deterministic algorithms, so a run on the same machine reproduces the weights.

Architecture (classic LeNet5 with ReLU and max pooling), input [1, 28, 28]:
  conv 6@5x5 pad 2 -> ReLU -> maxpool 2 -> conv 16@5x5 -> ReLU -> maxpool 2 -> flatten
  -> dense 120 -> ReLU -> dense 84 -> ReLU -> dense 10 (logits)
Adam (lr 1e-3, cosine decay), batch 64, 30 epochs, random shifts of up to 2 pixels.

Writes model.safetensors (float32, PyTorch layouts), model.json (the runtime's description) and
reference.json (8 test images with logits computed by an independent float64 numpy forward pass
of the exported float32 weights, cross-checked against PyTorch).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = 4242
EPOCHS = 30


class LeNet5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    out = np.zeros_like(images)
    for i, image in enumerate(images.reshape(-1, 28, 28)):
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        shifted = np.roll(np.roll(image, dy, axis=0), dx, axis=1)
        if dy > 0:
            shifted[:dy, :] = 0
        elif dy < 0:
            shifted[dy:, :] = 0
        if dx > 0:
            shifted[:, :dx] = 0
        elif dx < 0:
            shifted[:, dx:] = 0
        out[i] = shifted.reshape(-1)
    return out


def accuracy(model: nn.Module, split: mnist_data.Split) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(split.images.reshape(-1, 1, 28, 28)))
    return float((logits.argmax(1).numpy() == split.labels).mean())


def numpy_forward(w: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass of the exported weights."""
    x = images.reshape(-1, 1, 28, 28).astype(np.float64)

    def conv(x, weight, bias, pad):
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out_c, in_c, kh, kw = weight.shape
        h, wd = x.shape[2] - kh + 1, x.shape[3] - kw + 1
        cols = np.empty((x.shape[0], in_c, kh, kw, h, wd))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = x[:, :, i:i + h, j:j + wd]
        return np.einsum("ncijhw,ocij->nohw", cols, weight.astype(np.float64)) + bias[None, :, None, None]

    def pool(x):
        n, c, h, wd = x.shape
        return x.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))

    x = pool(np.maximum(conv(x, w["conv1.weight"], w["conv1.bias"], 2), 0))
    x = pool(np.maximum(conv(x, w["conv2.weight"], w["conv2.bias"], 0), 0))
    x = x.reshape(x.shape[0], -1)
    for name in ("fc1", "fc2"):
        x = np.maximum(x @ w[f"{name}.weight"].astype(np.float64).T + w[f"{name}.bias"], 0)
    return x @ w["fc3.weight"].astype(np.float64).T + w["fc3.bias"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "models" / "lenet5"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    splits = mnist_data.load_splits()
    train, calibration, test = splits["train"], splits["calibration"], splits["test"]
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = int(np.ceil(len(train.labels) / 64))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * batches)
    started = time.time()
    for epoch in range(EPOCHS):
        model.train()
        order = rng.permutation(len(train.labels))
        images = shift(train.images[order], rng)
        labels = train.labels[order].astype(np.int64)
        for b in range(batches):
            x = torch.from_numpy(images[b * 64:(b + 1) * 64].reshape(-1, 1, 28, 28))
            y = torch.from_numpy(labels[b * 64:(b + 1) * 64])
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, calibration accuracy {accuracy(model, calibration):.4f}")
    seconds = time.time() - started
    model.eval()
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    test_acc = accuracy(model, test)
    calibration_acc = accuracy(model, calibration)
    train_acc = accuracy(model, train)
    print(f"test accuracy {test_acc:.4f} (train {train_acc:.4f}, calibration {calibration_acc:.4f}), {seconds:.0f} s")
    if test_acc < 0.95:
        sys.exit(f"test accuracy {test_acc:.4f} is below 0.95")
    safetensors_io.write(out / "model.safetensors", weights, {"format": "pt", "model": "lenet5"})
    description = {
        "format": "nercc-model",
        "version": 1,
        "name": "lenet5",
        "description": "LeNet5 (ReLU, max pooling) trained on the MNIST-5k subset",
        "weights": "model.safetensors",
        "input": {"shape": [1, 28, 28], "dtype": "float32",
                  "description": "28x28 grey image, row-major, pixels scaled to [0,1]"},
        "output": {"shape": [10], "kind": "logits", "labels": [str(d) for d in range(10)]},
        "layers": [
            {"type": "conv2d", "weight": "conv1.weight", "bias": "conv1.bias", "padding": 2},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "conv2d", "weight": "conv2.weight", "bias": "conv2.bias"},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "dense", "weight": "fc1.weight", "bias": "fc1.bias"},
            {"type": "relu"},
            {"type": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
            {"type": "relu"},
            {"type": "dense", "weight": "fc3.weight", "bias": "fc3.bias"},
        ],
        "training": {
            "script": "ops/models/train_lenet5.py", "dataset": mnist_data.SOURCE_NAME,
            "split": mnist_data.split_summary(), "test_accuracy": round(test_acc, 4),
            "calibration_accuracy": round(calibration_acc, 4), "train_accuracy": round(train_acc, 4),
            "seed": SEED, "epochs": EPOCHS, "seconds": round(seconds),
        },
    }
    (out / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    images = test.images[:8]
    reference = numpy_forward(weights, images)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images.reshape(-1, 1, 28, 28))).double().numpy()
    difference = float(np.abs(reference - torch_logits).max())
    print(f"numpy vs PyTorch logits: max difference {difference:.2e}")
    if difference > 1e-4:
        sys.exit("the numpy forward pass disagrees with PyTorch")
    cases = [{"input": [float(v) for v in images[i]], "label": int(test.labels[i]),
              "logits": [float(v) for v in reference[i]]} for i in range(8)]
    (out / "reference.json").write_text(json.dumps({"model": "lenet5", "cases": cases}) + "\n")


if __name__ == "__main__":
    main()
