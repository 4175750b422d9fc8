#!/usr/bin/env python3
"""Trains an MLP on scikit-learn's bundled 8x8 digits and exports it for nercc's native runtime.

    pip install scikit-learn torch
    python3 ops/models/train_digits_mlp.py

Offline tooling: never run in tests or CI. Data: `sklearn.datasets.load_digits()` (1,797 real 8x8
images, pixel values 0-16, scaled to [0, 1]), split per class with a fixed seed into 70% train,
10% calibration and 20% test; the calibration and test splits are written to data/digits/ as
float32 images (N x 64) and uint8 labels. Architecture 64 -> 128 -> 64 -> 10 (ReLU, logits),
Adam 1e-3, batch 32, 60 epochs, seed 99, one thread, deterministic algorithms.

Writes models/digits-mlp/{model.safetensors, model.json, reference.json}; the reference logits come
from an independent float64 numpy forward pass of the exported float32 weights.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = 99
SPLIT_SEED = 20250102
EPOCHS = 60


def split(labels: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    parts = {"train": [], "calibration": [], "test": []}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_test, n_cal = round(0.2 * len(idx)), round(0.1 * len(idx))
        parts["test"].append(idx[:n_test])
        parts["calibration"].append(idx[n_test:n_test + n_cal])
        parts["train"].append(idx[n_test + n_cal:])
    return {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    images = (digits.data / 16.0).astype("<f4")
    labels = digits.target.astype("|u1")
    parts = split(labels)
    data_dir = ROOT / "data" / "digits"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("calibration", "test"):
        np.save(data_dir / f"{name}-images.npy", np.ascontiguousarray(images[parts[name]]))
        np.save(data_dir / f"{name}-labels.npy", np.ascontiguousarray(labels[parts[name]]))
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(SEED)
    x_train = torch.from_numpy(images[parts["train"]])
    y_train = torch.from_numpy(labels[parts["train"]].astype(np.int64))
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(y_train)))
        for b in range(0, len(order), 32):
            batch = order[b:b + 32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()

    def accuracy(name: str) -> float:
        with torch.no_grad():
            predicted = model(torch.from_numpy(images[parts[name]])).argmax(1).numpy()
        return float((predicted == labels[parts[name]]).mean())

    test_acc = accuracy("test")
    print(f"test accuracy {test_acc:.4f}, calibration {accuracy('calibration'):.4f}, train {accuracy('train'):.4f}")
    names = {"0": "fc1", "2": "fc2", "4": "fc3"}
    weights = {f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v.detach().numpy().astype(np.float32)
               for k, v in model.state_dict().items()}
    out = ROOT / "models" / "digits-mlp"
    out.mkdir(parents=True, exist_ok=True)
    safetensors_io.write(out / "model.safetensors", weights, {"format": "pt", "model": "digits-mlp"})
    layers = []
    for i, fc in enumerate(("fc1", "fc2", "fc3")):
        layers.append({"type": "dense", "weight": f"{fc}.weight", "bias": f"{fc}.bias"})
        if i < 2:
            layers.append({"type": "relu"})
    description = {
        "format": "nercc-model", "version": 1, "name": "digits-mlp",
        "description": "MLP 64-128-64-10 trained on scikit-learn's 8x8 digits",
        "weights": "model.safetensors",
        "input": {"shape": [64], "dtype": "float32", "description": "8x8 grey image, row-major, values / 16"},
        "output": {"shape": [10], "kind": "logits", "labels": [str(d) for d in range(10)]},
        "layers": layers,
        "training": {"script": "ops/models/train_digits_mlp.py", "dataset": "scikit-learn digits (1,797 images)",
                     "split": "per class 70/10/20 %, split seed 20250102", "test_accuracy": round(test_acc, 4),
                     "calibration_accuracy": round(accuracy("calibration"), 4), "seed": SEED},
    }
    (out / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    test_images = images[parts["test"]][:8]
    x = test_images.astype(np.float64)
    for i, fc in enumerate(("fc1", "fc2", "fc3")):
        x = x @ weights[f"{fc}.weight"].astype(np.float64).T + weights[f"{fc}.bias"]
        if i < 2:
            x = np.maximum(x, 0)
    cases = [{"input": [float(v) for v in test_images[i]], "label": int(labels[parts["test"]][i]),
              "logits": [float(v) for v in x[i]]} for i in range(8)]
    (out / "reference.json").write_text(json.dumps({"model": "digits-mlp", "cases": cases}) + "\n")


if __name__ == "__main__":
    main()
