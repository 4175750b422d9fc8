#!/usr/bin/env python3
"""Markdown tables of `nercc evaluate --adversaries` results (robustness.csv) for docs/robustness.md.

    python3 ops/bench/robustness_table.py headline CSV...      # (40, 10), S = 0: every model, every A
    python3 ops/bench/robustness_table.py model CSV            # one model: every (N, K), S, attack
    python3 ops/bench/robustness_table.py refused CSV...       # where a decoder's bound does not hold

Cells are relative accuracy in percent; for decoders that exclude workers, detection precision and
recall follow as "P/R". Metrics are over the trials a decoder accepted.
"""

import csv
import sys
from collections import defaultdict

DECODERS = [
    ("bacc", "bacc"),
    ("bacc + ApproxIFER locator", "bacc + locator"),
    ("nercc", "nercc"),
    ("nercc + spline check", "nercc + spline check"),
    ("nercc + ApproxIFER locator", "nercc + locator"),
    ("nercc + median of 2A+1", "nercc + median"),
]


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def pct(value):
    return f"{100 * float(value):.1f}" if value not in ("", "nan") else "–"


def cell(row, detail=True):
    if row is None:
        return ""
    if int(row["refused"]) == int(row["trials"]):
        return "refused"
    text = pct(row["relative_accuracy_mean"])
    if detail and row["precision"] != "" and int(row["A"]) > 0:
        text += f" ({pct(row['precision'])}/{pct(row['recall'])})"
    return text


def index(rows):
    table = {}
    for r in rows:
        table[(r["model"], r["N"], r["K"], r["S"], r["A"], r["attack"], r["scheme"])] = r
    return table


def headline(rows):
    table = index(rows)
    models = sorted({r["model"] for r in rows})
    print("| model | attack | A | " + " | ".join(label for _, label in DECODERS) + " |")
    print("|---|---|---|" + "---|" * len(DECODERS))
    for model in models:
        for attack in sorted({r["attack"] for r in rows}):
            for a in sorted({int(r["A"]) for r in rows if r["model"] == model and r["N"] == "40"}):
                if a > 3:
                    continue
                cells = [cell(table.get((model, "40", "10", "0", str(a), attack, d))) for d, _ in DECODERS]
                print(f"| {model} | {attack} | {a} | " + " | ".join(cells) + " |")


def per_model(rows):
    table = index(rows)
    model = rows[0]["model"]
    settings = sorted({(int(r["N"]), int(r["K"])) for r in rows})
    for n, k in settings:
        for attack in sorted({r["attack"] for r in rows}):
            print(f"\n**N = {n}, K = {k}, {attack}** (relative accuracy %, spline check and locators: precision/recall %)\n")
            print("| S | A | " + " | ".join(label for _, label in DECODERS) + " |")
            print("|---|---|" + "---|" * len(DECODERS))
            keys = sorted({(int(r["S"]), int(r["A"])) for r in rows if r["N"] == str(n) and r["attack"] == attack})
            for s, a in keys:
                cells = [cell(table.get((model, str(n), str(k), str(s), str(a), attack, d))) for d, _ in DECODERS]
                print(f"| {s} | {a} | " + " | ".join(cells) + " |")


def refused(rows):
    seen = defaultdict(set)
    for r in rows:
        if int(r["refused"]) > 0:
            seen[(r["scheme"], r["N"], r["K"], r["S"])].add(int(r["A"]))
    print("| decoder | N | K | S | A refused |")
    print("|---|---|---|---|---|")
    for (scheme, n, k, s), counts in sorted(seen.items(), key=lambda x: (x[0][0], int(x[0][1]), int(x[0][3]))):
        print(f"| {scheme} | {n} | {k} | {s} | {', '.join(str(a) for a in sorted(counts))} |")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("headline", "model", "refused"):
        sys.exit(__doc__)
    rows = load(sys.argv[2:])
    {"headline": headline, "model": per_model, "refused": refused}[sys.argv[1]](rows)


if __name__ == "__main__":
    main()
