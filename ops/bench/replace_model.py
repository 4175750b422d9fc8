#!/usr/bin/env python3
"""Replaces the points of some straggler models in a `nercc bench serve` run by those of another run
of the same schemes at the same offered rates, for a model whose measurement was disturbed:

    python3 ops/bench/replace_model.py BASE_JSON RERUN_JSON OUT_JSON
    nercc bench serve --from-json OUT_JSON --output-dir DIR     # redraws tables and plots

Every straggler model of RERUN_JSON replaces that model's points in BASE_JSON (the others stay), and
the command recorded becomes both commands, so the result says where each part came from. The
script refuses runs whose schemes or open-loop rates differ.
"""
import json
import sys


def rates(points, model):
    return sorted({(p["label"], round(p["offeredRequestsPerSecond"])) for p in points
                   if p["straggler"] == model and p["mode"] == "open"})


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    base = json.load(open(sys.argv[1]))
    rerun = json.load(open(sys.argv[2]))
    models = list(dict.fromkeys(p["straggler"] for p in rerun["points"]))
    for model in models:
        if model not in {p["straggler"] for p in base["points"]}:
            sys.exit(f"the base run has no straggler model '{model}'")
        if rates(base["points"], model) != rates(rerun["points"], model):
            sys.exit(f"straggler model '{model}': the runs differ in schemes or offered rates")
    base["points"] = [p for p in base["points"] if p["straggler"] not in models] + rerun["points"]
    order = list(dict.fromkeys(p["straggler"] for p in json.load(open(sys.argv[1]))["points"]))
    base["points"].sort(key=lambda p: order.index(p["straggler"]))
    base["command"] = f"{base['command']} ; straggler model(s) {', '.join(models)} from: {rerun['command']}"
    base["machine"] = f"{base['machine']} ; rerun {rerun['machine']}"
    json.dump(base, open(sys.argv[3], "w"), indent=1)
    print(f"wrote {sys.argv[3]}: {', '.join(models)} replaced ({len(rerun['points'])} points)")


if __name__ == "__main__":
    main()
