#!/usr/bin/env python3
"""Native runtime against ONNX Runtime on the same ONNX files, machine and run, one thread each.

    pip install -r ops/models/requirements-onnx.txt
    swift build -c release --product nercc
    python3 ops/bench/onnx_compare.py --output-dir docs/bench/onnx --rounds 9 --seconds 4

For every model in models/onnx/ (the exports of ops/models/export_onnx.py), runs
`nercc bench model --input random` (OPENBLAS_NUM_THREADS=1: one thread) and then
ops/bench/onnxruntime_bench.py (intra_op_num_threads = inter_op_num_threads = 1) on the same file,
at batches 1, 8 and 64, and writes onnx.md (the table, the command, the machine) and onnx.json.
Both draw uniform random inputs in [0, 1). nercc reports the median of its repetitions, ONNX
Runtime the median of its timed runs. The pair runs --rounds times in turn (nercc, ORT, nercc,
ORT, ...), each round with a share of the repetitions and seconds, both pinned to one CPU (--cpu),
and the table gives the median rate of each and the median of the rounds' ratios: on a noisy
machine the two sides of a round see the same conditions, where one long run each would not. Offline tooling: never run in tests
or CI.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["mnist-mlp", "digits-mlp", "lenet5", "repvgg-mnist", "vit-mnist", "mobilenet-tiny", "resnet18"]
# Repetitions of nercc's timer per batch size: enough for a stable median within a few seconds.
REPETITIONS = {"mnist-mlp": 2000, "digits-mlp": 2000, "lenet5": 300, "repvgg-mnist": 100, "vit-mnist": 100,
               "mobilenet-tiny": 200, "resnet18": 20}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=2.0, help="ONNX Runtime's timed seconds per batch size")
    parser.add_argument("--nercc", type=Path, default=ROOT / ".build/release/nercc")
    parser.add_argument("--rounds", type=int, default=5, help="alternating nercc / ORT rounds per model")
    parser.add_argument("--cpu", type=int, default=0,
                        help="the CPU both sides are pinned to (-1: not pinned)")
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")

    def pin():
        # Unpinned, a process now and then ran everything about twice as slowly for its whole life
        # on this VM (MobileNet-tiny: 21 or 33 thousand queries/s by process; pinned, 32-35 on
        # either CPU); both sides run on the same CPU.
        if args.cpu >= 0:
            os.sched_setaffinity(0, {args.cpu})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = ROOT / "models/onnx" / f"{name}.onnx"
            natives, orts, version = [], [], None
            for _ in range(args.rounds):
                native_json = Path(tmp) / f"{name}-nercc.json"
                ort_json = Path(tmp) / f"{name}-ort.json"
                repetitions = max(5, REPETITIONS.get(name, 100) // args.rounds)
                subprocess.run([str(args.nercc), "bench", "model", "--model", str(model), "--input", "random",
                                "--batches", args.batches, "--repetitions", str(repetitions),
                                "--json", str(native_json)], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               preexec_fn=pin)
                subprocess.run([sys.executable, str(ROOT / "ops/bench/onnxruntime_bench.py"), "--model", str(model),
                                "--batches", args.batches, "--seconds", str(args.seconds / args.rounds),
                                "--json", str(ort_json)], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               preexec_fn=pin)
                natives.append({int(r["batch"]): r["queries_per_second"]
                                for r in json.loads(native_json.read_text())["results"]})
                ort_doc = json.loads(ort_json.read_text())
                version = ort_doc.get("onnxruntime", ort_doc.get("versions", {}))
                orts.append({int(r["batch"]): r["queries_per_second"]["median"]
                             if isinstance(r["queries_per_second"], dict) else r["queries_per_second"]
                             for r in ort_doc["results"]})
            native = {b: statistics.median(n[b] for n in natives) for b in natives[0]}
            ort = {b: statistics.median(o[b] for o in orts) for b in orts[0]}
            ratios = {b: [n[b] / o[b] for n, o in zip(natives, orts)] for b in natives[0]}
            results.append({"model": name, "nercc": native, "onnxruntime": ort,
                            "ratio": {b: statistics.median(v) for b, v in ratios.items()},
                            "ratio_rounds": ratios, "rounds": args.rounds, "onnxruntime_version": version})
            print(name, {b: f"{native[b]:.0f} / {ort[b]:.0f}" for b in native}, flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    lines = [f"Machine: {machine()}, {when}.", "",
             "Command: `python3 ops/bench/onnx_compare.py " + " ".join(sys.argv[1:]) + "`", "",
             f"Queries per second on one thread (native nercc / ONNX Runtime, medians of {args.rounds} alternating "
             "rounds), the median of the rounds' ratios, and at batch 64 the range of the rounds' ratios:", "",
             "| model | " + " | ".join(f"batch {b}: nercc / ORT" for b in batches) + " | " +
             " | ".join(f"ratio {b}" for b in batches) + f" | ratio {batches[-1]}: rounds |",
             "|---|" + "---|" * (2 * len(batches) + 1)]
    for r in results:
        cells = [f"{r['nercc'][b]:.0f} / {r['onnxruntime'][b]:.0f}" for b in batches]
        ratios = [f"{r['ratio'][b]:.2f}" for b in batches]
        last = r["ratio_rounds"][batches[-1]]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " | " + " | ".join(ratios) +
                     f" | {min(last):.2f}–{max(last):.2f} |")
    (args.output_dir / "onnx.md").write_text("\n".join(lines) + "\n")
    (args.output_dir / "onnx.json").write_text(json.dumps({"machine": machine(), "time": when, "results": results},
                                                          indent=2, default=str) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
