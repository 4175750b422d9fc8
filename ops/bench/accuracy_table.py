#!/usr/bin/env python3
"""Markdown tables of `nercc evaluate` results: calibrated NeRCC against BACC per (N, K, S).

    python3 ops/bench/accuracy_table.py out/evaluate/results.csv [out/evaluate/grid-check.csv]

Prints one row per setting (logit MSE of BACC, calibrated NeRCC, nercc-ag and LCC; the reduction
of NeRCC against BACC; softmax MSE; relative accuracy ± one standard error; label accuracy beside
the uncoded model's) and a closing line with the median, smallest and largest reduction. When the
results hold ParM rows (`parity (k=G)`), a second table compares them with calibrated NeRCC: logit
MSE and relative accuracy over the trials ParM could decode, and how many it could not. With a
grid-check file (`nercc evaluate --grid-check`), a third table gives, per setting, the calibrated
MSE against the best grid point on the evaluation split.
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

        print(f'| {n} | {k} | {s} ({100 * s // n}%) | {bm:.3g} | {cm:.3g} | {float(ag["logit_mse_mean"]):.3g} '
              f'| {float(lcc["logit_mse_mean"]):.3g} | **{reduction:.0f}%** | {float(b["softmax_mse_mean"]):.3g} '
              f'| {float(c["softmax_mse_mean"]):.3g} | {rel(b)} | {rel(c)} | {100 * float(c["label_accuracy_mean"]):.1f} '
              f'| {100 * float(c["uncoded_label_accuracy"]):.1f} |')
    print()
    print(f"median reduction {statistics.median(reductions):.0f}%, smallest {min(reductions):.0f}%, "
          f"largest {max(reductions):.0f}% over {len(reductions)} settings")
    parity = sorted({key[3] for key in by if key[3].startswith("parity")})
    if parity:
        parity_table(by, settings, parity)


def parity_table(by, settings, labels):
    print()
    header = "| N | K | S | NeRCC logit MSE | NeRCC rel. acc. % |"
    rule = "|---|---|---|---|---|"
    for label in labels:
        header += f" {label}: logit MSE | rel. acc. % | undecodable |"
        rule += "---|---|---|"
    print(header)
    print(rule)
    for n, k, s in settings:
        c = by[(n, k, s, "nercc (calibrated)")]
        row = f'| {n} | {k} | {s} ({100 * s // n}%) | {float(c["logit_mse_mean"]):.3g} | {rel(c)} |'
        for label in labels:
            r = by.get((n, k, s, label))
            if r is None:
                row += " – | – | – |"
                continue
            trials, undecodable = int(r["trials"]), int(r["undecodable"])
            if undecodable == trials:
                row += f" – | – | {undecodable}/{trials} |"
            else:
                row += f' {float(r["logit_mse_mean"]):.3g} | {rel(r, trials - undecodable)} | {undecodable}/{trials} |'
        print(row)


def rel(r, count=None):
    count = count if count is not None else int(r["trials"])
    return (f'{100 * float(r["relative_accuracy_mean"]):.1f} ± '
            f'{100 * float(r["relative_accuracy_std"]) / max(count, 1) ** 0.5:.1f}')


def grid_table(path):
    rows = list(csv.DictReader(open(path)))
    print()
    print("| model | N | K | S | calibrated λ_enc, λ_dec | calibrated logit MSE | best grid λ_enc, λ_dec "
          "| best grid logit MSE | excess |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f'| {r["model"]} | {r["N"]} | {r["K"]} | {r["S"]} '
              f'| {float(r["calibrated_lambda_enc"]):.2g}, {float(r["calibrated_lambda_dec"]):.2g} '
              f'| {float(r["calibrated_logit_mse"]):.4g} '
              f'| {float(r["best_lambda_enc"]):.2g}, {float(r["best_lambda_dec"]):.2g} '
              f'| {float(r["best_logit_mse"]):.4g} | {100 * float(r["excess"]):.1f}% |')
    excess = [float(r["excess"]) for r in rows]
    within = sum(e <= 0.05 for e in excess)
    print()
    print(f"within 5% of the grid's best in {within} of {len(rows)} settings; largest excess "
          f"{100 * max(excess):.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])
    if len(sys.argv) > 2:
        grid_table(sys.argv[2])
