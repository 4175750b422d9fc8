#!/usr/bin/env python3
"""Writes ops/rabbitmq/definitions.json: the nercc topology, a user per service and their permissions.

    python3 ops/rabbitmq/make_definitions.py [--model mnist-mlp ...] [--shards 1] [--coded-queues classic]
                                            [--quorum-group-size N] [--out FILE]

The shipped files: definitions.json (defaults: one node, compose.yaml) and definitions-cluster.json
(`--coded-queues quorum --quorum-group-size 3 --out ops/rabbitmq/definitions-cluster.json`: a
three-node cluster, where every queue the services use must survive a node loss).

The exchanges, queues and bindings mirror Sources/ServingPipeline/ServingTopology.swift exactly
(same names and arguments): the services also declare them at start-up, and RabbitMQ refuses a
redeclaration with different arguments. A Swift test (DefinitionsTests) checks the two agree.

Users (development passwords: set real ones before any deployment, e.g. with
`rabbitmqctl change_password encoder '...'`):
  encoder / worker / decoder / client : least-privilege permissions on the default vhost "/"
  monitor                              : tag `monitoring`, read-only in the management UI
Password hashes use RabbitMQ's rabbit_password_hashing_sha256 (4-byte salt + SHA-256). The salt
is derived from the user name so the file is reproducible.
"""
import argparse
import base64
import hashlib
import json
import pathlib

PREFIX = "nercc"
DELIVERY_LIMIT = 5
VHOST = "/"
# x-quorum-initial-group-size of every quorum queue (the services' --quorum-group-size; None: unset).
GROUP_SIZE = None

USERS = {
    # user: (password, tags, configure, write, read). Declaring a binding needs write on the queue and
    # read on the exchange, and every service declares its own part of the topology, hence each
    # service's families appear in all three.
    # Encoders also declare and read their own hedge queue, nercc.hedge.<encoder id>.
    "encoder": ("encoder-dev-password", [],
                r"^nercc\.(requests|tasks|results|worker-results|hedge|dead)",
                r"^nercc\.(requests|tasks|results|worker-results|hedge|dead)|^amq\.default$",
                r"^nercc\.(requests|tasks|results|worker-results|hedge|dead)"),
    # Workers also declare their own cancellation queue, nercc.cancel.<worker id>, bound to nercc.cancel.
    # They write only to their queues (to bind them), the dead letters and the default exchange (results):
    # not to the exchanges nercc.tasks and nercc.cancel, so a worker cannot publish tasks or cancellations.
    "worker": ("worker-dev-password", [],
               r"^nercc\.(tasks|cancel|dead)",
               r"^nercc\.(tasks|cancel)\.|^nercc\.dead|^amq\.default$",
               r"^nercc\.(tasks|cancel|dead)"),
    "decoder": ("decoder-dev-password", [],
                r"^nercc\.(results|worker-results|predictions|cancel|dead)",
                r"^nercc\.(results|worker-results|predictions|cancel|dead)|^amq\.default$",
                r"^nercc\.(results|worker-results|dead)"),
    "client": ("client-dev-password", [],
               r"^nercc\.reply\.",
               r"^nercc\.requests$|^nercc\.reply\.",
               r"^nercc\.reply\.|^nercc\.predictions$"),
    "monitor": ("monitor-dev-password", ["monitoring"], "", "", ""),
}


def password_hash(user, password):
    salt = hashlib.sha256(("nercc-salt-" + user).encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def quorum(name, extra=None):
    args = {"x-queue-type": "quorum", "x-dead-letter-exchange": f"{PREFIX}.dead", "x-delivery-limit": DELIVERY_LIMIT}
    args.update(extra or {})
    args.update(group_size())
    return {"name": name, "vhost": VHOST, "durable": True, "auto_delete": False, "arguments": args}


def group_size():
    return {} if GROUP_SIZE is None else {"x-quorum-initial-group-size": GROUP_SIZE}


def coded(name, kind, extra=None):
    """A task or worker-result queue: classic (transient messages) or quorum, as --coded-queues says."""
    if kind == "quorum":
        return quorum(name, extra)
    args = {"x-queue-type": "classic", "x-dead-letter-exchange": f"{PREFIX}.dead"}
    args.update(extra or {})
    return {"name": name, "vhost": VHOST, "durable": True, "auto_delete": False, "arguments": args}


def exchange(name, kind, arguments=None):
    return {"name": name, "vhost": VHOST, "type": kind, "durable": True, "auto_delete": False, "internal": False,
            "arguments": arguments or {}}


def binding(source, queue, key):
    return {"source": source, "vhost": VHOST, "destination": queue, "destination_type": "queue",
            "routing_key": key, "arguments": {}}


def definitions(models, shards, coded_queues="classic"):
    exchanges = [
        exchange(f"{PREFIX}.dead", "fanout"),
        exchange(f"{PREFIX}.requests.unrouted", "fanout"),
        exchange(f"{PREFIX}.requests", "direct", {"alternate-exchange": f"{PREFIX}.requests.unrouted"}),
        exchange(f"{PREFIX}.tasks", "direct"),
        exchange(f"{PREFIX}.results", "direct"),
        exchange(f"{PREFIX}.predictions", "topic"),
        exchange(f"{PREFIX}.cancel", "fanout"),
    ]
    queues = [
        {"name": f"{PREFIX}.dead-letter", "vhost": VHOST, "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "quorum", **group_size()}},
        quorum(f"{PREFIX}.requests.unrouted"),
    ]
    bindings = [
        binding(f"{PREFIX}.dead", f"{PREFIX}.dead-letter", ""),
        binding(f"{PREFIX}.requests.unrouted", f"{PREFIX}.requests.unrouted", ""),
    ]
    for shard in range(shards):
        queues.append(quorum(f"{PREFIX}.results.{shard}", {"x-single-active-consumer": True}))
        queues.append(coded(f"{PREFIX}.worker-results.{shard}", coded_queues, {"x-single-active-consumer": True}))
        bindings.append(binding(f"{PREFIX}.results", f"{PREFIX}.results.{shard}", str(shard)))
    for model in models:
        queues.append(quorum(f"{PREFIX}.requests.{model}"))
        queues.append(coded(f"{PREFIX}.tasks.{model}", coded_queues))
        bindings.append(binding(f"{PREFIX}.requests", f"{PREFIX}.requests.{model}", model))
        bindings.append(binding(f"{PREFIX}.tasks", f"{PREFIX}.tasks.{model}", model))
    users = [{"name": u, "password_hash": password_hash(u, p), "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": tags} for u, (p, tags, *_rest) in USERS.items()]
    permissions = [{"user": u, "vhost": VHOST, "configure": c, "write": w, "read": r}
                   for u, (_p, _t, c, w, r) in USERS.items()]
    return {
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "users": users,
        "vhosts": [{"name": VHOST}],
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="served model (repeatable)")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--coded-queues", choices=["classic", "quorum"], default="classic",
                        help="kind of the task and worker-result queues (the services' --coded-queues)")
    parser.add_argument("--quorum-group-size", type=int, default=0,
                        help="replicas of every quorum queue (the services' --quorum-group-size); 0: unset")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("definitions.json")))
    args = parser.parse_args()
    models = args.model or ["mnist-mlp"]
    global GROUP_SIZE
    GROUP_SIZE = args.quorum_group_size or None
    text = json.dumps(definitions(models, args.shards, args.coded_queues), indent=2) + "\n"
    pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
