#!/usr/bin/env python3
"""Classify MNIST test images with a running nercc system and print the predictions.

    python examples/predict.py --url amqp://guest:guest@127.0.0.1:5672/%2F --count 10

Queries come from a 2-D float32 .npy file (default: the repository's data/mnist/test-images.npy),
labels, when found, from the matching labels file. Every query is one request, sent together with
Client.predict_many; a request that fails is printed with its error code.
"""

from __future__ import annotations

import argparse
import array
import ast
import os
import struct
import sys
from pathlib import Path
from typing import List, Optional

from nercc_client import Client, NerccError

DATA = Path(__file__).resolve().parents[3] / "data" / "mnist"


def read_npy(path: Path) -> List[list]:
    """Rows of a little-endian, C-order .npy file of float32, float64 or uint8 (1-D: one row)."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file")
    length, start = (struct.unpack_from("<H", data, 8)[0], 10) if data[6] == 1 else (struct.unpack_from("<I", data, 8)[0], 12)
    header = ast.literal_eval(data[start : start + length].decode("latin1"))
    typecode = {"<f4": "f", "<f8": "d", "|u1": "B"}.get(header["descr"])
    if typecode is None or header["fortran_order"]:
        raise ValueError(f"{path}: unsupported .npy layout {header}")
    values = array.array(typecode, data[start + length :])
    if sys.byteorder == "big":
        values.byteswap()
    shape = header["shape"]
    width = 1 if len(shape) == 1 else len(values) // shape[0]
    return [values[i * width : (i + 1) * width].tolist() for i in range(shape[0])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("NERCC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
                        help="broker URL, or several separated by commas (default $NERCC_AMQP_URL)")
    parser.add_argument("--prefix", default="nercc", help="topology prefix of the system (default nercc)")
    parser.add_argument("--model", default="mnist-mlp")
    parser.add_argument("--input", type=Path, default=DATA / "test-images.npy", help="queries, a 2-D .npy file")
    parser.add_argument("--labels", type=Path, default=DATA / "test-labels.npy", help="labels, a 1-D .npy file")
    parser.add_argument("--count", type=int, default=10, help="how many queries to send")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answers")
    args = parser.parse_args()

    queries = read_npy(args.input)[: args.count]
    labels: Optional[List[int]] = None
    if args.labels.is_file():
        labels = [int(row[0]) for row in read_npy(args.labels)[: args.count]]

    with Client(args.url, prefix=args.prefix) as client:
        answers = client.predict_many(args.model, [[q] for q in queries], timeout=args.timeout, return_exceptions=True)

    right = failed = 0
    for i, answer in enumerate(answers):
        expected = f"  label {labels[i]}" if labels else ""
        if isinstance(answer, NerccError):
            failed += 1
            print(f"query {i}: error {answer.code or type(answer).__name__}: {answer.message}{expected}")
            continue
        outputs = answer[0]
        predicted = max(range(len(outputs)), key=outputs.__getitem__)
        right += labels is not None and predicted == labels[i]
        print(f"query {i}: class {predicted}{expected}")
    if labels:
        print(f"{right}/{len(answers)} right, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
