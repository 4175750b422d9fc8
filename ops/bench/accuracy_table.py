#!/usr/bin/env python3
"""Markdown table of `nercc evaluate` results: calibrated NeRCC against BACC per (N, K, S).

    python3 ops/bench/accuracy_table.py out/evaluate/results.csv

Prints one row per setting (logit MSE of BACC, calibrated NeRCC, nercc-ag and LCC; the reduction
of NeRCC against BACC; softmax MSE; relative accuracy ± one standard error; label accuracy beside
the uncoded model's) and a closing line with the median, smallest and largest reduction.
"""
import csv
import statistics
import sys


def main(path):
    rows = list(csv.DictReader(open(path)))
    by = {(int(r["N"]), int(r["K"]), int(r["S"]), r["scheme"]): r for r in rows}
    settings = sorted({key[:3] for key in by})
    print("| N | K | S | BACC logit MSE | NeRCC (calibrated) logit MSE | nercc-ag | LCC | MSE reduction vs BACC "
          "| BACC softmax MSE | NeRCC softmax MSE | BACC rel. acc. % | NeRCC rel. acc. % | NeRCC label acc. % "
          "| uncoded acc. % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    reductions = []
    for n, k, s in settings:
        b, c = by[(n, k, s, "bacc")], by[(n, k, s, "nercc (calibrated)")]
        ag, lcc = by[(n, k, s, "nercc-ag")], by[(n, k, s, "lcc")]
        trials = int(c["trials"])
        bm, cm = float(b["logit_mse_mean"]), float(c["logit_mse_mean"])
        reduction = 100 * (1 - cm / bm)
        reductions.append(reduction)

        def rel(r):
            return f'{100 * float(r["relative_accuracy_mean"]):.1f} ± {100 * float(r["relative_accuracy_std"]) / trials ** 0.5:.1f}'

        print(f'| {n} | {k} | {s} ({100 * s // n}%) | {bm:.3g} | {cm:.3g} | {float(ag["logit_mse_mean"]):.3g} '
              f'| {float(lcc["logit_mse_mean"]):.3g} | **{reduction:.0f}%** | {float(b["softmax_mse_mean"]):.3g} '
              f'| {float(c["softmax_mse_mean"]):.3g} | {rel(b)} | {rel(c)} | {100 * float(c["label_accuracy_mean"]):.1f} '
              f'| {100 * float(c["uncoded_label_accuracy"]):.1f} |')
    print()
    print(f"median reduction {statistics.median(reductions):.0f}%, smallest {min(reductions):.0f}%, "
          f"largest {max(reductions):.0f}% over {len(reductions)} settings")


if __name__ == "__main__":
    main(sys.argv[1])
