#!/usr/bin/env python3
"""Throughput of an ONNX model under ONNX Runtime on one CPU thread, as a baseline for nercc.

    pip install -r ops/models/requirements-onnx.txt
    python3 ops/bench/onnxruntime_bench.py --model models/onnx/mnist-mlp.onnx --batches 1,8,64 --seconds 2
    python3 ops/bench/onnxruntime_bench.py --model models/onnx/resnet18.onnx --json out/ort-resnet18.json

Offline tooling: never run in tests or CI. The session runs on the CPU execution provider with
intra_op_num_threads = inter_op_num_threads = 1 and sequential execution (and the BLAS/OpenMP
thread variables set to 1 before numpy is imported), with ONNX Runtime's default graph
optimisations unless --optimization says otherwise. A model with external data (resnet18) loads
from its path when its data file sits next to it (ops/models/export_onnx.py
--regenerate-resnet18-weights rebuilds models/onnx/resnet18.weights).

Inputs are random: uniform in [0, 1) (the pixel range of every model here), float32, the model's
input shape with the dynamic batch axis set to each batch size, drawn once per batch size from a
fixed seed. For each batch size the script warms up, picks how many calls make one timed run of
about --run-seconds, then repeats timed runs until --seconds have passed (at least --min-runs
runs). A run's throughput is batch x calls / elapsed; the table gives the median over the runs
(and the slowest and fastest run), in queries (samples) per second, and the median latency of one
call.

Prints a markdown table; --json FILE also writes the figures with the settings and versions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

SEED = 20250301
OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(path: Path, optimization: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION[optimization]
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def input_shape(sess: ort.InferenceSession, batch: int) -> tuple[int, ...]:
    """The model's input shape with its first (symbolic) axis set to `batch`; any other symbolic
    axis is an error."""
    shape = sess.get_inputs()[0].shape
    if not shape or isinstance(shape[0], int) and shape[0] != batch:
        raise SystemExit(f"the model's input shape {shape} has no dynamic batch axis")
    rest = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise SystemExit(f"the model's input shape {shape} has symbolic axes besides the batch")
    return (batch, *rest)


def measure(sess: ort.InferenceSession, batch: int, seconds: float, run_seconds: float, min_runs: int) -> dict:
    rng = np.random.default_rng(SEED + batch)
    name = sess.get_inputs()[0].name
    feed = {name: rng.random(input_shape(sess, batch), dtype=np.float32)}
    outputs = [o.name for o in sess.get_outputs()]
    # Warm-up, then calibrate the number of calls per timed run.
    for _ in range(3):
        sess.run(outputs, feed)
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            sess.run(outputs, feed)
        elapsed = time.perf_counter() - start
        if elapsed >= run_seconds / 4 or calls >= 1 << 20:
            break
        calls *= 2
    calls = max(1, round(calls * run_seconds / max(elapsed, 1e-9)))
    rates, latencies = [], []
    deadline = time.perf_counter() + seconds
    while len(rates) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(calls):
            sess.run(outputs, feed)
        elapsed = time.perf_counter() - start
        rates.append(batch * calls / elapsed)
        latencies.append(elapsed / calls)
    return {
        "batch": batch,
        "queries_per_second": statistics.median(rates),
        "min_queries_per_second": min(rates),
        "max_queries_per_second": max(rates),
        "median_call_ms": statistics.median(latencies) * 1e3,
        "runs": len(rates),
        "calls_per_run": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="path of the .onnx file")
    parser.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes (default 1,8,64)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size (default 2)")
    parser.add_argument("--run-seconds", type=float, default=0.1, help="target length of one timed run (default 0.1)")
    parser.add_argument("--min-runs", type=int, default=5, help="at least this many timed runs (default 5)")
    parser.add_argument("--optimization", choices=sorted(OPTIMIZATION), default="all",
                        help="ONNX Runtime graph optimisation level (default all, ONNX Runtime's default)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or any(b < 1 for b in batches):
        raise SystemExit("--batches needs positive integers")

    sess = session(args.model, args.optimization)
    results = [measure(sess, b, args.seconds, args.run_seconds, args.min_runs) for b in batches]
    shape = sess.get_inputs()[0].shape

    print(f"{args.model}: input {shape}, ONNX Runtime {ort.__version__}, CPUExecutionProvider, 1 thread, "
          f"optimisation {args.optimization}")
    print()
    print("| batch | queries/s (median) | min | max | ms per call (median) | runs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['batch']} | {r['queries_per_second']:.1f} | {r['min_queries_per_second']:.1f} | "
              f"{r['max_queries_per_second']:.1f} | {r['median_call_ms']:.4f} | {r['runs']} |")
    if args.json:
        report = {
            "model": str(args.model),
            "input_shape": [d if isinstance(d, int) else str(d) for d in shape],
            "onnxruntime": ort.__version__,
            "provider": "CPUExecutionProvider",
            "intra_op_num_threads": 1,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "optimization": args.optimization,
            "seconds_per_batch": args.seconds,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
