#!/usr/bin/env python3
"""Export nercc's models to ONNX and record reference outputs from ONNX Runtime.

    pip install -r ops/models/requirements-onnx.txt
    python3 ops/models/export_onnx.py                               # every model, into models/onnx/
    python3 ops/models/export_onnx.py --models lenet5 resnet18      # some of them
    python3 ops/models/export_onnx.py --out DIR                     # write into DIR instead
    python3 ops/models/export_onnx.py --regenerate-resnet18-weights # numpy only, see below

Offline tooling: exporting never runs in tests or CI. The files it writes are committed (except
resnet18.weights), so that the ONNX runtime can be tested against ONNX Runtime without PyTorch.
Only the numpy mode --regenerate-resnet18-weights runs in ops/test.sh, to rebuild those weights.

Models (input shapes per query; ONNX adds a leading dynamic axis "batch"):

  mnist-mlp       [784]         models/mnist-mlp/model.safetensors  (Gemm, Relu)
  lenet5          [1, 28, 28]   models/lenet5/model.safetensors
  repvgg-mnist    [1, 28, 28]   models/repvgg-mnist/model.safetensors (the fused inference form)
  vit-mnist       [1, 28, 28]   models/vit-mnist/model.safetensors
  digits-mlp      [64]          models/digits-mlp/model.safetensors
  mobilenet-tiny  [1, 28, 28]   trained here (see below)
  resnet18        [3, 32, 32]   torchvision's resnet18(num_classes=10), generated weights (see below)

The five shipped models are rebuilt as PyTorch modules from the committed weights (the MLPs as
Linear/ReLU stacks, LeNet5 and the fused RepVGG from ops/models/train_cnns.py), checked against
their own models/<name>/reference.json (max |diff| <= 1e-4), and exported. The ViT is exported from
an equivalent module with explicit attention (separate q, k and v products, Reshape, Transpose,
MatMul, Softmax) instead of nn.MultiheadAttention, whose export is full of shape arithmetic; its
class token is folded into the position embeddings: the 16 patch tokens are zero-padded in front
to 17 (Pad) and the [17, 64] initializer "tokens" = position, with the class token added to row 0
in float32, is added (the same values as cat([class token, patches]) + position).

Export: torch.onnx.export with the legacy TorchScript exporter (dynamo=False), opset 17, input
"input", output "output", dynamic batch axis, eval mode, constant folding. Then a small clean-up
that changes no arithmetic on the data path: every node whose inputs are all constants (Constant
nodes and the constant subgraphs the exporter emits for pads and shapes) is evaluated with
onnx.reference and replaced by an initializer, Identity nodes are bypassed, and unused initializers
are dropped. Each file passes onnx.checker.check_model(full_check=True). BatchNormalization is
folded into the preceding Conv by the exporter (eval mode), so neither mobilenet-tiny nor resnet18
holds a BatchNormalization node.

mobilenet-tiny: conv 16@3x3 stride 2 + BN + ReLU, then three depthwise-separable blocks
(depthwise 3x3, groups = channels, + BN + ReLU6; pointwise 1x1 + BN + ReLU) 16 -> 32 (stride 1),
32 -> 64 (stride 2), 64 -> 128 (stride 2), global average pooling, flatten, dense 128 -> 10.
Trained on the MNIST-5k train split (ops/models/mnist_data.py) by train_cnns.train: Adam 3e-3 with a
per-step cosine decay, batch 64, 30 epochs, shifts of up to 2 pixels, seed 5150 (about 40 s on one
thread). Test accuracy (ONNX Runtime, 1,000 test images): 0.977.

resnet18: torchvision's architecture unchanged (3 input channels). A query is an MNIST image
zero-padded from 28x28 to 32x32 (2 pixels on each side) and repeated in the 3 channels, pixels in
[0, 1], no normalisation. Its weights are not trained: every float initializer of the exported
graph (after BN folding and the clean-up above) is overwritten by a counter-based generator, so that
the test fixture can rebuild them without PyTorch:

  SplitMix64, all arithmetic on unsigned 64-bit integers modulo 2^64, element i = 0, 1, ... of a
  tensor in C order:
      z = seed + (i + 1) * 0x9E3779B97F4A7C15
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
      z = (z ^ (z >> 27)) * 0x94D049BB133111EB
      z = z ^ (z >> 31)
      u = (z >> 11) * 2^-53                      (float64, exact, in [0, 1))
  (for seed 0 the first z are 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F)
  seed = 0x6E65726363 + j, j = the tensor's index in the graph's initializer list (file order).
  The rule comes from the node that consumes the tensor; the value is computed in float64 and
  rounded once, to nearest, to float32:
      kaiming-uniform  Conv input 1 (W), Gemm input 1 (B, transB = 1):
                       (2u - 1) * sqrt(6.0 / fan_in), fan_in = product of all dims but the first
                       (sqrt(6.0 / fan_in) is one IEEE division and one IEEE square root)
      uniform-0.1      Conv input 2 (bias), Gemm input 2 (C), BatchNormalization input 2 (beta)
                       and input 3 (mean): (2u - 1) * 0.1
      half-plus-u      BatchNormalization input 1 (scale) and input 4 (variance): 0.5 + u
  Integer initializers would be kept as exported (rule "literal", values listed); resnet18 has none.
  The initializers are stored as external data, all in one file, back to back in initializer order:
  models/onnx/resnet18.weights (44 MB, not committed, in .gitignore). resnet18.weights.json lists
  for each one its name, shape, dtype, seed, rule (with fan_in), consumer, byte offset and length
  in that file and the SHA-256 of its bytes, and the SHA-256 and size of the whole file.
  --regenerate-resnet18-weights rebuilds resnet18.weights from resnet18.weights.json with numpy
  alone (neither PyTorch nor onnx is imported) and checks every SHA-256.

Writes, into models/onnx/ (or --out):

  <name>.onnx             the model (weights inline, except resnet18)
  <name>.reference.json   {"model", "onnxruntime" (version), "opset", "input_shape" [16, ...],
                           "output_shape", "labels", "inputs" (16 flat float lists), "outputs"
                           (16 flat float lists)}: the first 16 images of the model's test split
                           (MNIST test split of ops/models/mnist_data.py, read from data/mnist/;
                           digits from data/digits/; resnet18 the padded 3-channel images) and the
                           outputs of ONNX Runtime (CPU, one thread, sequential) on that batch of
                           16. Floats are JSON numbers that round-trip to the float32 values.
  resnet18.weights        external data of resnet18.onnx (regenerable, not committed)
  resnet18.weights.json   how to regenerate it (above)
  models.json             per model: file, size, SHA-256 of the .onnx, opset, input and output
                          shapes, the sorted distinct op types, whether BatchNormalization was
                          folded, parameter count, weight source, ONNX Runtime accuracy on the
                          whole test split and the largest |ONNX Runtime - PyTorch| difference
                          on the 16 reference inputs

Determinism: fixed seeds, one thread (set below, before numpy and torch are imported),
torch.use_deterministic_algorithms(True); two runs on the same machine and package versions give
byte-identical files.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402
from train_mnist_mlp import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "ops/models/export_onnx.py"
OUT_DIR = REPO / "models" / "onnx"

OPSET = 17
REFERENCE_CASES = 16
REFERENCE_TOLERANCE = 1e-4  # PyTorch module vs the model's own reference.json (float64 logits)
SHIPPED = ("mnist-mlp", "lenet5", "repvgg-mnist", "vit-mnist", "digits-mlp")
MODELS = SHIPPED + ("mobilenet-tiny", "resnet18")
MAX_INLINE_BYTES = 1_500_000  # every committed .onnx file stays below this

# resnet18's generated weights.
SEED_BASE = 0x6E65726363  # "nercc" in ASCII
SPLITMIX_INCREMENT = 0x9E3779B97F4A7C15
SPLITMIX_MUL1 = 0xBF58476D1CE4E5B9
SPLITMIX_MUL2 = 0x94D049BB133111EB
SPLITMIX_SEED0 = (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F)  # seed 0, i = 0, 1, 2
RESNET18_WEIGHTS = "resnet18.weights"
RESNET18_WEIGHTS_JSON = "resnet18.weights.json"
RESNET18_SIDE = 32
RESNET18_TORCH_SEED = 18  # random BN statistics before export, so that no two folded biases coincide

MOBILENET_SEED = 5150
MOBILENET_EPOCHS = 30
MOBILENET_LEARNING_RATE = 3e-3
MOBILENET_MIN_TEST_ACCURACY = 0.95
MOBILENET_BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 128, 2))  # (in, out, depthwise stride)
MOBILENET_STEM = 16
MAX_MOBILENET_BYTES = 200_000


# ---------------------------------------------------------------------------------------------
# Generated weights (numpy only: used by --regenerate-resnet18-weights without PyTorch or onnx)

RULES = {
    "kaiming-uniform": "float32((2u - 1) * sqrt(6.0 / fan_in)) in float64, fan_in = product of all dims but the first",
    "uniform-0.1": "float32((2u - 1) * 0.1) in float64",
    "half-plus-u": "float32(0.5 + u) in float64",
    "literal": "the exported integer values, listed under values",
}
# (op type, input index) of the consuming node -> rule.
RULE_OF_CONSUMER = {
    ("Conv", 1): "kaiming-uniform",
    ("Conv", 2): "uniform-0.1",
    ("Gemm", 1): "kaiming-uniform",
    ("Gemm", 2): "uniform-0.1",
    ("BatchNormalization", 1): "half-plus-u",
    ("BatchNormalization", 2): "uniform-0.1",
    ("BatchNormalization", 3): "uniform-0.1",
    ("BatchNormalization", 4): "half-plus-u",
}


def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first `count` SplitMix64 outputs of `seed` (uint64): element i mixes seed + (i+1)*0x9E37...."""
    index = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed % 2**64) + index * np.uint64(SPLITMIX_INCREMENT)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(SPLITMIX_MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(SPLITMIX_MUL2)
        return z ^ (z >> np.uint64(31))


def splitmix64_uniform(seed: int, count: int) -> np.ndarray:
    """u_i = (z_i >> 11) * 2^-53 in [0, 1), float64 (exact)."""
    return (splitmix64(seed, count) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _splitmix64_scalar(seed: int, i: int) -> int:
    mask = 2**64 - 1
    z = (seed + (i + 1) * SPLITMIX_INCREMENT) & mask
    z = ((z ^ (z >> 30)) * SPLITMIX_MUL1) & mask
    z = ((z ^ (z >> 27)) * SPLITMIX_MUL2) & mask
    return z ^ (z >> 31)


def check_splitmix64() -> None:
    """The vectorised generator against the published seed-0 values and a plain-integer version."""
    if [int(v) for v in splitmix64(0, 3)] != list(SPLITMIX_SEED0):
        raise SystemExit("splitmix64 does not give the reference values for seed 0")
    for seed in (SEED_BASE, SEED_BASE + 41, 2**64 - 1):
        got = [int(v) for v in splitmix64(seed, 5)]
        if got != [_splitmix64_scalar(seed, i) for i in range(5)]:
            raise SystemExit(f"vectorised splitmix64 disagrees with the integer version for seed {seed}")


def generated_tensor(entry: dict) -> np.ndarray:
    """The values of one entry of resnet18.weights.json (shape, dtype, seed, rule, fan_in or values)."""
    shape = tuple(int(d) for d in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    rule = entry["rule"]
    if rule == "literal":
        return np.asarray(entry["values"], dtype=np.dtype(entry["dtype"])).reshape(shape)
    if entry["dtype"] != "float32":
        raise ValueError(f"{entry['name']}: rule {rule} needs float32, not {entry['dtype']}")
    u = splitmix64_uniform(int(entry["seed"]), count)
    if rule == "kaiming-uniform":
        fan_in = int(np.prod(shape[1:], dtype=np.int64))
        if fan_in != entry["fan_in"]:
            raise ValueError(f"{entry['name']}: fan_in {entry['fan_in']} does not match shape {list(shape)}")
        values = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_in)
    elif rule == "uniform-0.1":
        values = (2.0 * u - 1.0) * 0.1
    elif rule == "half-plus-u":
        values = 0.5 + u
    else:
        raise ValueError(f"{entry['name']}: unknown rule {rule!r}")
    return values.astype(np.float32).reshape(shape)


def tensor_bytes(entry: dict) -> bytes:
    array = generated_tensor(entry)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_weights_file(spec: dict) -> bytes:
    """The bytes of resnet18.weights described by `spec` (resnet18.weights.json), every tensor and
    the whole file checked against their SHA-256."""
    blob = bytearray(int(spec["bytes"]))
    position = 0
    for entry in sorted(spec["initializers"], key=lambda e: e["offset"]):
        data = tensor_bytes(entry)
        if entry["offset"] != position or len(data) != entry["length"]:
            raise SystemExit(f"{entry['name']}: expected at offset {position}, {len(data)} bytes; the JSON says "
                             f"{entry['offset']}, {entry['length']}")
        if sha256(data) != entry["sha256"]:
            raise SystemExit(f"{entry['name']}: generated bytes have the wrong SHA-256")
        blob[position : position + len(data)] = data
        position += len(data)
    if position != len(blob):
        raise SystemExit(f"the tensors cover {position} of {len(blob)} bytes")
    if sha256(bytes(blob)) != spec["sha256"]:
        raise SystemExit("the regenerated weights file has the wrong SHA-256")
    return bytes(blob)


def regenerate_resnet18_weights(out_dir: Path) -> None:
    check_splitmix64()
    spec = json.loads((out_dir / RESNET18_WEIGHTS_JSON).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    blob = build_weights_file(spec)
    path = out_dir / spec["external_data"]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(blob)
    os.replace(temporary, path)
    print(f"wrote {path} ({len(blob)} bytes, {len(spec['initializers'])} tensors, sha256 {spec['sha256']}) "
          f"in {time.perf_counter() - t0:.1f}s; every SHA-256 matches")


# ---------------------------------------------------------------------------------------------
# Test data


@dataclass(frozen=True)
class TestData:
    images: np.ndarray  # [N, *input shape] float32
    labels: np.ndarray  # [N] uint8


def mnist_test(shape: tuple[int, ...]) -> TestData:
    split = mnist_data.read_split(REPO / "data" / "mnist", "test")
    return TestData(np.ascontiguousarray(split.images.reshape((-1,) + shape)), split.labels)


def digits_test() -> TestData:
    images = np.load(REPO / "data" / "digits" / "test-images.npy", allow_pickle=False)
    labels = np.load(REPO / "data" / "digits" / "test-labels.npy", allow_pickle=False)
    return TestData(np.ascontiguousarray(images, dtype=np.float32), labels)


def resnet18_test() -> TestData:
    """MNIST test images zero-padded 28 -> 32 (2 pixels on each side), repeated in 3 channels."""
    side = mnist_data.IMAGE_SIDE
    pad = (RESNET18_SIDE - side) // 2
    mnist = mnist_test((1, side, side))
    padded = np.pad(mnist.images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return TestData(np.ascontiguousarray(np.repeat(padded, 3, axis=1), dtype=np.float32), mnist.labels)


# ---------------------------------------------------------------------------------------------
# PyTorch modules (imported lazily: the regeneration mode needs numpy only)

_TORCH: SimpleNamespace | None = None


def torch_parts() -> SimpleNamespace:
    """torch, nn and the module classes of this script, defined on first use."""
    global _TORCH
    if _TORCH is not None:
        return _TORCH
    import torch
    from torch import nn

    class Dense(nn.Module):
        """x @ weight_t + bias over the last axis (ONNX MatMul + Add); weight given as [out, in]."""

        def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
            super().__init__()
            self.weight_t = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weight.T)))
            self.bias = nn.Parameter(torch.from_numpy(bias.copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x, self.weight_t) + self.bias

    def layer_norm(weight: np.ndarray, bias: np.ndarray, epsilon: float) -> nn.LayerNorm:
        norm = nn.LayerNorm(weight.shape[0], eps=epsilon)
        norm.weight.data = torch.from_numpy(weight.copy())
        norm.bias.data = torch.from_numpy(bias.copy())
        return norm

    class Attention(nn.Module):
        """nn.MultiheadAttention(D, heads, batch_first=True) self-attention with explicit q, k, v
        products: softmax(q k^T / sqrt(D/heads)) v per head, heads as blocks of D/heads columns."""

        def __init__(self, t: dict[str, np.ndarray], prefix: str, heads: int, tokens: int) -> None:
            super().__init__()
            in_weight, in_bias = t[f"{prefix}.in_proj_weight"], t[f"{prefix}.in_proj_bias"]
            dim = in_weight.shape[1]
            self.heads, self.tokens, self.dim, self.head_dim = heads, tokens, dim, dim // heads
            self.scale = 1.0 / math.sqrt(self.head_dim)
            self.q = Dense(in_weight[:dim], in_bias[:dim])
            self.k = Dense(in_weight[dim : 2 * dim], in_bias[dim : 2 * dim])
            self.v = Dense(in_weight[2 * dim :], in_bias[2 * dim :])
            self.out = Dense(t[f"{prefix}.out_proj.weight"], t[f"{prefix}.out_proj.bias"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            split = (-1, self.tokens, self.heads, self.head_dim)
            q = self.q(x).reshape(split).transpose(1, 2)  # [N, h, T, d]
            k = self.k(x).reshape(split).permute(0, 2, 3, 1)  # [N, h, d, T]
            v = self.v(x).reshape(split).transpose(1, 2)  # [N, h, T, d]
            weights = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)
            return self.out(torch.matmul(weights, v).transpose(1, 2).reshape(-1, self.tokens, self.dim))

    class ExplicitBlock(nn.Module):
        def __init__(self, t: dict[str, np.ndarray], prefix: str, heads: int, tokens: int, epsilon: float) -> None:
            super().__init__()
            self.norm1 = layer_norm(t[f"{prefix}.norm1.weight"], t[f"{prefix}.norm1.bias"], epsilon)
            self.attn = Attention(t, f"{prefix}.attn", heads, tokens)
            self.norm2 = layer_norm(t[f"{prefix}.norm2.weight"], t[f"{prefix}.norm2.bias"], epsilon)
            self.fc1 = Dense(t[f"{prefix}.fc1.weight"], t[f"{prefix}.fc1.bias"])
            self.fc2 = Dense(t[f"{prefix}.fc2.weight"], t[f"{prefix}.fc2.bias"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))

    class ExplicitViT(nn.Module):
        """train_vit.ViT with primitive-op attention and the class token folded into the positions:
        conv patches [N, D, h, w] -> [N, D, P] -> zero token in front [N, D, P+1] -> [N, P+1, D]
        -> + tokens, where tokens = position with the class token added to row 0."""

        def __init__(self, t: dict[str, np.ndarray], description: dict) -> None:
            super().__init__()
            layers = description["layers"]
            embedding = layers[0]
            attention = [inner for layer in layers if layer["type"] == "residual" for inner in layer["layers"]
                         if inner["type"] == "multihead_attention"]
            heads = int(attention[0]["heads"])
            epsilon = float(layers[-3]["epsilon"])
            patch = t[embedding["weight"]]
            self.dim, self.patch_side = patch.shape[0], patch.shape[2]
            self.patches = (mnist_data.IMAGE_SIDE // self.patch_side) ** 2
            position = t[embedding["position"]]
            self.token_count = position.shape[0]
            if self.token_count != self.patches + 1:
                raise SystemExit("vit-mnist: unexpected token count")
            self.patch = nn.Conv2d(patch.shape[1], self.dim, self.patch_side, stride=self.patch_side)
            self.patch.weight.data = torch.from_numpy(patch.copy())
            self.patch.bias.data = torch.from_numpy(t[embedding["bias"]].copy())
            tokens = position.copy()
            tokens[0] = tokens[0] + t[embedding["class_token"]]  # float32 addition, as in the original
            self.tokens = nn.Parameter(torch.from_numpy(tokens))
            depth = len(attention)
            self.blocks = nn.ModuleList(
                ExplicitBlock(t, f"blocks.{i}", heads, self.token_count, epsilon) for i in range(depth)
            )
            self.norm = layer_norm(t["norm.weight"], t["norm.bias"], epsilon)
            self.head = nn.Linear(self.dim, t["head.weight"].shape[0])
            self.head.weight.data = torch.from_numpy(t["head.weight"].copy())
            self.head.bias.data = torch.from_numpy(t["head.bias"].copy())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).reshape(-1, self.dim, self.patches)
            x = nn.functional.pad(x, (1, 0)).transpose(1, 2) + self.tokens
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    class MobileNetTiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [
                nn.Conv2d(1, MOBILENET_STEM, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(MOBILENET_STEM),
                nn.ReLU(),
            ]
            for cin, cout, stride in MOBILENET_BLOCKS:
                layers += [
                    nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                    nn.BatchNorm2d(cin),
                    nn.ReLU6(),
                    nn.Conv2d(cin, cout, 1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(),
                ]
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(MOBILENET_BLOCKS[-1][1], mnist_data.NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.flatten(self.pool(self.features(x)), 1))

    _TORCH = SimpleNamespace(torch=torch, nn=nn, ExplicitViT=ExplicitViT, MobileNetTiny=MobileNetTiny)
    return _TORCH


def torch_run(module: Any, images: np.ndarray) -> np.ndarray:
    t = torch_parts().torch
    module.eval()
    with t.no_grad():
        return module(t.from_numpy(np.ascontiguousarray(images))).numpy()


def committed(name: str) -> tuple[dict, dict[str, np.ndarray], dict]:
    directory = REPO / "models" / name
    description = json.loads((directory / "model.json").read_text(encoding="utf-8"))
    tensors, _ = safetensors_io.read(directory / description["weights"])
    reference = json.loads((directory / "reference.json").read_text(encoding="utf-8"))
    return description, tensors, reference


def check_reference(name: str, module: Any, reference: dict, shape: tuple[int, ...]) -> float:
    """Max |PyTorch - reference.json| over the model's own reference cases; fails above 1e-4."""
    inputs = np.array([c["input"] for c in reference["cases"]], dtype=np.float32).reshape((-1,) + shape)
    expected = np.array([c["logits"] for c in reference["cases"]], dtype=np.float64)
    difference = float(np.abs(torch_run(module, inputs).astype(np.float64) - expected).max())
    print(f"  PyTorch module vs models/{name}/reference.json ({len(inputs)} cases): max |diff| {difference:.2e}")
    if difference > REFERENCE_TOLERANCE:
        raise SystemExit(f"{name}: the PyTorch module does not reproduce reference.json")
    return difference


def mlp_module(name: str) -> tuple[Any, tuple[int, ...]]:
    from collections import OrderedDict

    p = torch_parts()
    description, tensors, reference = committed(name)
    layers: OrderedDict[str, Any] = OrderedDict()
    relus = 0
    for layer in description["layers"]:
        if layer["type"] == "dense":
            weight, bias = tensors[layer["weight"]], tensors[layer["bias"]]
            linear = p.nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data = p.torch.from_numpy(weight.copy())
            linear.bias.data = p.torch.from_numpy(bias.copy())
            layers[layer["weight"].rsplit(".", 1)[0]] = linear
        elif layer["type"] == "relu":
            relus += 1
            layers[f"relu{relus}"] = p.nn.ReLU()
        else:
            raise SystemExit(f"{name}: unexpected layer {layer['type']}")
    module = p.nn.Sequential(layers).eval()
    shape = tuple(description["input"]["shape"])
    check_reference(name, module, reference, shape)
    return module, shape


def lenet5_module() -> tuple[Any, tuple[int, ...]]:
    import train_cnns

    description, tensors, reference = committed("lenet5")
    module = train_cnns.LeNet5()
    module.load_state_dict({k: torch_parts().torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=True)
    shape = tuple(description["input"]["shape"])
    check_reference("lenet5", module.eval(), reference, shape)
    return module, shape


def repvgg_module() -> tuple[Any, tuple[int, ...]]:
    import train_cnns

    description, tensors, reference = committed("repvgg-mnist")
    module = train_cnns.FusedRepVGG(tensors).eval()
    shape = tuple(description["input"]["shape"])
    check_reference("repvgg-mnist", module, reference, shape)
    return module, shape


def vit_module() -> tuple[Any, tuple[int, ...]]:
    import train_vit

    p = torch_parts()
    description, tensors, reference = committed("vit-mnist")
    shape = tuple(description["input"]["shape"])
    original = train_vit.ViT(train_vit.SHAPE)
    state = {k: p.torch.from_numpy(v.copy()) for k, v in tensors.items()}
    state["cls_token"] = state["cls_token"].reshape(1, 1, -1)
    state["position"] = state["position"].reshape(1, *tensors["position"].shape)
    original.load_state_dict(state, strict=True)
    print("  training-form ViT (nn.MultiheadAttention):")
    check_reference("vit-mnist", original.eval(), reference, shape)
    module = p.ExplicitViT(tensors, description).eval()
    print("  explicit-attention ViT (exported):")
    check_reference("vit-mnist", module, reference, shape)
    test = mnist_test(shape)
    difference = float(np.abs(torch_run(module, test.images) - torch_run(original, test.images)).max())
    print(f"  explicit vs nn.MultiheadAttention ViT, whole test split: max |diff| {difference:.2e}")
    if difference > REFERENCE_TOLERANCE:
        raise SystemExit("vit-mnist: the explicit-attention module disagrees with the original")
    return module, shape


def mobilenet_module() -> tuple[Any, tuple[int, ...], dict]:
    import train_cnns

    p = torch_parts()
    recipe = train_cnns.Recipe(
        name="mobilenet-tiny",
        build=p.MobileNetTiny,
        export=lambda model: ({}, []),
        seed=MOBILENET_SEED,
        epochs=MOBILENET_EPOCHS,
        min_test_accuracy=MOBILENET_MIN_TEST_ACCURACY,
        description="MobileNet-style CNN with depthwise-separable convolutions",
        learning_rate=MOBILENET_LEARNING_RATE,
    )
    splits = mnist_data.load_splits()
    t0 = time.perf_counter()
    print(f"  training {recipe.epochs} epochs, seed {recipe.seed}, lr {recipe.learning_rate}", flush=True)
    module = train_cnns.train(recipe, splits).eval()
    accuracies = {name: train_cnns.torch_accuracy(module, splits[name]) for name in mnist_data.SPLIT_NAMES}
    print(f"  trained in {time.perf_counter() - t0:.1f}s; PyTorch accuracy: train {accuracies['train']:.4f}  "
          f"calibration {accuracies['calibration']:.4f}  test {accuracies['test']:.4f}", flush=True)
    if accuracies["test"] < recipe.min_test_accuracy:
        raise SystemExit(f"mobilenet-tiny: test accuracy {accuracies['test']:.4f} below {recipe.min_test_accuracy}")
    training = {
        "script": SCRIPT,
        "trainer": "ops/models/train_cnns.py train()",
        "dataset": mnist_data.SOURCE_NAME,
        "split": mnist_data.split_summary(),
        "seed": recipe.seed,
        "epochs": recipe.epochs,
        "optimizer": "Adam, per-step cosine decay to 0",
        "learning_rate": recipe.learning_rate,
        "batch_size": recipe.batch_size,
        "augmentation": f"random shift of up to {recipe.max_shift} pixels, zero fill",
        "pytorch_accuracy": {k: round(v, 6) for k, v in accuracies.items()},
    }
    return module, (1, mnist_data.IMAGE_SIDE, mnist_data.IMAGE_SIDE), training


def resnet18_module() -> tuple[Any, tuple[int, ...]]:
    """torchvision's resnet18(num_classes=10) with random BN statistics (the exported float
    initializers are overwritten afterwards; the random statistics only keep the folded biases
    distinct, so that the exporter does not merge equal initializers)."""
    import torchvision

    p = torch_parts()
    p.torch.manual_seed(RESNET18_TORCH_SEED)
    module = torchvision.models.resnet18(num_classes=10)
    with p.torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, p.nn.BatchNorm2d):
                sub.weight.uniform_(0.5, 1.5)
                sub.bias.uniform_(-0.1, 0.1)
                sub.running_mean.uniform_(-0.1, 0.1)
                sub.running_var.uniform_(0.5, 1.5)
    return module.eval(), (3, RESNET18_SIDE, RESNET18_SIDE)


def folded_resnet18(model: Any) -> Any:
    """A PyTorch resnet18 computing what the exported graph computes: every BatchNorm2d replaced
    by Identity and every Conv2d given the (generated) kernel and bias of its ONNX Conv node. The
    Conv nodes run in the order of the Conv2d modules in named_modules()."""
    import torchvision
    from onnx import helper, numpy_helper

    p = torch_parts()
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    module = torchvision.models.resnet18(num_classes=10)
    convs = [(name, m) for name, m in module.named_modules() if isinstance(m, p.nn.Conv2d)]
    nodes = [n for n in model.graph.node if n.op_type == "Conv"]
    if len(convs) != len(nodes):
        raise SystemExit(f"resnet18: {len(nodes)} Conv nodes for {len(convs)} Conv2d modules")
    for (name, conv), node in zip(convs, nodes):
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight, bias = arrays[node.input[1]], arrays[node.input[2]]
        if (tuple(weight.shape) != tuple(conv.weight.shape) or list(attributes.get("strides", [1, 1])) != list(conv.stride)
                or list(attributes.get("pads", [0] * 4))[:2] != list(conv.padding)):
            raise SystemExit(f"resnet18: Conv node {node.name} does not match module {name}")
        replacement = p.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  bias=True)
        replacement.weight.data = p.torch.from_numpy(weight.copy())
        replacement.bias.data = p.torch.from_numpy(bias.copy())
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, replacement)
    for name, sub in list(module.named_modules()):
        if isinstance(sub, p.nn.BatchNorm2d):
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, p.nn.Identity())
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    module.fc.weight.data = p.torch.from_numpy(arrays[gemm.input[1]].copy())
    module.fc.bias.data = p.torch.from_numpy(arrays[gemm.input[2]].copy())
    return module.eval()


# ---------------------------------------------------------------------------------------------
# Export and graph clean-up


def export(module: Any, shape: tuple[int, ...], doc: str) -> Any:
    """torch.onnx.export (legacy exporter, opset 17, dynamic batch) and the clean-up."""
    import onnx

    p = torch_parts()
    buffer = io.BytesIO()
    example = p.torch.zeros((2,) + shape, dtype=p.torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # The pads of F.pad come as a constant Slice with step -1, which the exporter does not fold;
        # simplify() folds it.
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        p.torch.onnx.export(
            module.eval(),
            (example,),
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            training=p.torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )
    model = simplify(onnx.load_from_string(buffer.getvalue()))
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    return model


def simplify(model: Any) -> Any:
    """Fold every node whose inputs are all constant into initializers (evaluated by
    onnx.reference), bypass Identity nodes, drop unused initializers. Initializers keep their order;
    folded ones follow in node order."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    folded: dict[str, np.ndarray] = {}
    kept = []
    for node in graph.node:
        inputs = [rename.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if any(o in graph_outputs for o in node.output):
            kept.append(node)
        elif node.op_type == "Identity":
            rename[node.output[0]] = node.input[0]
        elif (node.op_type == "Constant" or node.input) and all(i == "" or i in constants for i in node.input):
            feeds = {i: constants[i] for i in node.input if i}
            for name, value in zip(node.output, ReferenceEvaluator(node).run(None, feeds)):
                constants[name] = folded[name] = np.asarray(value)
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | graph_outputs
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model


def op_types(model: Any) -> list[str]:
    return sorted({node.op_type for node in model.graph.node})


def parameter_count(model: Any) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def generate_resnet18_weights(model: Any) -> list[dict]:
    """Overwrite every float initializer by its generated values; returns the weights.json entries
    (without offsets, which the saved file decides)."""
    from onnx import TensorProto, helper, numpy_helper

    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, index))
            if node.op_type == "Gemm" and index == 1:
                attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                if attributes.get("transB", 0) != 1:
                    raise SystemExit("resnet18: a Gemm without transB = 1; fan_in would be wrong")
    entries = []
    for j, tensor in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(tensor)
        entry: dict[str, Any] = {"index": j, "name": tensor.name, "shape": [int(d) for d in tensor.dims],
                                 "dtype": str(array.dtype)}
        if tensor.data_type != TensorProto.FLOAT:
            if not np.issubdtype(array.dtype, np.integer):
                raise SystemExit(f"resnet18: initializer {tensor.name} has unsupported dtype {array.dtype}")
            entry.update(rule="literal", values=[int(v) for v in array.reshape(-1)])
        else:
            uses = consumers.get(tensor.name, [])
            rules = {RULE_OF_CONSUMER.get(use) for use in uses}
            if len(uses) != 1 or None in rules:
                raise SystemExit(f"resnet18: initializer {tensor.name} has consumers {uses}; no single rule applies")
            op, index = uses[0]
            entry.update(seed=SEED_BASE + j, rule=rules.pop(), consumer=f"{op} input {index}")
            if entry["rule"] == "kaiming-uniform":
                entry["fan_in"] = int(np.prod(entry["shape"][1:], dtype=np.int64))
        values = generated_tensor(entry)
        entry["sha256"] = sha256(tensor_bytes(entry))
        if entry["rule"] != "literal":
            entry["first"] = [float(v) for v in values.reshape(-1)[:4]]
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        entries.append(entry)
    return entries


def save_resnet18(model: Any, entries: list[dict], out_dir: Path) -> Path:
    """Save with all initializers external, in one file back to back, and write resnet18.weights.json;
    then check that the JSON alone regenerates the file."""
    import onnx

    path = out_dir / "resnet18.onnx"
    with tempfile.TemporaryDirectory(dir=out_dir) as temporary:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        with contextlib.chdir(temporary):  # onnx checks and appends to `location` relative to the cwd
            onnx.save_model(copy, "resnet18.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                            location=RESNET18_WEIGHTS, size_threshold=0)
        os.replace(Path(temporary) / "resnet18.onnx", path)
        os.replace(Path(temporary) / RESNET18_WEIGHTS, out_dir / RESNET18_WEIGHTS)
    os.chmod(out_dir / RESNET18_WEIGHTS, 0o644)
    onnx.checker.check_model(str(path), full_check=True)
    blob = (out_dir / RESNET18_WEIGHTS).read_bytes()
    graph = onnx.load(str(path), load_external_data=False).graph
    by_name = {e["name"]: e for e in entries}
    for tensor in graph.initializer:
        info = {kv.key: kv.value for kv in tensor.external_data}
        if tensor.data_location != onnx.TensorProto.EXTERNAL or info.get("location") != RESNET18_WEIGHTS:
            raise SystemExit(f"resnet18: initializer {tensor.name} is not in {RESNET18_WEIGHTS}")
        by_name[tensor.name]["offset"] = int(info.get("offset", 0))
        by_name[tensor.name]["length"] = int(info["length"])
    ordered = []
    for entry in entries:
        entry = dict(entry)
        first = entry.pop("first", None)
        values = entry.pop("values", None)
        sha = entry.pop("sha256")
        entry.update(sha256=sha)
        if first is not None:
            entry["first"] = first
        if values is not None:
            entry["values"] = values
        ordered.append(entry)
    spec = {
        "model": "resnet18.onnx",
        "external_data": RESNET18_WEIGHTS,
        "bytes": len(blob),
        "sha256": sha256(blob),
        "tensors": len(entries),
        "script": SCRIPT,
        "generator": {
            "name": "SplitMix64",
            "arithmetic": "unsigned 64-bit integers modulo 2^64; element i = 0, 1, ... of a tensor in C order",
            "state": "z = seed + (i + 1) * 0x9E3779B97F4A7C15",
            "mix": "z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z = z ^ (z >> 31)",
            "uniform": "u = (z >> 11) * 2^-53 (float64, exact, in [0, 1))",
            "seed": "0x6E65726363 + j, j = the index of the tensor in the graph's initializer list",
            "seed_base": SEED_BASE,
            "check": {"seed": 0, "first_z": [f"0x{v:016X}" for v in SPLITMIX_SEED0]},
        },
        "rules": RULES,
        "rounding": "each value is computed in float64 as written and rounded once, to nearest even, to float32",
        "rule_of_consumer": {f"{op} input {index}": rule for (op, index), rule in RULE_OF_CONSUMER.items()},
        "layout": "little-endian, C order, tensors back to back in initializer order at [offset, offset + length)",
        "initializers": ordered,
    }
    write_json(out_dir / RESNET18_WEIGHTS_JSON, spec)
    if build_weights_file(json.loads((out_dir / RESNET18_WEIGHTS_JSON).read_text(encoding="utf-8"))) != blob:
        raise SystemExit("resnet18: the weights regenerated from the JSON differ from the saved file")
    return path


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_run(session: Any, images: np.ndarray, chunk: int = 250) -> np.ndarray:
    return np.concatenate(
        [session.run(["output"], {"input": images[s : s + chunk]})[0] for s in range(0, images.shape[0], chunk)]
    )


def write_reference(out_dir: Path, name: str, session: Any, test: TestData) -> np.ndarray:
    import onnxruntime as ort

    inputs = test.images[:REFERENCE_CASES]
    outputs = session.run(["output"], {"input": inputs})[0]
    if outputs.dtype != np.float32:
        raise SystemExit(f"{name}: ONNX Runtime output is {outputs.dtype}")
    reference = {
        "model": f"{name}.onnx",
        "onnxruntime": ort.__version__,
        "opset": OPSET,
        "input_shape": [int(d) for d in inputs.shape],
        "output_shape": [int(d) for d in outputs.shape],
        "labels": [int(v) for v in test.labels[:REFERENCE_CASES]],
        "inputs": [[float(v) for v in row.reshape(-1)] for row in inputs],
        "outputs": [[float(v) for v in row.reshape(-1)] for row in outputs],
    }
    write_json(out_dir / f"{name}.reference.json", reference)
    return outputs


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class Job:
    name: str
    build: Callable[[], tuple]
    test: Callable[[tuple[int, ...]], TestData]
    source: str
    description: str


JOBS = {
    "mnist-mlp": Job("mnist-mlp", lambda: mlp_module("mnist-mlp"), mnist_test, "models/mnist-mlp/model.safetensors",
                     "MLP 784-256-128-10 (ReLU) for MNIST"),
    "lenet5": Job("lenet5", lenet5_module, mnist_test, "models/lenet5/model.safetensors", "LeNet5 for MNIST"),
    "repvgg-mnist": Job("repvgg-mnist", repvgg_module, mnist_test, "models/repvgg-mnist/model.safetensors",
                        "RepVGG (fused inference form) for MNIST"),
    "vit-mnist": Job("vit-mnist", vit_module, mnist_test, "models/vit-mnist/model.safetensors",
                     "vision transformer (6 blocks, 4 heads, width 64) for MNIST"),
    "digits-mlp": Job("digits-mlp", lambda: mlp_module("digits-mlp"), lambda shape: digits_test(),
                      "models/digits-mlp/model.safetensors", "MLP 64-128-64-10 (ReLU) for 8x8 digits"),
    "mobilenet-tiny": Job("mobilenet-tiny", mobilenet_module, mnist_test, f"trained by {SCRIPT}",
                          "MobileNet-style depthwise-separable CNN for MNIST"),
    "resnet18": Job("resnet18", resnet18_module, lambda shape: resnet18_test(),
                    f"generated by {SCRIPT} (SplitMix64, see {RESNET18_WEIGHTS_JSON})",
                    "torchvision resnet18(num_classes=10), untrained generated weights, 3x32x32 input"),
}


def run(job: Job, out_dir: Path) -> dict:
    import onnx

    print(f"{job.name}:", flush=True)
    t0 = time.perf_counter()
    built = job.build()
    module, shape = built[0], built[1]
    training = built[2] if len(built) > 2 else None
    doc = f"nercc {job.name}: {job.description}; exported by {SCRIPT}, opset {OPSET}, input [batch, " \
          f"{', '.join(map(str, shape))}]"
    model = export(module, shape, doc)
    folded = "BatchNormalization" not in op_types(model) and any(
        isinstance(m, torch_parts().nn.BatchNorm2d) for m in module.modules())
    weights_spec = None
    if job.name == "resnet18":
        if any(n.op_type == "Conv" and len(n.input) != 3 for n in model.graph.node):
            raise SystemExit("resnet18: a Conv without bias after BN folding")
        entries = generate_resnet18_weights(model)
        onnx.checker.check_model(model, full_check=True)
        path = save_resnet18(model, entries, out_dir)
        module = folded_resnet18(model)
        weights_spec = f"{RESNET18_WEIGHTS_JSON} ({len(entries)} tensors)"
    else:
        path = out_dir / f"{job.name}.onnx"
        onnx.save_model(model, str(path))
        onnx.checker.check_model(str(path), full_check=True)
        limit = MAX_MOBILENET_BYTES if job.name == "mobilenet-tiny" else MAX_INLINE_BYTES
        if path.stat().st_size > limit:
            raise SystemExit(f"{path} is {path.stat().st_size} bytes, over {limit}")
    session = ort_session(path)
    test = job.test(shape)
    outputs = write_reference(out_dir, job.name, session, test)
    torch_outputs = torch_run(module, test.images[:REFERENCE_CASES])
    difference = float(np.abs(outputs.astype(np.float64) - torch_outputs).max())
    scale = float(np.abs(torch_outputs).max())
    print(f"  ONNX Runtime vs PyTorch, {REFERENCE_CASES} reference inputs: max |diff| {difference:.3e} "
          f"(max |output| {scale:.3g})")
    if difference > 1e-4 * max(1.0, scale):
        raise SystemExit(f"{job.name}: ONNX Runtime disagrees with PyTorch")
    all_outputs = ort_run(session, test.images)
    accuracy = float(np.mean(np.argmax(all_outputs, axis=1) == test.labels))
    ops = op_types(model)
    size = path.stat().st_size
    shown = path.relative_to(REPO) if REPO in path.parents else path
    print(f"  wrote {shown} ({size} bytes), "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, "
          f"{parameter_count(model)} values; BN folded: {folded}")
    print(f"  op types: {', '.join(ops)}")
    print(f"  ONNX Runtime accuracy on the {len(test.labels)}-image test split: {accuracy:.4f}"
          f"{' (untrained)' if job.name == 'resnet18' else ''}; {time.perf_counter() - t0:.1f}s", flush=True)
    entry = {
        "file": path.name,
        "bytes": size,
        "sha256": sha256(path.read_bytes()),
        "opset": OPSET,
        "description": job.description,
        "input": {"name": "input", "shape": ["batch", *shape], "dtype": "float32"},
        "output": {"name": "output", "shape": ["batch", int(all_outputs.shape[1])], "kind": "logits"},
        "op_types": ops,
        "nodes": len(model.graph.node),
        "initializers": len(model.graph.initializer),
        "parameters": parameter_count(model),
        "batchnorm_folded": folded,
        "weights": job.source,
        "reference": f"{job.name}.reference.json",
        "test_images": int(len(test.labels)),
        "onnxruntime_test_accuracy": round(accuracy, 6) if job.name != "resnet18" else None,
        "onnxruntime_vs_pytorch_max_abs_diff": float(f"{difference:.3e}"),
    }
    if weights_spec:
        entry["external_data"] = RESNET18_WEIGHTS
        entry["external_data_description"] = weights_spec
    if training:
        entry["training"] = training
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory to write into (default models/onnx)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--regenerate-resnet18-weights", action="store_true",
                        help="rebuild resnet18.weights from resnet18.weights.json with numpy only, and exit")
    args = parser.parse_args()
    out_dir = args.out.resolve()
    if args.regenerate_resnet18_weights:
        regenerate_resnet18_weights(out_dir)
        return

    check_splitmix64()
    p = torch_parts()
    p.torch.set_num_threads(1)
    p.torch.set_num_interop_threads(1)
    p.torch.use_deterministic_algorithms(True)
    import onnx
    import onnxruntime as ort

    print(f"torch {p.torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, "
          f"numpy {np.__version__}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "models.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    entries = dict(manifest.get("models", {}))
    for name in args.models:
        entries[name] = run(JOBS[name], out_dir)
    manifest = {
        "script": SCRIPT,
        "opset": OPSET,
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {p.torch.__version__.split('+')[0]}",
        "onnxruntime": ort.__version__,
        "onnxruntime_session": "CPUExecutionProvider, intra_op_num_threads 1, inter_op_num_threads 1, sequential",
        "models": {name: entries[name] for name in MODELS if name in entries},
    }
    write_json(manifest_path, manifest)
    print("\n| model | bytes | op types | BN folded | ORT vs PyTorch | ORT test accuracy |")
    print("| --- | ---: | --- | --- | ---: | ---: |")
    for name, e in manifest["models"].items():
        accuracy = "untrained" if e["onnxruntime_test_accuracy"] is None else f"{e['onnxruntime_test_accuracy']:.4f}"
        print(f"| {name} | {e['bytes']} | {' '.join(e['op_types'])} | {e['batchnorm_folded']} | "
              f"{e['onnxruntime_vs_pytorch_max_abs_diff']:.2e} | {accuracy} |")
    all_ops = sorted({op for e in manifest["models"].values() for op in e["op_types"]})
    print(f"\nall op types: {', '.join(all_ops)}")


if __name__ == "__main__":
    main()
