#!/usr/bin/env python3
"""Train nercc's MNIST MLP (784 -> 256 -> 128 -> 10) with numpy and export it.

    pip install -r ops/models/requirements.txt
    python3 ops/models/train_mnist_mlp.py            # writes into the repository
    python3 ops/models/train_mnist_mlp.py --out DIR  # writes DIR/models/mnist-mlp, DIR/data/mnist

Writes:
  models/mnist-mlp/model.safetensors  float32 fc{1,2,3}.{weight,bias}, weight [out, in], y = W x + b
  models/mnist-mlp/model.json         model description (schemas/model-description.schema.json)
  models/mnist-mlp/reference.json     8 test inputs with their float64 logits from the float32 weights
  data/mnist/{calibration,test}-{images,labels}.npy   (the train split is kept in memory only)

Everything is deterministic: the split, the initialisation, the batch order and the augmentation
come from fixed seeds, and BLAS runs on one thread (set below, before numpy is imported), so two
runs on the same machine and package versions give byte-identical files. See docs/models.md.
"""

from __future__ import annotations

import os

# One BLAS thread: threaded float32 GEMM may sum in a different order from run to run or from
# machine to machine. These must be set before numpy is imported; the model is small enough
# that a single thread trains it in well under a minute.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist_data  # noqa: E402
import safetensors_io  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "ops/models/train_mnist_mlp.py"
SCHEMA = REPO / "schemas" / "model-description.schema.json"
MODEL_NAME = "mnist-mlp"

SEED = 1234  # initialisation, batch order and augmentation (the split has its own seed)
LAYER_SIZES = (784, 256, 128, 10)
HYPERPARAMETERS = {
    "optimizer": "Adam",
    "learning_rate": 1e-3,
    "learning_rate_schedule": "cosine decay to 0 over all steps",
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-8,
    "weight_decay": 1e-4,
    "weight_decay_kind": "decoupled (AdamW), weights only",
    "batch_size": 64,
    "epochs": 60,
    "augmentation": "random shift of up to 2 pixels in x and y, zero fill",
    "max_shift": 2,
    "init": "He normal (std sqrt(2 / fan_in)), zero biases",
    "loss": "softmax cross-entropy",
}
REFERENCE_CASES = 8
MIN_TEST_ACCURACY = 0.93


# ---------------------------------------------------------------------------------------------
# Model


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]), start=1):
        std = np.sqrt(2.0 / fan_in)
        params[f"fc{i}.weight"] = (rng.standard_normal((fan_out, fan_in)) * std).astype(np.float32)
        params[f"fc{i}.bias"] = np.zeros(fan_out, dtype=np.float32)
    return params


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and the activations [x, h1, h2] needed by backward. Works in x's dtype."""
    p = {k: v.astype(x.dtype, copy=False) for k, v in params.items()}
    h1 = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0)
    h2 = np.maximum(h1 @ p["fc2.weight"].T + p["fc2.bias"], 0)
    logits = h2 @ p["fc3.weight"].T + p["fc3.bias"]
    return logits, [x, h1, h2]


def loss_and_grads(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, int, dict[str, np.ndarray]]:
    logits, (x, h1, h2) = forward(params, x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sums = exp.sum(axis=1, keepdims=True)
    rows = np.arange(y.size)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, y]))
    correct = int(np.sum(np.argmax(logits, axis=1) == y))
    dz = exp / sums
    dz[rows, y] -= 1
    dz /= np.float32(y.size)
    grads = {"fc3.weight": dz.T @ h2, "fc3.bias": dz.sum(axis=0)}
    dh2 = (dz @ params["fc3.weight"]) * (h2 > 0)
    grads["fc2.weight"] = dh2.T @ h1
    grads["fc2.bias"] = dh2.sum(axis=0)
    dh1 = (dh2 @ params["fc2.weight"]) * (h1 > 0)
    grads["fc1.weight"] = dh1.T @ x
    grads["fc1.bias"] = dh1.sum(axis=0)
    return loss, correct, grads


def exported_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """What the exported model computes: float32 weights and inputs, evaluated in float64."""
    logits, _ = forward({k: v.astype(np.float64) for k, v in params.items()}, x.astype(np.float64))
    return logits


def accuracy(params: dict[str, np.ndarray], split: mnist_data.Split) -> float:
    predicted = np.argmax(exported_logits(params, split.images), axis=1)
    return float(np.mean(predicted == split.labels))


# ---------------------------------------------------------------------------------------------
# Training


def shift_batch(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Shift each 28x28 image by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    n = images.shape[0]
    side = mnist_data.IMAGE_SIDE
    padded = np.pad(images.reshape(n, side, side), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(-max_shift, max_shift + 1, size=n)
    dx = rng.integers(-max_shift, max_shift + 1, size=n)
    r = np.arange(side)
    rows = (max_shift - dy)[:, None, None] + r[None, :, None]
    cols = (max_shift - dx)[:, None, None] + r[None, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols].reshape(n, side * side)


def train(train_split: mnist_data.Split, calibration: mnist_data.Split, seed: int) -> dict[str, np.ndarray]:
    hp = HYPERPARAMETERS
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    beta1, beta2, eps = np.float32(hp["beta1"]), np.float32(hp["beta2"]), np.float32(hp["epsilon"])
    n = len(train_split)
    batch = hp["batch_size"]
    steps_per_epoch = (n + batch - 1) // batch
    total_steps = steps_per_epoch * hp["epochs"]
    step = 0
    for epoch in range(1, hp["epochs"] + 1):
        order = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            x = shift_batch(train_split.images[idx], rng, hp["max_shift"]) if hp["max_shift"] else train_split.images[idx]
            y = train_split.labels[idx].astype(np.int64)
            loss, ok, grads = loss_and_grads(params, x, y)
            loss_sum += loss * idx.size
            correct += ok
            step += 1
            lr = np.float32(hp["learning_rate"] * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / total_steps)))
            c1 = np.float32(1.0 - float(beta1) ** step)
            c2 = np.float32(1.0 - float(beta2) ** step)
            for k, p in params.items():
                g = grads[k].astype(np.float32, copy=False)
                m[k] = beta1 * m[k] + (1 - beta1) * g
                v[k] = beta2 * v[k] + (1 - beta2) * g * g
                if k.endswith(".weight") and hp["weight_decay"]:
                    p *= np.float32(1.0 - float(lr) * hp["weight_decay"])
                p -= lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)
        if epoch == 1 or epoch % 10 == 0 or epoch == hp["epochs"]:
            print(
                f"  epoch {epoch:3d}/{hp['epochs']}  loss {loss_sum / n:.4f}  "
                f"train (augmented) acc {correct / n:.4f}  calibration acc {accuracy(params, calibration):.4f}",
                flush=True,
            )
    return params


# ---------------------------------------------------------------------------------------------
# Export


def _format_json(value: object, indent: int = 0) -> str:
    """JSON with 2-space indentation, but lists of scalars kept on one line."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}  {json.dumps(k)}: {_format_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(x, (dict, list)) for x in value):
        items = [f"{pad}  {_format_json(x, indent + 1)}" for x in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def write_json(path: Path, value: object) -> None:
    path.write_text(_format_json(value) + "\n", encoding="utf-8")


def model_description(test_acc: float, train_acc: float, calibration_acc: float) -> dict:
    sizes = " -> ".join(str(s) for s in LAYER_SIZES)
    return {
        "format": "nercc-model",
        "version": 1,
        "name": MODEL_NAME,
        "description": (
            f"Multi-layer perceptron {sizes} (ReLU hidden layers, logits out) classifying 28x28 "
            "MNIST digits; trained with numpy on a 3500-image subset."
        ),
        "weights": "model.safetensors",
        "input": {
            "shape": [mnist_data.IMAGE_SIZE],
            "dtype": "float32",
            "description": "28x28 grey image, row-major, pixels scaled to [0,1]",
        },
        "output": {"shape": [mnist_data.NUM_CLASSES], "kind": "logits", "labels": [str(d) for d in range(10)]},
        "layers": [
            {"type": "dense", "weight": "fc1.weight", "bias": "fc1.bias"},
            {"type": "relu"},
            {"type": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
            {"type": "relu"},
            {"type": "dense", "weight": "fc3.weight", "bias": "fc3.bias"},
        ],
        "training": {
            "script": SCRIPT,
            "dataset": mnist_data.SOURCE_NAME,
            "split": mnist_data.split_summary(),
            "test_accuracy": round(test_acc, 6),
            "calibration_accuracy": round(calibration_acc, 6),
            "train_accuracy": round(train_acc, 6),
            "seed": SEED,
            "split_seed": mnist_data.SPLIT_SEED,
            "hyperparameters": HYPERPARAMETERS,
        },
    }


def reference_cases(params: dict[str, np.ndarray], test: mnist_data.Split) -> dict:
    x = test.images[:REFERENCE_CASES]
    logits = exported_logits(params, x)
    return {
        "model": MODEL_NAME,
        "cases": [
            {
                "input": [float(p) for p in x[i]],  # float32 values, exactly representable
                "label": int(test.labels[i]),
                "logits": [float(z) for z in logits[i]],
            }
            for i in range(x.shape[0])
        ],
    }


def validate_description(description: dict) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.Draft202012Validator
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    for i, example in enumerate(schema.get("examples", [])):
        errors = sorted(validator.iter_errors(example), key=lambda e: list(e.path))
        if errors:
            raise SystemExit(f"schema example {i} does not validate: {errors[0].message}")
    errors = sorted(validator.iter_errors(description), key=lambda e: list(e.path))
    if errors:
        raise SystemExit(f"model.json does not validate: {errors[0].message} at {list(errors[0].path)}")


def check_export(model_dir: Path, params: dict[str, np.ndarray], reference: dict) -> None:
    """Re-read the written files and check them against the trained parameters."""
    tensors, _ = safetensors_io.read(model_dir / "model.safetensors")
    for k, p in params.items():
        if tensors[k].dtype != np.float32 or tensors[k].tobytes() != p.tobytes():
            raise SystemExit(f"{k} does not round-trip through model.safetensors")
    written = json.loads((model_dir / "reference.json").read_text(encoding="utf-8"))
    x = np.array([c["input"] for c in written["cases"]], dtype=np.float32)
    if x.tobytes() != np.array([c["input"] for c in reference["cases"]], dtype=np.float32).tobytes():
        raise SystemExit("reference inputs do not round-trip through JSON as float32")
    expected = np.array([c["logits"] for c in written["cases"]])
    if not np.array_equal(exported_logits(tensors, x), expected):
        raise SystemExit("reference logits do not match the exported weights")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root to write models/ and data/ under (default: the repository)")
    args = parser.parse_args()
    model_dir = args.out / "models" / MODEL_NAME
    data_dir = args.out / "data" / "mnist"

    t0 = time.perf_counter()
    print(f"numpy {np.__version__}; source {mnist_data.source_path()}", flush=True)
    splits = mnist_data.load_splits()
    print(f"split: {mnist_data.split_summary()}", flush=True)
    t1 = time.perf_counter()

    print(f"training {' -> '.join(map(str, LAYER_SIZES))} for {HYPERPARAMETERS['epochs']} epochs, seed {SEED}", flush=True)
    params = train(splits["train"], splits["calibration"], SEED)
    t2 = time.perf_counter()

    train_acc = accuracy(params, splits["train"])
    calibration_acc = accuracy(params, splits["calibration"])
    test_acc = accuracy(params, splits["test"])
    print(f"accuracy: train {train_acc:.4f}  calibration {calibration_acc:.4f}  test {test_acc:.4f}", flush=True)
    if test_acc < MIN_TEST_ACCURACY:
        raise SystemExit(f"test accuracy {test_acc:.4f} is below {MIN_TEST_ACCURACY}")

    description = model_description(test_acc, train_acc, calibration_acc)
    validate_description(description)
    reference = reference_cases(params, splits["test"])

    model_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": MODEL_NAME,
        "layout": "dense weight [out, in], y = W x + b",
        "script": SCRIPT,
    }
    blob = safetensors_io.write(model_dir / "model.safetensors", params, metadata)
    safetensors_io.check_round_trip(params, metadata, blob)
    write_json(model_dir / "model.json", description)
    write_json(model_dir / "reference.json", reference)
    written = [model_dir / "model.json", model_dir / "model.safetensors", model_dir / "reference.json"]
    for name in mnist_data.WRITTEN_SPLITS:
        written += mnist_data.write_split(data_dir, splits[name])
    check_export(model_dir, params, reference)
    t3 = time.perf_counter()

    for path in written:
        print(f"  wrote {path} ({path.stat().st_size} bytes)")
    print(f"time: data {t1 - t0:.1f}s  training {t2 - t1:.1f}s  export {t3 - t2:.1f}s  total {t3 - t0:.1f}s")


if __name__ == "__main__":
    main()
