#!/usr/bin/env python3
"""Trains ParM parity models (Kosaian et al., SOSP 2019) for the shipped MNIST models.

    pip install -r ops/models/requirements.txt torch
    python3 ops/models/train_parity.py [--base mnist-mlp|lenet5 ...] [--k 2 3 4]

Offline tooling: never run in tests or CI. For a base model f and a group size k, the parity query
of k queries is their sum P = x_1 + ... + x_k, and the parity model F_P (the base model's
architecture) is trained with MSE towards f(x_1) + ... + f(x_k), on random groups of training
images drawn afresh every epoch (Adam 1e-3, cosine decay, 20 epochs, seed 7 + k). When one member
j is missing, the decoder reconstructs f(x_j) = F_P(P) - sum of the others. Degraded-mode accuracy
(the reconstructed prediction's argmax against the label, over 2,000 random test groups with one
random member missing) is recorded in the model description.

Writes models/<base>-parity-k<k>/{model.safetensors, model.json, reference.json} with the base
model's layer list and the name `<base>-parity-k<k>`.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402
from train_lenet5 import LeNet5, numpy_forward as lenet_numpy_forward  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 20


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def mlp_numpy_forward(w: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float64)
    for i, fc in enumerate(("fc1", "fc2", "fc3")):
        x = x @ w[f"{fc}.weight"].astype(np.float64).T + w[f"{fc}.bias"]
        if i < 2:
            x = np.maximum(x, 0)
    return x


BASES = {"mnist-mlp": (MLP, mlp_numpy_forward), "lenet5": (LeNet5, lenet_numpy_forward)}


def load_base(name: str) -> nn.Module:
    cls, _ = BASES[name]
    model = cls()
    tensors, _ = safetensors_io.read(ROOT / "models" / name / "model.safetensors")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    model.eval()
    return model


def as_input(x: np.ndarray, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t.reshape(-1, 1, 28, 28) if name == "lenet5" else t


def train(base_name: str, k: int) -> None:
    seed = 7 + k
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    splits = mnist_data.load_splits()
    train_images, test = splits["train"].images, splits["test"]
    base = load_base(base_name)
    cls, numpy_forward = BASES[base_name]
    parity = cls()
    parity.load_state_dict(base.state_dict())  # start from the base model's weights
    optimizer = torch.optim.Adam(parity.parameters(), lr=1e-3)
    groups_per_epoch = len(train_images)
    steps = EPOCHS * (groups_per_epoch // 64)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    with torch.no_grad():
        base_train = base(as_input(train_images, base_name)).numpy()
    for epoch in range(EPOCHS):
        members = rng.integers(0, len(train_images), size=(groups_per_epoch, k))
        sums = train_images[members].sum(axis=1)
        targets = base_train[members].sum(axis=1)
        for b in range(0, groups_per_epoch - 63, 64):
            optimizer.zero_grad()
            out = parity(as_input(sums[b:b + 64], base_name))
            loss = nn.functional.mse_loss(out, torch.from_numpy(targets[b:b + 64]))
            loss.backward()
            optimizer.step()
            scheduler.step()
        if epoch % 5 == 4:
            print(f"{base_name} k={k} epoch {epoch + 1}: mse {loss.item():.4f}")
    parity.eval()
    # Degraded mode: one random member missing, reconstructed by subtraction.
    with torch.no_grad():
        base_test = base(as_input(test.images, base_name)).numpy()
        members = rng.integers(0, len(test.labels), size=(2000, k))
        missing = rng.integers(0, k, size=2000)
        out = parity(as_input(test.images[members].sum(axis=1), base_name)).numpy()
    rebuilt = out - (base_test[members].sum(axis=1) - base_test[members[np.arange(2000), missing]])
    truth = test.labels[members[np.arange(2000), missing]]
    degraded = float((rebuilt.argmax(1) == truth).mean())
    print(f"{base_name} k={k}: degraded-mode accuracy {degraded:.4f}")
    name = f"{base_name}-parity-k{k}"
    out_dir = ROOT / "models" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {key: v.detach().numpy().astype(np.float32) for key, v in parity.state_dict().items()}
    safetensors_io.write(out_dir / "model.safetensors", weights, {"format": "pt", "model": name})
    description = json.loads((ROOT / "models" / base_name / "model.json").read_text())
    description["name"] = name
    description["description"] = f"ParM parity model of {base_name} for groups of {k} (input: the sum of k queries)"
    description["output"].pop("labels", None)
    description["output"]["kind"] = "values"
    description["training"] = {
        "script": "ops/models/train_parity.py", "dataset": mnist_data.SOURCE_NAME + ", sums of k training images",
        "base_model": base_name, "group_size": k, "seed": seed,
        "epochs": EPOCHS, "objective": "MSE to the sum of the base model's logits",
        "degraded_mode_accuracy": round(degraded, 4),
        "base_test_accuracy": json.loads((ROOT / "models" / base_name / "model.json").read_text())["training"]["test_accuracy"],
    }
    (out_dir / "model.json").write_text(json.dumps(description, indent=2) + "\n")
    sample = test.images[members[:8]].sum(axis=1).astype(np.float32)
    logits = numpy_forward(weights, sample)
    with torch.no_grad():
        check = parity(as_input(sample, base_name)).double().numpy()
    if float(np.abs(logits - check).max()) > 1e-3:
        sys.exit("numpy and PyTorch disagree on the parity model")
    cases = [{"input": [float(v) for v in sample[i]], "label": -1, "logits": [float(v) for v in logits[i]]}
             for i in range(8)]
    (out_dir / "reference.json").write_text(json.dumps({"model": name, "cases": cases}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", nargs="*", default=["mnist-mlp", "lenet5"])
    parser.add_argument("--k", nargs="*", type=int, default=[2, 3, 4])
    args = parser.parse_args()
    for base in args.base:
        for k in args.k:
            train(base, k)


if __name__ == "__main__":
    main()
