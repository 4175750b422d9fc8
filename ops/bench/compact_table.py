#!/usr/bin/env python3
"""Compact tables of a `nercc bench serve` run for docs/benchmarks.md: for each straggler model, one
row per scheme and one column per offered load, each cell p50 / p99 / p99.9 in ms; then the
saturated throughputs.

    python3 ops/bench/compact_table.py docs/bench/serve-3x/serve.json
"""
import json
import sys


def main():
    points = json.load(open(sys.argv[1]))["points"]
    stragglers = list(dict.fromkeys(p["straggler"] for p in points))
    labels = list(dict.fromkeys(p["label"] for p in points))
    for s in stragglers:
        opened = [p for p in points if p["straggler"] == s and p["mode"] == "open"]
        rates = sorted({round(p["offeredRequestsPerSecond"]) for p in opened})
        print(f"**Stragglers: {s}** — p50 / p99 / p99.9 ms at each offered load (requests/s)\n")
        print("| scheme | " + " | ".join(f"{r}/s" for r in rates) + " |")
        print("|---|" + "---|" * len(rates))
        for label in labels:
            cells = []
            for r in rates:
                p = next((p for p in opened if p["label"] == label and round(p["offeredRequestsPerSecond"]) == r), None)
                if p is None:
                    cells.append("—")
                    continue
                l = p["latency"]
                extra = []
                if p["timeouts"]:
                    extra.append(f'{p["timeouts"]} timeouts')
                if p["missing"]:
                    extra.append(f'{p["missing"]} missing')
                if p["achievedRequestsPerSecond"] < 0.95 * p["offeredRequestsPerSecond"]:
                    extra.append(f'only {p["achievedRequestsPerSecond"]:.0f}/s')
                cell = f'{l["p50"]:.1f} / {l["p99"]:.1f} / {l["p999"]:.1f}'
                cells.append(cell + (f' ({", ".join(extra)})' if extra else ""))
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()
    print("**Saturated throughput** (closed loop, 128 requests in flight), requests/s\n")
    print("| scheme | " + " | ".join(stragglers) + " |")
    print("|---|" + "---|" * len(stragglers))
    for label in labels:
        cells = []
        for s in stragglers:
            p = next((p for p in points if p["label"] == label and p["straggler"] == s and p["mode"] == "closed"), None)
            cells.append(f'{p["achievedRequestsPerSecond"]:.0f}' if p else "—")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
