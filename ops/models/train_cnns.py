#!/usr/bin/env python3
"""Train nercc's convolutional MNIST models with PyTorch (CPU) and export them for the runtime.

    pip install -r ops/models/requirements-torch.txt
    python3 ops/models/train_cnns.py                       # both models, written into the repository
    python3 ops/models/train_cnns.py --models repvgg-mnist # one model
    python3 ops/models/train_cnns.py --out DIR             # writes DIR/models/<name>/ instead

Offline tooling: never run in tests or CI. The data is the MNIST-5k split of the MLP
(ops/models/mnist_data.py: train 3,500 / calibration 500 / test 1,000, pixels in [0, 1]). A query
is a flat 784-vector; the runtime reads it in C order as the description's input shape [1, 28, 28].

Models (see docs/models.md):

  lenet5        conv 6@5x5 pad 2 -> ReLU -> maxpool 2 -> conv 16@5x5 -> ReLU -> maxpool 2 -> flatten
                -> dense 120 -> ReLU -> dense 84 -> ReLU -> dense 10 (logits)
  repvgg-mnist  six RepVGG blocks (3x3 conv+BN, 1x1 conv+BN and, where the shape allows, an identity
                BN, summed, then ReLU), widths 16-32-32-64-64-64, strides 1-2-1-2-1-1, then global
                average pooling and dense 64 -> 10. Trained in that form, then every block is
                re-parameterised into one 3x3 conv with bias, so the exported model is
                conv3x3 + ReLU (x6) -> avgpool 7 -> flatten -> dense.

Writes, for each model, models/<name>/model.safetensors (float32, PyTorch layouts: conv
[out, in, kh, kw], dense [out, in]), model.json (validated against
schemas/model-description.schema.json) and reference.json (the first 8 test images with logits
computed in float64 from the exported float32 weights by the numpy interpreter of model.json in this
file, which does not use PyTorch, and cross-checked against PyTorch on the whole test split).

Determinism: fixed seeds, one thread (set below, before numpy and torch are imported),
torch.use_deterministic_algorithms(True). Two runs on the same machine and package versions give
byte-identical files.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402
from train_mnist_mlp import validate_description, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "ops/models/train_cnns.py"
INPUT_SHAPE = (1, mnist_data.IMAGE_SIDE, mnist_data.IMAGE_SIDE)
REFERENCE_CASES = 8
TORCH_TOLERANCE = 1e-4  # numpy float64 vs PyTorch float32 logits, over the whole test split
FUSION_TOLERANCE = 1e-9  # fused model vs training-form model, both in float64
MAX_WEIGHTS_BYTES = 2_000_000
EVAL_CHUNK = 250


# ---------------------------------------------------------------------------------------------
# Networks (training form)


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


class RepVGGBlock(nn.Module):
    """relu(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)); the identity branch exists only when the block
    keeps the shape (same channels, stride 1). Both convolutions have no bias and the same stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv3 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn_identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_identity is not None:
            y = y + self.bn_identity(x)
        return torch.relu(y)

    def fused(self) -> tuple[np.ndarray, np.ndarray]:
        """The single 3x3 kernel [out, in, 3, 3] and bias [out] (float64) that compute the same
        pre-activation as the three branches in eval mode: each branch's BN is folded into its
        kernel (K * gamma / sqrt(var + eps), beta - mean * gamma / sqrt(var + eps)), the 1x1 kernel
        sits at the centre of a 3x3 one, and the identity is the 3x3 kernel with 1 at [c, c, 1, 1]."""

        def fold(kernel: np.ndarray, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
            gamma = bn.weight.detach().double().numpy()
            beta = bn.bias.detach().double().numpy()
            mean = bn.running_mean.detach().double().numpy()
            std = np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
            return kernel * (gamma / std)[:, None, None, None], beta - mean * gamma / std

        out_channels, in_channels = self.conv3.weight.shape[:2]
        k3, b3 = fold(self.conv3.weight.detach().double().numpy(), self.bn3)
        k1 = np.zeros((out_channels, in_channels, 3, 3))
        k1[:, :, 1, 1] = self.conv1.weight.detach().double().numpy()[:, :, 0, 0]
        k1, b1 = fold(k1, self.bn1)
        kernel, bias = k3 + k1, b3 + b1
        if self.bn_identity is not None:
            identity = np.zeros((out_channels, in_channels, 3, 3))
            identity[np.arange(in_channels), np.arange(in_channels), 1, 1] = 1.0
            ki, bi = fold(identity, self.bn_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias


REPVGG_BLOCKS = ((1, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1))


class RepVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RepVGGBlock(i, o, s) for i, o, s in REPVGG_BLOCKS)
        self.head = nn.Linear(REPVGG_BLOCKS[-1][1], mnist_data.NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class FusedRepVGG(nn.Module):
    """The inference form of RepVGG in PyTorch (float32): what the exported description computes."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for index, (i, o, s) in enumerate(REPVGG_BLOCKS):
            conv = nn.Conv2d(i, o, 3, stride=s, padding=1)
            conv.weight.data = torch.from_numpy(tensors[f"block{index}.weight"].copy())
            conv.bias.data = torch.from_numpy(tensors[f"block{index}.bias"].copy())
            self.convs.append(conv)
        self.head = nn.Linear(REPVGG_BLOCKS[-1][1], mnist_data.NUM_CLASSES)
        self.head.weight.data = torch.from_numpy(tensors["head.weight"].copy())
        self.head.bias.data = torch.from_numpy(tensors["head.bias"].copy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(torch.flatten(nn.functional.avg_pool2d(x, 7), 1))


# ---------------------------------------------------------------------------------------------
# Export: tensors and layer lists


def lenet5_export(model: LeNet5) -> tuple[dict[str, np.ndarray], list[dict]]:
    tensors = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    layers = [
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
    ]
    return tensors, layers


def repvgg_export(model: RepVGG) -> tuple[dict[str, np.ndarray], list[dict]]:
    tensors: dict[str, np.ndarray] = {}
    layers: list[dict] = []
    for index, block in enumerate(model.blocks):
        kernel, bias = block.fused()
        tensors[f"block{index}.weight"] = kernel.astype(np.float32)
        tensors[f"block{index}.bias"] = bias.astype(np.float32)
        layer = {"type": "conv2d", "weight": f"block{index}.weight", "bias": f"block{index}.bias"}
        if block.stride != 1:
            layer["stride"] = block.stride
        layer["padding"] = 1
        layers += [layer, {"type": "relu"}]
    tensors["head.weight"] = model.head.weight.detach().numpy().astype(np.float32)
    tensors["head.bias"] = model.head.bias.detach().numpy().astype(np.float32)
    layers += [
        {"type": "avgpool2d", "kernel_size": 7},
        {"type": "flatten"},
        {"type": "dense", "weight": "head.weight", "bias": "head.bias"},
    ]
    return tensors, layers


# ---------------------------------------------------------------------------------------------
# Independent numpy forward pass: an interpreter of the description's layer list, in float64


def _pair(value: int | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], fill: float):
    """[N, C, H', W', kh, kw] view of the windows of an NCHW array (PyTorch geometry, floor mode)."""
    (ph, pw), (sh, sw) = padding, stride
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(padded, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


# An interpreter of a description's layers: (layers, tensors, flat float32 images) -> float64 outputs.
# numpy_accuracy, reference_cases and check_export take one, so that scripts for other layer types
# (train_vit.py) reuse them with their own interpreter.
Forward = Callable[[list[dict], dict[str, np.ndarray], np.ndarray], np.ndarray]


def numpy_forward(layers: list[dict], tensors: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Apply `layers` (model.json entries) to flat float32 images, in float64. Supports the layer
    types and parameters the exported models use, and refuses anything else."""
    out = []
    for start in range(0, images.shape[0], EVAL_CHUNK):
        x = images[start : start + EVAL_CHUNK].astype(np.float64).reshape((-1,) + INPUT_SHAPE)
        for layer in layers:
            kind = layer["type"]
            if kind == "conv2d":
                if _pair(layer.get("dilation", 1)) != (1, 1):
                    raise ValueError("dilation is not supported here")
                weight = tensors[layer["weight"]].astype(np.float64)
                v = _windows(x, weight.shape[2:], _pair(layer.get("stride", 1)), _pair(layer.get("padding", 0)), 0.0)
                x = np.tensordot(v, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
                if "bias" in layer:
                    x = x + tensors[layer["bias"]].astype(np.float64)[None, :, None, None]
            elif kind in ("maxpool2d", "avgpool2d"):
                kernel = _pair(layer["kernel_size"])
                stride = _pair(layer.get("stride", layer["kernel_size"]))
                padding = _pair(layer.get("padding", 0))
                if kind == "maxpool2d":
                    x = _windows(x, kernel, stride, padding, -np.inf).max(axis=(4, 5))
                else:  # padding counts as zeros (count_include_pad)
                    x = _windows(x, kernel, stride, padding, 0.0).sum(axis=(4, 5)) / (kernel[0] * kernel[1])
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "dense":
                x = x @ tensors[layer["weight"]].astype(np.float64).T
                if "bias" in layer:
                    x = x + tensors[layer["bias"]].astype(np.float64)
            elif kind == "relu":
                x = np.maximum(x, 0.0)
            else:
                raise ValueError(f"layer type {kind!r} is not supported here")
        out.append(x)
    return np.concatenate(out)


def numpy_accuracy(
    layers: list[dict], tensors: dict[str, np.ndarray], split: mnist_data.Split, forward: Forward | None = None
) -> float:
    predicted = np.argmax((forward or numpy_forward)(layers, tensors, split.images), axis=1)
    return float(np.mean(predicted == split.labels))


# ---------------------------------------------------------------------------------------------
# Training


def shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Each 28x28 image moved by its own random (dy, dx) in [-max_shift, max_shift]^2, zero fill.
    Draws one (dy, dx) pair per image, in order."""
    side = mnist_data.IMAGE_SIDE
    out = np.zeros_like(images)
    for i, image in enumerate(images.reshape(-1, side, side)):
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        target = out[i].reshape(side, side)
        target[max(dy, 0) : side + min(dy, 0), max(dx, 0) : side + min(dx, 0)] = image[
            max(-dy, 0) : side + min(-dy, 0), max(-dx, 0) : side + min(-dx, 0)
        ]
    return out


def as_batch(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).reshape((-1,) + INPUT_SHAPE).to(dtype)


def torch_logits(model: nn.Module, images: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                model(as_batch(images[s : s + EVAL_CHUNK], dtype)).double().numpy()
                for s in range(0, images.shape[0], EVAL_CHUNK)
            ]
        )


def torch_accuracy(model: nn.Module, split: mnist_data.Split) -> float:
    return float(np.mean(np.argmax(torch_logits(model, split.images), axis=1) == split.labels))


@dataclass
class Recipe:
    name: str
    build: Callable[[], nn.Module]
    export: Callable[[nn.Module], tuple[dict[str, np.ndarray], list[dict]]]
    seed: int
    epochs: int
    min_test_accuracy: float
    description: str
    hyperparameters: dict = field(default_factory=dict)
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_shift: int = 2


def train(recipe: Recipe, splits: dict[str, mnist_data.Split]) -> nn.Module:
    """Adam with a per-step cosine decay to 0, softmax cross-entropy, shifted images. The order of
    the random draws is fixed: torch.manual_seed, then the initialisation, then per epoch the numpy
    permutation and one shift pair per image."""
    torch.manual_seed(recipe.seed)
    model = recipe.build()
    rng = np.random.default_rng(recipe.seed)
    train_split, calibration = splits["train"], splits["calibration"]
    n = len(train_split)
    batches = (n + recipe.batch_size - 1) // recipe.batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * batches)
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = rng.permutation(n)
        images = shift(train_split.images[order], rng, recipe.max_shift)
        labels = train_split.labels[order].astype(np.int64)
        loss_sum = 0.0
        for b in range(batches):
            rows = slice(b * recipe.batch_size, (b + 1) * recipe.batch_size)
            x = as_batch(images[rows])
            y = torch.from_numpy(labels[rows])
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * y.shape[0]
        if epoch % 5 == 0 or epoch == recipe.epochs:
            print(
                f"  epoch {epoch:3d}/{recipe.epochs}  loss {loss_sum / n:.4f}  "
                f"calibration acc {torch_accuracy(model, calibration):.4f}",
                flush=True,
            )
    model.eval()
    return model


RECIPES = {
    "lenet5": Recipe(
        name="lenet5",
        build=LeNet5,
        export=lenet5_export,
        seed=4242,
        epochs=30,
        min_test_accuracy=0.95,
        description=(
            "LeNet5 (ReLU, max pooling): conv 6@5x5 pad 2, maxpool 2, conv 16@5x5, maxpool 2, dense "
            "400 -> 120 -> 84 -> 10 (logits), classifying 28x28 MNIST digits; trained with PyTorch on a "
            "3500-image subset."
        ),
    ),
    "repvgg-mnist": Recipe(
        name="repvgg-mnist",
        build=RepVGG,
        export=repvgg_export,
        seed=2718,
        epochs=30,
        min_test_accuracy=0.97,
        description=(
            "RepVGG-style CNN in inference form: six re-parameterised 3x3 conv + ReLU blocks (16, 32/2, 32, "
            "64/2, 64, 64 channels/stride), global average pooling and dense 64 -> 10 (logits), classifying "
            "28x28 MNIST digits; trained with PyTorch on a 3500-image subset in the three-branch form "
            "(3x3 conv+BN, 1x1 conv+BN, identity BN), then fused exactly."
        ),
        hyperparameters={
            "architecture": "blocks (in, out, stride) " + ", ".join(f"({i}, {o}, {s})" for i, o, s in REPVGG_BLOCKS),
            "training_form": "per block relu(BN(conv3x3) + BN(conv1x1) + BN(identity, when in == out and stride 1))",
            "batchnorm": "PyTorch defaults: epsilon 1e-5, momentum 0.1",
            "reparameterisation": (
                "each BN folded into its branch, the 1x1 kernel placed at the centre of a 3x3 kernel, the "
                "identity as a 3x3 kernel with 1 at [c, c, 1, 1]; kernels and biases summed in float64, "
                "then rounded to float32"
            ),
        },
    ),
}


def hyperparameters(recipe: Recipe) -> dict:
    return {
        "framework": f"PyTorch {torch.__version__.split('+')[0]} (CPU, one thread, deterministic algorithms)",
        "optimizer": "Adam",
        "learning_rate": recipe.learning_rate,
        "learning_rate_schedule": "cosine decay to 0 over all steps (per step)",
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 0.0,
        "batch_size": recipe.batch_size,
        "epochs": recipe.epochs,
        "augmentation": f"random shift of up to {recipe.max_shift} pixels in x and y, zero fill",
        "max_shift": recipe.max_shift,
        "init": "PyTorch defaults",
        "loss": "softmax cross-entropy",
        **recipe.hyperparameters,
    }


# ---------------------------------------------------------------------------------------------
# Export and checks


def model_description(recipe: Recipe, layers: list[dict], accuracies: dict[str, float]) -> dict:
    return {
        "format": "nercc-model",
        "version": 1,
        "name": recipe.name,
        "description": recipe.description,
        "weights": "model.safetensors",
        "input": {
            "shape": list(INPUT_SHAPE),
            "dtype": "float32",
            "description": "28x28 grey image, one channel, row-major (a flat 784-vector), pixels scaled to [0,1]",
        },
        "output": {"shape": [mnist_data.NUM_CLASSES], "kind": "logits", "labels": [str(d) for d in range(10)]},
        "layers": layers,
        "training": {
            "script": SCRIPT,
            "dataset": mnist_data.SOURCE_NAME,
            "split": mnist_data.split_summary(),
            "test_accuracy": round(accuracies["test"], 6),
            "calibration_accuracy": round(accuracies["calibration"], 6),
            "train_accuracy": round(accuracies["train"], 6),
            "seed": recipe.seed,
            "split_seed": mnist_data.SPLIT_SEED,
            "hyperparameters": hyperparameters(recipe),
        },
    }


def reference_cases(
    name: str, layers: list[dict], tensors: dict[str, np.ndarray], test: mnist_data.Split, forward: Forward | None = None
) -> dict:
    x = test.images[:REFERENCE_CASES]
    logits = (forward or numpy_forward)(layers, tensors, x)
    return {
        "model": name,
        "cases": [
            {
                "input": [float(p) for p in x[i]],  # float32 values, exactly representable
                "label": int(test.labels[i]),
                "logits": [float(z) for z in logits[i]],
            }
            for i in range(x.shape[0])
        ],
    }


def check_export(
    model_dir: Path, tensors: dict[str, np.ndarray], description: dict, forward: Forward | None = None
) -> None:
    """Re-read the written files: the weights round-trip, the description on disk is the one built,
    and the reference logits are what the numpy interpreter computes from the files."""
    read, _ = safetensors_io.read(model_dir / "model.safetensors")
    for k, t in tensors.items():
        if read[k].dtype != np.float32 or read[k].tobytes() != t.tobytes():
            raise SystemExit(f"{k} does not round-trip through model.safetensors")
    written = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    if written != description:
        raise SystemExit("model.json does not round-trip")
    reference = json.loads((model_dir / "reference.json").read_text(encoding="utf-8"))
    x = np.array([c["input"] for c in reference["cases"]], dtype=np.float32)
    expected = np.array([c["logits"] for c in reference["cases"]])
    if not np.array_equal((forward or numpy_forward)(written["layers"], read, x), expected):
        raise SystemExit("reference logits do not match the written files")
    size = (model_dir / "model.safetensors").stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise SystemExit(f"model.safetensors is {size} bytes, over {MAX_WEIGHTS_BYTES}")


def run(recipe: Recipe, splits: dict[str, mnist_data.Split], out_root: Path) -> None:
    print(f"{recipe.name}: training for {recipe.epochs} epochs, seed {recipe.seed}", flush=True)
    t0 = time.perf_counter()
    model = train(recipe, splits)
    t1 = time.perf_counter()

    tensors, layers = recipe.export(model)
    parameters = sum(t.size for t in tensors.values())
    test_images = splits["test"].images
    reference_logits = numpy_forward(layers, tensors, test_images)

    # Cross-check the numpy interpreter against PyTorch running the exported float32 weights.
    exported_torch = model if recipe.name == "lenet5" else FusedRepVGG(tensors)
    torch_difference = float(np.abs(reference_logits - torch_logits(exported_torch, test_images)).max())
    print(f"  numpy (float64) vs PyTorch (float32) exported model, test split: max |diff| {torch_difference:.2e}")
    if torch_difference > TORCH_TOLERANCE:
        raise SystemExit("the numpy forward pass disagrees with PyTorch")

    if isinstance(model, RepVGG):
        # The fusion is exact: the fused kernels in float64 reproduce the training-form network
        # (eval mode, float64); the float32 rounding of the exported kernels is then measured apart.
        fused64 = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
        for index, block in enumerate(model.blocks):
            fused64[f"block{index}.weight"], fused64[f"block{index}.bias"] = block.fused()
        training_form64 = torch_logits(model.double(), test_images, torch.float64)
        model.float()
        fusion_difference = float(np.abs(numpy_forward(layers, fused64, test_images) - training_form64).max())
        rounding_difference = float(np.abs(reference_logits - training_form64).max())
        training_form_accuracy = float(np.mean(np.argmax(training_form64, axis=1) == splits["test"].labels))
        print(
            f"  fused vs training form (float64), test split: max |diff| {fusion_difference:.2e}; "
            f"exported float32 vs training form: {rounding_difference:.2e}; "
            f"training-form test acc {training_form_accuracy:.4f}"
        )
        if fusion_difference > FUSION_TOLERANCE or rounding_difference > TORCH_TOLERANCE:
            raise SystemExit("the re-parameterised model does not match the training-form network")

    accuracies = {name: numpy_accuracy(layers, tensors, splits[name]) for name in mnist_data.SPLIT_NAMES}
    print(
        f"  exported model accuracy: train {accuracies['train']:.4f}  calibration {accuracies['calibration']:.4f}  "
        f"test {accuracies['test']:.4f}  ({parameters} parameters)",
        flush=True,
    )
    if accuracies["test"] < recipe.min_test_accuracy:
        raise SystemExit(f"test accuracy {accuracies['test']:.4f} is below {recipe.min_test_accuracy}")

    description = model_description(recipe, layers, accuracies)
    validate_description(description)
    reference = reference_cases(recipe.name, layers, tensors, splits["test"])

    model_dir = out_root / "models" / recipe.name
    model_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": recipe.name,
        "layout": "conv weight [out, in, kh, kw], dense weight [out, in], NCHW",
        "script": SCRIPT,
    }
    blob = safetensors_io.write(model_dir / "model.safetensors", tensors, metadata)
    safetensors_io.check_round_trip(tensors, metadata, blob)
    write_json(model_dir / "model.json", description)
    write_json(model_dir / "reference.json", reference)
    check_export(model_dir, tensors, description)
    t2 = time.perf_counter()
    for name in ("model.json", "model.safetensors", "reference.json"):
        print(f"  wrote {model_dir / name} ({(model_dir / name).stat().st_size} bytes)")
    print(f"  time: training {t1 - t0:.1f}s  export and checks {t2 - t1:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root to write models/ under (default: the repository)")
    parser.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=["repvgg-mnist"])
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, numpy {np.__version__}; source {mnist_data.source_path()}", flush=True)
    splits = mnist_data.load_splits()
    print(f"split: {mnist_data.split_summary()}", flush=True)
    for name in args.models:
        run(RECIPES[name], splits, args.out)


if __name__ == "__main__":
    main()
