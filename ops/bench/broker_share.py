#!/usr/bin/env python3
"""Reads a scheme's saturated throughput as a share of what the broker allows for its mix of messages.

    python3 ops/bench/broker_share.py SERVE_JSON BROKER_MD

SERVE_JSON is the serve.json of `nercc bench serve`, BROKER_MD the table `nercc bench broker --output`
wrote on the same machine. For every closed-loop (saturation) point the script counts the messages the
broker carried per answered query, by kind, from the services' counters — requests (1), manifests
(batches encoded), tasks (tasks published), results (tasks computed), predictions (two publishes per
request: the output exchange and reply_to, of which only the second is delivered), cancellation
notices (deliveries to workers) — and divides by the rate `bench broker` measured for that kind alone:
the broker's time per query is sum(m_i / r_i), so it allows 1 / sum(m_i / r_i) queries per second.
"""
import json
import sys


def broker_rates(path):
    """Messages/s by (kind, queue) from the Markdown table of `nercc bench broker`."""
    rates = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[4].replace(".", "").isdigit():
            continue
        kind = cells[0].split(" ")[0]
        rates[(kind, cells[2].split(",")[0])] = float(cells[4])
    return rates


def main():
    serve = json.load(open(sys.argv[1]))
    rates = broker_rates(sys.argv[2])
    print("| stragglers | scheme | achieved queries/s | broker messages per query | broker allows queries/s | share |")
    print("|---|---|---|---|---|---|")
    for p in serve["points"]:
        if p["mode"] != "closed" or not p["achievedQueriesPerSecond"]:
            continue
        c = p["counters"]
        queries = c.get("nercc_encoder_queries_encoded_total", 0)
        if not queries:
            continue
        coded = "classic"  # the task and result queues of the run (quorum runs: pass their own table)
        mix = {
            ("request", "quorum"): 1.0,
            ("manifest", "quorum"): c.get("nercc_encoder_batches_encoded_total", 0) / queries,
            ("task", coded): c.get("nercc_encoder_tasks_published_total", 0) / queries,
            ("result", coded): c.get("nercc_worker_tasks_computed_total", 0) / queries,
            ("prediction", "classic"): 2.0,
            ("result", "classic-notice"): c.get("nercc_worker_cancellations_received_total", 0) / queries,
        }
        seconds = 0.0
        for (kind, queue), m in mix.items():
            rate = rates.get((kind, queue.replace("-notice", ""))) or rates.get((kind, "quorum"))
            seconds += m / rate
        allowed = 1 / seconds
        messages = sum(mix.values())
        print(f'| {p["straggler"]} | {p["label"]} | {p["achievedQueriesPerSecond"]:.0f} | {messages:.1f} | '
              f'{allowed:.0f} | {p["achievedQueriesPerSecond"] / allowed:.0%} |')


if __name__ == "__main__":
    main()
