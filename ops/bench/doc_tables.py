#!/usr/bin/env python3
"""Tables of docs/benchmarks.md that `compact_table.py` does not print, from `nercc bench serve` runs:

    python3 ops/bench/doc_tables.py stages docs/bench/serve-3x/serve.json [loads]   # stage breakdown
    python3 ops/bench/doc_tables.py effects docs/bench/effects                      # one row per variant
    python3 ops/bench/doc_tables.py points docs/bench/serve-3x/serve.json           # every point, one line
    python3 ops/bench/doc_tables.py stalls <output-dir>/requests [ms]             # request-queue stalls

`stages` prints p50 / p99 ms of each stage for the lowest `loads` (default 2) offered loads, without
stragglers and with the first straggler model that has delays; `effects` reads
`<dir>/<variant>/serve.json` for every variant of ops/bench/effects.sh; `stalls` reads the per-request
logs of `nercc bench serve --request-log` and, for each point, finds the **stalls**: runs of requests
that waited more than `ms` (default 20) in the request queue (published to received by an encoder),
runs closer than 100 ms merged, and says how many of the point's slowest 1% fell in one.
"""
import csv
import glob
import json
import os
import sys

VARIANTS = [
    ("all-on", "everything on (the defaults)"),
    ("whole-partial-batches", "partial batches sent whole (`--no-split-partial-batches`)"),
    ("padded-batches", "partial batches padded to K (`--partial-batches pad`)"),
    ("no-cancellation", "no cancellation notices"),
    ("one-task-at-a-time", "one task at a time (worker `--prefetch 1 --max-batch 1`)"),
    ("quorum-coded-queues", "tasks and results on quorum queues, persistent (`--coded-queues quorum`)"),
    ("no-manifest-copies", "no manifest copies on tasks (`--no-manifest-in-tasks`)"),
    ("no-rows", "no rows: every batch alone (`--max-rows 1`)"),
    ("no-early-decode", "no straggler wait (decoder `--no-early-decode`)"),
]


def opened(points):
    return [p for p in points if p["mode"] == "open"]


def per_query(p, counter):
    c = p["counters"]
    queries = c.get("nercc_encoder_queries_encoded_total") or 1
    return c.get(counter, 0) / queries


def computed_per_query(p):
    """Coded queries the workers ran per query (tasks computed, before rows were counted)."""
    c = p["counters"]
    key = "nercc_worker_coded_queries_computed_total"
    return per_query(p, key if key in c else "nercc_worker_tasks_computed_total")


def mean_batch(p):
    sizes = p["batchSizes"]
    total = sum(sizes.values())
    return sum(int(k) * v for k, v in sizes.items()) / max(total, 1)


def stages(path, loads=2):
    points = opened(json.load(open(path))["points"])
    models = list(dict.fromkeys(p["straggler"] for p in points))
    models = [m for m in models if m == "none"][:1] + [m for m in models if m != "none"][:1]
    names = None
    rows = []
    for model in models:
        chosen = [p for p in points if p["straggler"] == model]
        rates = sorted({round(p["offeredRequestsPerSecond"]) for p in chosen})[:loads]
        for label in dict.fromkeys(p["label"] for p in chosen):
            for rate in rates:
                p = next(p for p in chosen if p["label"] == label and round(p["offeredRequestsPerSecond"]) == rate)
                names = names or sorted(p["stages"], key=lambda k: int(k.split()[0]))
                cells = [
                    f'{p["stages"][n]["p50"]:.1f} / {p["stages"][n]["p99"]:.1f}' if n in p["stages"] else "—"
                    for n in names
                ]
                rows.append(f"| {model} | {label} | {rate}/s | " + " | ".join(cells) + f' | {p["latency"]["p50"]:.1f} |')
    print("| stragglers | scheme | load | " + " | ".join(n.split(" ", 1)[1] for n in names) + " | end to end |")
    print("|---|---|---|" + "---|" * (len(names) + 1))
    print("\n".join(rows))


def effects(directory):
    print("| variant | stragglers | load | `nercc` p50 / p99 ms | `uncoded` p50 / p99 ms | p50 ratio | mean batch | task messages / coded queries computed per query |")
    print("|---|---|---|---|---|---|---|---|")
    for name, title in VARIANTS:
        path = os.path.join(directory, name, "serve.json")
        if not os.path.exists(path):
            continue
        points = opened(json.load(open(path))["points"])
        first = True
        for model in dict.fromkeys(p["straggler"] for p in points):
            for rate in sorted({round(p["offeredRequestsPerSecond"]) for p in points if p["straggler"] == model}):
                at = [p for p in points if p["straggler"] == model and round(p["offeredRequestsPerSecond"]) == rate]
                n = next(p for p in at if p["scheme"] == "nercc")
                u = next(p for p in at if p["scheme"] == "uncoded")
                short = f' (only {n["achievedRequestsPerSecond"]:.0f}/s)' if n["achievedRequestsPerSecond"] < 0.95 * rate else ""
                print(
                    f'| {title if first else ""} | {model} | {rate}/s | {n["latency"]["p50"]:.1f} / {n["latency"]["p99"]:.1f}{short} '
                    f'| {u["latency"]["p50"]:.1f} / {u["latency"]["p99"]:.1f} | {n["latency"]["p50"] / u["latency"]["p50"]:.2f} '
                    f'| {mean_batch(n):.2f} | {per_query(n, "nercc_encoder_tasks_published_total"):.2f} / '
                    f'{computed_per_query(n):.2f} |'
                )
                first = False


def every_point(path):
    points = json.load(open(path))["points"]
    for p in points:
        if p["mode"] == "closed":
            print(f'saturated {p["straggler"]:22} {p["label"]:18} {p["achievedRequestsPerSecond"]:.0f}/s')
    for p in opened(points):
        l = p["latency"]
        print(
            f'{p["straggler"]:22} {p["label"]:18} {p["offeredRequestsPerSecond"]:5.0f}/s p50 {l["p50"]:7.1f} '
            f'p99 {l["p99"]:7.1f} p99.9 {l["p999"]:7.1f} acc {100 * (p["accuracy"] or 0):.1f}% '
            f'k {mean_batch(p):.2f} computed/q {computed_per_query(p):.2f} '
            f'timeouts {p["timeouts"]}'
        )


def stalls(directory, threshold_ms=20.0):
    paths = sorted(glob.glob(os.path.join(directory, "*.csv")))
    if not paths:
        sys.exit(f"no request logs (*.csv) in '{directory}': run nercc bench serve with --request-log")
    print("| point | requests | p99 ms | stalls | longest request-queue wait ms | slowest 1% in a stall |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        rows = [r for r in csv.DictReader(open(path)) if r["status"] == "ok" and r["received_us"]]
        if not rows:
            continue
        due = [int(r["due_us"]) for r in rows]
        latency = [float(r["latency_ms"]) for r in rows]
        waits = [(int(r["received_us"]) - int(r["published_us"])) / 1000 for r in rows]
        ordered = sorted(latency)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        episodes = []  # [first due, last due, longest wait]
        for d, w in sorted(zip(due, waits)):
            if w <= threshold_ms:
                continue
            if episodes and d - episodes[-1][1] <= 100_000:
                episodes[-1][1] = d
                episodes[-1][2] = max(episodes[-1][2], w)
            else:
                episodes.append([d, d, w])
        slowest = [d for d, l in zip(due, latency) if l >= p99]
        inside = sum(1 for d in slowest if any(a - 100_000 <= d <= b + 100_000 for a, b, _ in episodes))
        name = os.path.basename(path)[: -len(".csv")]
        longest = max((e[2] for e in episodes), default=0.0)
        print(f"| {name} | {len(rows)} | {p99:.1f} | {len(episodes)} | {longest:.1f} | {inside} of {len(slowest)} |")


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "stages":
        stages(path, int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    elif kind == "effects":
        effects(path)
    elif kind == "points":
        every_point(path)
    elif kind == "stalls":
        stalls(path, float(sys.argv[3]) if len(sys.argv) > 3 else 20.0)
    else:
        sys.exit(f"unknown table '{kind}': stages, effects, points or stalls")
