#!/usr/bin/env python3
"""Train nercc's small vision transformer on MNIST with PyTorch (CPU) and export it for the runtime.

    pip install -r ops/models/requirements-torch.txt
    python3 ops/models/train_vit.py              # writes models/vit-mnist/ in the repository
    python3 ops/models/train_vit.py --out DIR    # writes DIR/models/vit-mnist/ instead

Offline tooling: never run in tests or CI. The data is the MNIST-5k split of the other MNIST models
(ops/models/mnist_data.py: train 3,500 / calibration 500 / test 1,000, pixels in [0, 1]); a query is
a flat 784-vector that the runtime reads in C order as the input shape [1, 28, 28].

Model (see docs/models.md), pre-norm ViT:

  patch_embedding   7x7 patches (a conv with kernel = stride = 7) -> 16 tokens of width 64, a class
                    token in front, learned position embeddings added: [1, 28, 28] -> [17, 64]
  6 x               residual[layernorm, multihead_attention (4 heads)]
                    residual[layernorm, dense 64 -> 128, gelu, dense 128 -> 64]
  layernorm, token_pool "first" (the class token), dense 64 -> 10 (logits)

Writes models/vit-mnist/model.safetensors (float32, PyTorch layouts: the patch conv [D, 1, p, p],
dense [out, in], in_proj [3D, D]; the class token as [D] and the position embeddings as [T, D]),
model.json (validated against schemas/model-description.schema.json) and reference.json (the first
8 test images with logits computed in float64 from the exported float32 weights by the numpy
interpreter of model.json in this file, which does not use PyTorch, and cross-checked against
PyTorch on the whole test split).

Determinism: fixed seeds, one thread (set below, before numpy and torch are imported),
torch.use_deterministic_algorithms(True). Two runs on the same machine and package versions give
byte-identical files.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402
import train_cnns  # noqa: E402
from train_cnns import EVAL_CHUNK, INPUT_SHAPE, REPO, TORCH_TOLERANCE, Recipe  # noqa: E402
from train_mnist_mlp import validate_description, write_json  # noqa: E402

SCRIPT = "ops/models/train_vit.py"
MODEL_NAME = "vit-mnist"


# ---------------------------------------------------------------------------------------------
# Network (training form = inference form)


@dataclass(frozen=True)
class Shape:
    patch: int = 7
    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_dim: int = 128

    @property
    def tokens(self) -> int:
        return (mnist_data.IMAGE_SIDE // self.patch) ** 2 + 1


class Block(nn.Module):
    """x + attn(ln1(x)), then x + fc2(gelu(fc1(ln2(x)))) (pre-norm, no dropout)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(shape.dim)
        self.attn = nn.MultiheadAttention(shape.dim, shape.heads, batch_first=True)
        self.norm2 = nn.LayerNorm(shape.dim)
        self.fc1 = nn.Linear(shape.dim, shape.mlp_dim)
        self.fc2 = nn.Linear(shape.mlp_dim, shape.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        self.patch = nn.Conv2d(INPUT_SHAPE[0], shape.dim, shape.patch, stride=shape.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, shape.dim))
        self.position = nn.Parameter(torch.zeros(1, shape.tokens, shape.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(shape.dim)
        self.head = nn.Linear(shape.dim, mnist_data.NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit_export(model: ViT) -> tuple[dict[str, np.ndarray], list[dict]]:
    """State-dict tensors in float32 (the class token as [D], the positions as [T, D]) and the
    description's layer list."""
    tensors = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    tensors["cls_token"] = tensors["cls_token"].reshape(-1)
    tensors["position"] = tensors["position"].reshape(model.shape.tokens, model.shape.dim)
    epsilon = model.norm.eps
    layers: list[dict] = [
        {
            "type": "patch_embedding",
            "weight": "patch.weight",
            "bias": "patch.bias",
            "class_token": "cls_token",
            "position": "position",
        }
    ]
    for i in range(model.shape.depth):
        b = f"blocks.{i}"
        layers += [
            {
                "type": "residual",
                "layers": [
                    {"type": "layernorm", "weight": f"{b}.norm1.weight", "bias": f"{b}.norm1.bias", "epsilon": epsilon},
                    {
                        "type": "multihead_attention",
                        "heads": model.shape.heads,
                        "in_weight": f"{b}.attn.in_proj_weight",
                        "in_bias": f"{b}.attn.in_proj_bias",
                        "out_weight": f"{b}.attn.out_proj.weight",
                        "out_bias": f"{b}.attn.out_proj.bias",
                    },
                ],
            },
            {
                "type": "residual",
                "layers": [
                    {"type": "layernorm", "weight": f"{b}.norm2.weight", "bias": f"{b}.norm2.bias", "epsilon": epsilon},
                    {"type": "dense", "weight": f"{b}.fc1.weight", "bias": f"{b}.fc1.bias"},
                    {"type": "gelu"},
                    {"type": "dense", "weight": f"{b}.fc2.weight", "bias": f"{b}.fc2.bias"},
                ],
            },
        ]
    layers += [
        {"type": "layernorm", "weight": "norm.weight", "bias": "norm.bias", "epsilon": epsilon},
        {"type": "token_pool", "mode": "first"},
        {"type": "dense", "weight": "head.weight", "bias": "head.bias"},
    ]
    used = set()
    _collect_tensor_names(layers, used)
    if used != set(tensors):
        raise SystemExit(f"exported tensors and layers disagree: {sorted(used ^ set(tensors))}")
    return tensors, layers


def _collect_tensor_names(layers: list[dict], into: set[str]) -> None:
    for layer in layers:
        if layer["type"] == "residual":
            _collect_tensor_names(layer["layers"], into)
        else:
            into.update(v for k, v in layer.items() if k not in ("type", "heads", "mode", "epsilon", "approximate"))


# ---------------------------------------------------------------------------------------------
# Independent numpy forward pass: an interpreter of the description's layer list, in float64


_erf = np.frompyfunc(math.erf, 1, 1)


def _tensor(tensors: dict[str, np.ndarray], layer: dict, key: str) -> np.ndarray | None:
    return tensors[layer[key]].astype(np.float64) if key in layer else None


def _affine(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x W^T + b along the last axis."""
    y = x @ weight.T
    return y if bias is None else y + bias


def apply_layers(layers: list[dict], tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply `layers` to a batch x [N, *sample shape] (float64). Supports the layer types the ViT
    uses, with the runtime's semantics, and refuses anything else."""
    for layer in layers:
        kind = layer["type"]
        if kind == "patch_embedding":
            # [N, C, H, W] -> [N, (H/p)(W/p), C p p] in row-major patch order, then the conv as a product.
            weight = _tensor(tensors, layer, "weight")
            d, c, p, _ = weight.shape
            n, _, h, w = x.shape
            patches = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, -1, c * p * p)
            x = _affine(patches, weight.reshape(d, -1), _tensor(tensors, layer, "bias"))
            if "class_token" in layer:
                token = np.broadcast_to(_tensor(tensors, layer, "class_token"), (n, 1, d))
                x = np.concatenate([token, x], axis=1)
            if "position" in layer:
                x = x + _tensor(tensors, layer, "position")
        elif kind == "multihead_attention":
            n, t, d = x.shape
            heads = int(layer["heads"])
            head_dim = d // heads
            qkv = _affine(x, _tensor(tensors, layer, "in_weight"), _tensor(tensors, layer, "in_bias"))
            # [N, T, 3D] -> three [N, heads, T, head_dim]: q, k, v in turn, heads as column blocks.
            q, k, v = qkv.reshape(n, t, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
            weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
            attended = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
            x = _affine(attended, _tensor(tensors, layer, "out_weight"), _tensor(tensors, layer, "out_bias"))
        elif kind == "token_pool":
            x = {"first": lambda: x[:, 0], "mean": lambda: x.mean(axis=1)}[layer["mode"]]()
        elif kind == "residual":
            x = x + apply_layers(layer["layers"], tensors, x)
        elif kind == "layernorm":
            mean = x.mean(axis=-1, keepdims=True)
            variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
            x = (x - mean) / np.sqrt(variance + float(layer.get("epsilon", 1e-5)))
            if "weight" in layer:
                x = x * _tensor(tensors, layer, "weight")
            if "bias" in layer:
                x = x + _tensor(tensors, layer, "bias")
        elif kind == "gelu":
            if layer.get("approximate", "none") == "tanh":
                x = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
            else:
                x = 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))
        elif kind == "dense":
            x = _affine(x, _tensor(tensors, layer, "weight"), _tensor(tensors, layer, "bias"))
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        else:
            raise ValueError(f"layer type {kind!r} is not supported here")
    return x


def numpy_forward(layers: list[dict], tensors: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Logits [N, 10] (float64) of flat float32 images [N, 784] under `layers`."""
    out = []
    for start in range(0, images.shape[0], EVAL_CHUNK):
        x = images[start : start + EVAL_CHUNK].astype(np.float64).reshape((-1,) + INPUT_SHAPE)
        out.append(apply_layers(layers, tensors, x))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Training


def rotate(images: np.ndarray, rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Each 28x28 image rotated about its centre by its own angle drawn uniformly from
    [-max_degrees, max_degrees] (one draw per image, in order), bilinear, zero fill; float64
    arithmetic, float32 result."""
    side = mnist_data.IMAGE_SIDE
    n = images.shape[0]
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=n))[:, None, None]
    centre = (side - 1) / 2
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64) - centre
    # The source point of each output pixel: the output grid rotated back by the angle.
    sx = np.cos(angles) * xs + np.sin(angles) * ys + centre
    sy = -np.sin(angles) * xs + np.cos(angles) * ys + centre
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    # A zero border of one pixel: every index clipped into [-1, side] reads 0 outside the image.
    padded = np.pad(images.reshape(n, side, side).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    rows = np.arange(n)[:, None, None]

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return padded[rows, np.clip(y, -1, side).astype(np.int64) + 1, np.clip(x, -1, side).astype(np.int64) + 1]

    out = (
        at(y0, x0) * (1 - fy) * (1 - fx)
        + at(y0, x0 + 1) * (1 - fy) * fx
        + at(y0 + 1, x0) * fy * (1 - fx)
        + at(y0 + 1, x0 + 1) * fy * fx
    )
    return out.reshape(n, -1).astype(np.float32)


@dataclass
class ViTRecipe(Recipe):
    shape: Shape = Shape()
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    max_degrees: float = 10.0
    clip_norm: float = 1.0


def schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor of optimizer step `step` (0-based): linear warmup over `warmup` steps to
    1, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(recipe: ViTRecipe, splits: dict[str, mnist_data.Split]) -> ViT:
    """AdamW (decay on the matrices and the patch kernel only), warmup + per-step cosine schedule,
    label-smoothed cross-entropy, gradient-norm clipping, rotated and shifted images. The order of
    the random draws is fixed: torch.manual_seed, then the initialisation, then per epoch the numpy
    permutation, one angle per image and one shift pair per image."""
    torch.manual_seed(recipe.seed)
    model = recipe.build()
    rng = np.random.default_rng(recipe.seed)
    train_split, calibration = splits["train"], splits["calibration"]
    n = len(train_split)
    batches = (n + recipe.batch_size - 1) // recipe.batch_size
    decays = {name: p.ndim >= 2 and name not in ("cls_token", "position") for name, p in model.named_parameters()}
    decay = [p for name, p in model.named_parameters() if decays[name]]
    no_decay = [p for name, p in model.named_parameters() if not decays[name]]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.learning_rate,
    )
    total = recipe.epochs * batches
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule(step, recipe.warmup_epochs * batches, total)
    )
    for epoch in range(1, recipe.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(n)
        images = train_cnns.shift(rotate(train_split.images[order], rng, recipe.max_degrees), rng, recipe.max_shift)
        labels = train_split.labels[order].astype(np.int64)
        loss_sum = 0.0
        for b in range(batches):
            rows = slice(b * recipe.batch_size, (b + 1) * recipe.batch_size)
            x = train_cnns.as_batch(images[rows])
            y = torch.from_numpy(labels[rows])
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * y.shape[0]
        if epoch % 5 == 0 or epoch in (1, recipe.epochs):
            print(
                f"  epoch {epoch:3d}/{recipe.epochs}  loss {loss_sum / n:.4f}  "
                f"calibration acc {train_cnns.torch_accuracy(model, calibration):.4f}  "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
    model.eval()
    return model


SHAPE = Shape()
RECIPE = ViTRecipe(
    name=MODEL_NAME,
    build=lambda: ViT(SHAPE),
    export=vit_export,
    seed=31415,
    epochs=100,
    min_test_accuracy=0.94,
    description=(
        f"Vision transformer (pre-norm): {SHAPE.patch}x{SHAPE.patch} patches embedded to width {SHAPE.dim} with a "
        f"class token and learned positions ({SHAPE.tokens} tokens), {SHAPE.depth} blocks of "
        f"multi-head self-attention ({SHAPE.heads} heads) and a GELU MLP ({SHAPE.dim} -> {SHAPE.mlp_dim} -> "
        f"{SHAPE.dim}), each behind a layernorm in a residual branch, a final layernorm, the class token and "
        "dense 64 -> 10 (logits), classifying 28x28 MNIST digits; trained with PyTorch on a 3500-image subset."
    ),
    shape=SHAPE,
    learning_rate=1e-3,
)


def hyperparameters(recipe: ViTRecipe) -> dict:
    shape = recipe.shape
    return {
        **train_cnns.hyperparameters(recipe),
        "optimizer": "AdamW",
        "learning_rate_schedule": (
            f"linear warmup over the first {recipe.warmup_epochs} epochs, then cosine decay to 0 (per step)"
        ),
        "warmup_epochs": recipe.warmup_epochs,
        "weight_decay": recipe.weight_decay,
        "weight_decay_on": "dense, attention and patch-embedding matrices (not biases, norms, class token, positions)",
        "augmentation": (
            f"random rotation of up to {recipe.max_degrees:g} degrees about the centre (bilinear, zero fill), "
            f"then a random shift of up to {recipe.max_shift} pixels in x and y (zero fill)"
        ),
        "max_degrees": recipe.max_degrees,
        "init": "PyTorch defaults; class token and positions truncated normal, std 0.02",
        "loss": f"softmax cross-entropy, label smoothing {recipe.label_smoothing:g}",
        "label_smoothing": recipe.label_smoothing,
        "gradient_clipping": f"global norm {recipe.clip_norm:g}",
        "architecture": (
            f"patch {shape.patch}, width {shape.dim}, {shape.tokens} tokens (class token first), depth "
            f"{shape.depth}, {shape.heads} heads of {shape.dim // shape.heads}, MLP {shape.mlp_dim}, pre-norm, "
            "layernorm epsilon 1e-5, exact GELU, no dropout"
        ),
    }


# ---------------------------------------------------------------------------------------------
# Export and checks


def run(recipe: ViTRecipe, splits: dict[str, mnist_data.Split], out_root: Path) -> None:
    print(f"{recipe.name}: training for {recipe.epochs} epochs, seed {recipe.seed}", flush=True)
    t0 = time.perf_counter()
    model = train(recipe, splits)
    t1 = time.perf_counter()

    tensors, layers = recipe.export(model)
    parameters = sum(t.size for t in tensors.values())
    test_images = splits["test"].images
    reference_logits = numpy_forward(layers, tensors, test_images)

    # The exported float32 tensors are the model's own parameters, so the trained model in float32
    # is the PyTorch run of the export.
    torch_difference = float(np.abs(reference_logits - train_cnns.torch_logits(model, test_images)).max())
    print(f"  numpy (float64) vs PyTorch (float32) exported model, test split: max |diff| {torch_difference:.2e}")
    if torch_difference > TORCH_TOLERANCE:
        raise SystemExit("the numpy forward pass disagrees with PyTorch")

    accuracies = {name: train_cnns.numpy_accuracy(layers, tensors, splits[name], numpy_forward) for name in mnist_data.SPLIT_NAMES}
    print(
        f"  exported model accuracy: train {accuracies['train']:.4f}  calibration {accuracies['calibration']:.4f}  "
        f"test {accuracies['test']:.4f}  ({parameters} parameters)",
        flush=True,
    )
    if accuracies["test"] < recipe.min_test_accuracy:
        raise SystemExit(f"test accuracy {accuracies['test']:.4f} is below {recipe.min_test_accuracy}")

    description = train_cnns.model_description(recipe, layers, accuracies)
    description["training"]["script"] = SCRIPT
    description["training"]["hyperparameters"] = hyperparameters(recipe)
    validate_description(description)
    reference = train_cnns.reference_cases(recipe.name, layers, tensors, splits["test"], numpy_forward)

    model_dir = out_root / "models" / recipe.name
    model_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": recipe.name,
        "layout": (
            "patch weight [D, C, p, p], class token [D], positions [T, D], dense weight [out, in], "
            "attention in_proj [3D, D] (rows q, k, v), out_proj [D, D]"
        ),
        "script": SCRIPT,
    }
    blob = safetensors_io.write(model_dir / "model.safetensors", tensors, metadata)
    safetensors_io.check_round_trip(tensors, metadata, blob)
    write_json(model_dir / "model.json", description)
    write_json(model_dir / "reference.json", reference)
    train_cnns.check_export(model_dir, tensors, description, numpy_forward)
    t2 = time.perf_counter()
    for name in ("model.json", "model.safetensors", "reference.json"):
        print(f"  wrote {model_dir / name} ({(model_dir / name).stat().st_size} bytes)")
    print(f"  time: training {t1 - t0:.1f}s  export and checks {t2 - t1:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root to write models/ under (default: the repository)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, numpy {np.__version__}; source {mnist_data.source_path()}", flush=True)
    splits = mnist_data.load_splits()
    print(f"split: {mnist_data.split_summary()}", flush=True)
    run(RECIPE, splits, args.out)


if __name__ == "__main__":
    main()
