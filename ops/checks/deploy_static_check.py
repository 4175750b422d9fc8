#!/usr/bin/env python3
"""Static checks of compose.yaml and ops/Dockerfile (no Docker engine is needed or used).

    python3 ops/checks/deploy_static_check.py [--nercc PATH]

Checks that the compose file parses and has the broker (official rabbitmq management image, a
rabbitmq-diagnostics healthcheck, the plugin/config/definitions mounts that exist in the repo) and
the encoder, decoder and scalable worker services built from ops/Dockerfile, depending on a healthy
broker, whose commands are real `nercc` subcommands and whose NERCC_* variables are ones the CLI
reads; that the users in their URLs exist in definitions.json; and that the Dockerfile is a
multi-stage build installing the right Debian packages, copying paths that exist, building the
`nercc` product and using it as the entry point. Prints one line per check and a closing
`deploy checks: N passed, M failed` line; exits 1 when any check fails.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else f" — {detail}"))


def nercc_subcommands(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    section = out.split("SUBCOMMANDS:", 1)[1] if "SUBCOMMANDS:" in out else ""
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nercc", help="the built nercc binary (default: swift build --show-bin-path)/nercc")
    args = parser.parse_args()
    binary = args.nercc or os.environ.get("NERCC_BINARY")
    if binary is None:
        bin_path = subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True)
        binary = str(pathlib.Path(bin_path.stdout.strip()) / "nercc")
    if not pathlib.Path(binary).exists():
        print(f"FAIL the nercc binary {binary} does not exist: build first (swift build)")
        print("deploy checks: 0 passed, 1 failed")
        return 1
    subcommands = nercc_subcommands(binary)
    check("nercc --help lists the service subcommands", {"encoder", "worker", "decoder", "submit"} <= subcommands,
          str(sorted(subcommands)))
    cli_sources = "".join(p.read_text() for p in (ROOT / "Sources" / "NerccCommands").glob("*.swift"))
    cli_env = set(re.findall(r'"(NERCC_[A-Z0-9_]+)"', cli_sources))

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose.get("services", {})
    check("compose.yaml has rabbitmq, encoder, decoder, worker and client services",
          {"rabbitmq", "encoder", "decoder", "worker", "client"} <= set(services), str(sorted(services)))
    broker = services.get("rabbitmq", {})
    check("the broker uses an official rabbitmq 3.x management image",
          re.fullmatch(r"rabbitmq:3(\.\d+)*-management", broker.get("image", "")) is not None, broker.get("image"))
    test = broker.get("healthcheck", {}).get("test", [])
    check("the broker has a rabbitmq-diagnostics healthcheck", "rabbitmq-diagnostics" in " ".join(map(str, test)))
    for volume in broker.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            check(f"broker mount {source} exists", (ROOT / source).exists())
    mounts = " ".join(broker.get("volumes", []))
    for needed in ("enabled_plugins", "definitions.json", ".conf"):
        check(f"the broker mounts {needed}", needed in mounts)

    definitions = json.loads((ROOT / "ops" / "rabbitmq" / "definitions.json").read_text())
    users = {u["name"] for u in definitions["users"]}
    permitted = {p["user"] for p in definitions["permissions"]}
    for name in ("encoder", "decoder", "worker", "client"):
        service = services.get(name, {})
        build = service.get("build", {})
        check(f"{name} builds from ops/Dockerfile with context .",
              isinstance(build, dict) and build.get("dockerfile") == "ops/Dockerfile" and build.get("context") == ".")
        depends = service.get("depends_on", {})
        check(f"{name} waits for a healthy broker",
              isinstance(depends, dict) and depends.get("rabbitmq", {}).get("condition") == "service_healthy")
        command = service.get("command", [])
        check(f"{name} runs a real nercc subcommand", bool(command) and command[0] in subcommands, str(command))
        env = service.get("environment", {})
        unknown = sorted(set(env) - cli_env)
        check(f"{name} sets only NERCC_* variables the CLI reads", not unknown, str(unknown))
        url = env.get("NERCC_AMQP_URL", "")
        user = re.match(r"amqps?://([^:@/]+)", url)
        check(f"{name} connects as a user with permissions in definitions.json",
              user is not None and user.group(1) in users and user.group(1) in permitted, url)
        for key in ("NERCC_MODEL", "NERCC_MODELS"):
            for path in filter(None, str(env.get(key, "")).split(",")):
                local = ROOT / path.replace("/opt/nercc/", "", 1)
                check(f"{name} {key} {path} exists in the image layout", path.startswith("/opt/nercc/") and local.exists())
    worker = services.get("worker", {})
    check("the worker can be scaled (no container_name, no host ports)",
          "container_name" not in worker and "ports" not in worker)

    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    check("the Dockerfile is a multi-stage build", len(stages) >= 2, str(stages))
    parts = re.split(r"^FROM\s", dockerfile, flags=re.M)
    build_stage, final_stage = parts[1], parts[-1]
    check("the build stage installs librabbitmq-dev and libopenblas-dev",
          "librabbitmq-dev" in build_stage and "libopenblas-dev" in build_stage)
    check("the final stage installs the runtime libraries",
          "librabbitmq4" in final_stage and "libopenblas0" in final_stage)
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", dockerfile, re.M):
        check(f"COPY source {source} exists", (ROOT / source).exists())
    check("the Dockerfile builds the nercc product", "--product nercc" in dockerfile)
    check("the entry point is nercc", re.search(r'^ENTRYPOINT \["nercc"\]', dockerfile, re.M) is not None)

    passed = sum(results)
    failed = len(results) - passed
    print(f"deploy checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
