#!/usr/bin/env python3
"""Static checks of compose.yaml and ops/Dockerfile. No Docker engine is needed, and nothing is run
except `nercc --help`.

    python3 ops/checks/check_deploy.py [--nercc PATH] [--root DIR]

--nercc   the built nercc binary; default $NERCC_BINARY, else `swift build --show-bin-path`/nercc.
          Its --help gives the real subcommands. If it is missing, the check fails and says to build.
--root    the repository (default: the one holding this script).

compose.yaml
  * parses; has the services rabbitmq, encoder, decoder, worker, and client under a profile;
  * rabbitmq: an official `rabbitmq:3.x-management` image; a healthcheck running rabbitmq-diagnostics;
    bind mounts of enabled_plugins, a .conf and definitions.json that exist in the repository, at the
    places the image reads them, with load_definitions pointing at the mounted definitions; the
    plugins include rabbitmq_management and rabbitmq_prometheus;
  * encoder, decoder, worker, client: built from ops/Dockerfile with context `.`; wait for a healthy
    broker; the command's first word is a real `nercc` subcommand (from `nercc --help`); every NERCC_*
    variable they set is read by the CLI (any "NERCC_..." string in Sources/NerccCommands/*.swift)
    and by that very subcommand; NERCC_AMQP_URL names a user of ops/rabbitmq/definitions.json with
    the URL's password, on a vhost it has permissions for, and those permissions cover every
    declaration, publish and consume the service makes (RabbitMQ's access-control rules);
  * the model, profile and data files the services reference exist in the repository under the
    Dockerfile's copy layout (/opt/nercc/models -> models/, /opt/nercc/data -> data/), and the
    client's and the worker's models are served by the encoder;
  * the services agree on topology prefix, shards and delivery limit, and the definitions' queues
    carry the same x-delivery-limit (otherwise declarations fail with PRECONDITION_FAILED);
  * the worker can be scaled: no container_name, no fixed host ports.

ops/Dockerfile
  * multi-stage; the build stage installs librabbitmq-dev and libopenblas-dev, copies what SwiftPM
    needs (Package.swift, Sources, and Tests since the manifest declares test targets) and builds the
    `nercc` product; the final stage uses the same Swift version's runtime, installs the Debian
    packages of every non-Swift library the binary links (readelf -d), copies the binary onto PATH,
    copies models/ and data/ to /opt/nercc; every COPY/ADD source exists; ENTRYPOINT is nercc in
    exec form (so SIGTERM reaches nercc and it drains).

Prints one line per check and a closing `deploy checks: N passed, M failed`; exits 1 if any failed.
"""
import argparse
import fnmatch
import base64
import glob
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse

try:
    import yaml
except ImportError:  # pragma: no cover - reported as a failed check
    yaml = None

APP_SERVICES = ("encoder", "decoder", "worker", "client")
SERVICE_SUBCOMMAND = {"encoder": "encoder", "decoder": "decoder", "worker": "worker", "client": "submit"}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok

    def close(self):
        print(f"deploy checks: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


# ----------------------------------------------------------------------------- the CLI


def find_binary(root, explicit):
    if explicit:
        return pathlib.Path(explicit)
    if os.environ.get("NERCC_BINARY"):
        return pathlib.Path(os.environ["NERCC_BINARY"])
    if shutil.which("swift") is None:
        return None
    out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=root, capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return pathlib.Path(out.stdout.strip()) / "nercc"


def subcommands_of(binary):
    """The subcommand names listed by `nercc --help` (two-space indented names under SUBCOMMANDS)."""
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    if "SUBCOMMANDS:" not in text:
        return set()
    names = set()
    for line in text.split("SUBCOMMANDS:", 1)[1].splitlines():
        m = re.match(r"^  ([a-z][a-z0-9-]*)(\s|$)", line)
        if m:
            names.add(m.group(1))
    return names


TOP_LEVEL = re.compile(
    r"^(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|final|package)\s+)*"
    r"(struct|enum|class|actor|extension|func|let|var|protocol)\s+(\w+)",
    re.M,
)
ENV_NAME = re.compile(r'"(NERCC_[A-Z0-9_]+)"')


def cli_environment(sources):
    """All NERCC_* names the CLI reads, and per subcommand name the ones that subcommand reads
    (its own type plus its @OptionGroup types)."""
    blocks = {}
    every = set()
    for path in sorted(sources.glob("*.swift")):
        text = path.read_text()
        every |= set(ENV_NAME.findall(text))
        starts = [(m.start(), m.group(1), m.group(2)) for m in TOP_LEVEL.finditer(text)]
        for i, (pos, kind, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            if kind in ("struct", "enum", "class", "actor"):
                blocks[name] = text[pos:end]
    per_command = {}
    for name, body in blocks.items():
        command = re.search(r'commandName:\s*"([\w-]+)"', body)
        if not command:
            continue
        names = set(ENV_NAME.findall(body))
        for group in re.findall(r"@OptionGroup\s+var\s+\w+\s*:\s*(\w+)", body):
            names |= set(ENV_NAME.findall(blocks.get(group, "")))
        per_command[command.group(1)] = names
    return every, per_command, blocks


def swift_default(blocks, type_name, variable):
    """The string default of `var <variable>: String = "..."` in a type, if any."""
    m = re.search(rf'var\s+{variable}\s*:\s*String\s*=\s*"([^"]*)"', blocks.get(type_name, ""))
    return m.group(1) if m else None


def env_default(sources, name):
    """The literal default in Environment.int("NAME", 5) / Environment.string("NAME", "x")."""
    for path in sorted(sources.glob("*.swift")):
        m = re.search(rf'Environment\.\w+\("{name}",\s*("?)([^")]*)\1\)', path.read_text())
        if m:
            return m.group(2)
    return None


# ----------------------------------------------------------------------------- compose helpers


def as_list(command):
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def environment_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value if "=" in str(item) else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def bind_mounts(service):
    mounts = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) < 2:
                continue
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            kind, source, target = v.get("type"), v.get("source"), v.get("target")
        mounts.append((kind, source, target))
    return mounts


def read_conf(path):
    settings = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


# ----------------------------------------------------------------------------- Dockerfile helpers


def dockerfile_stages(text):
    """[{image, alias, instructions: [(INSTR, args)]}] with continuation lines joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    stages = []
    for line in lines:
        parts = line.strip().split(None, 1)
        instr, args = parts[0].upper(), (parts[1] if len(parts) > 1 else "")
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": words[0] if words else "", "alias": alias, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((instr, args))
    return stages


def copy_parts(args):
    """(flags, sources, destination) of a COPY/ADD."""
    args = args.strip()
    flags = {}
    while args.startswith("--"):
        word, _, args = args.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        args = args.strip()
    if args.startswith("["):
        items = json.loads(args)
    else:
        items = shlex.split(args)
    return flags, items[:-1], (items[-1] if items else "")


def apt_packages(stage):
    packages = set()
    for instr, args in stage["instructions"]:
        if instr != "RUN":
            continue
        for segment in re.split(r"&&|;|\|\|", args):
            words = segment.split()
            if "apt-get" in words and "install" in words:
                packages |= {w for w in words[words.index("install") + 1 :] if not w.startswith("-")}
    return packages


def image_layout(stage):
    """Destination -> repository path of the final stage's COPYs from the build context."""
    layout = {}
    for instr, args in stage["instructions"]:
        if instr in ("COPY", "ADD"):
            flags, sources, dest = copy_parts(args)
            if "from" not in flags and len(sources) == 1:
                layout[dest.rstrip("/")] = sources[0].rstrip("/")
    return layout


def workdir_of(stage):
    workdir = "/"
    for instr, args in stage["instructions"]:
        if instr == "WORKDIR":
            workdir = args.strip() if args.strip().startswith("/") else os.path.join(workdir, args.strip())
    return workdir


def to_repo(path, layout, workdir, root):
    """The repository file an image path comes from, or None when no COPY puts it there."""
    absolute = path if path.startswith("/") else os.path.normpath(os.path.join(workdir, path))
    for dest in sorted(layout, key=len, reverse=True):
        if absolute == dest or absolute.startswith(dest + "/"):
            return root / (layout[dest] + absolute[len(dest) :])
    return None


# ----------------------------------------------------------------------------- broker permissions


def password_matches(user, password):
    """rabbit_password_hashing_sha256: base64(salt4 + sha256(salt4 + password))."""
    if user.get("hashing_algorithm", "rabbit_password_hashing_sha256") != "rabbit_password_hashing_sha256":
        return None
    try:
        raw = base64.b64decode(user["password_hash"])
    except (KeyError, ValueError):
        return False
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def permitted(pattern, name):
    """RabbitMQ matches permission regexes unanchored (re:run); an empty pattern allows nothing."""
    if not pattern:
        return False
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def operations(role, prefix, models, shards, shard=0, delivery_limit=5):
    """(permission, resource) pairs the role needs, per RabbitMQ's access-control table:
    exchange.declare: configure X (+ with an alternate exchange: write AE, read X);
    queue.declare: configure Q (+ with a dead-letter exchange: write DLX, read Q);
    queue.bind: write Q, read X; basic.publish: write X (the default exchange is amq.default);
    basic.consume: read Q."""
    p = prefix
    needs = set()

    def exchange(name, ae=None):
        needs.add(("configure", name))
        if ae:
            needs.update({("write", ae), ("read", name)})

    def queue(name, dlx=None):
        needs.add(("configure", name))
        if dlx:
            needs.update({("write", dlx), ("read", name)})

    def bind(q, x):
        needs.update({("write", q), ("read", x)})

    dead = f"{p}.dead"
    if role in ("encoder", "worker", "decoder"):
        exchange(dead)
        queue(f"{p}.dead-letter")
        bind(f"{p}.dead-letter", dead)
        needs.update({("write", dead), ("write", "amq.default")})
    if role in ("encoder", "decoder"):
        exchange(f"{p}.results")
        for s in range(shards):
            queue(f"{p}.results.{s}", dead)
            bind(f"{p}.results.{s}", f"{p}.results")
    if role in ("encoder", "worker"):
        exchange(f"{p}.tasks")
        for m in models:
            queue(f"{p}.tasks.{m}", dead)
            bind(f"{p}.tasks.{m}", f"{p}.tasks")
    if role == "encoder":
        exchange(f"{p}.requests.unrouted")
        exchange(f"{p}.requests", ae=f"{p}.requests.unrouted")
        queue(f"{p}.requests.unrouted", dead)
        bind(f"{p}.requests.unrouted", f"{p}.requests.unrouted")
        needs.update({("read", f"{p}.requests.unrouted"), ("write", f"{p}.results"), ("write", f"{p}.tasks")})
        for m in models:
            queue(f"{p}.requests.{m}", dead)
            bind(f"{p}.requests.{m}", f"{p}.requests")
            needs.add(("read", f"{p}.requests.{m}"))
    if role == "worker":
        needs.update({("read", f"{p}.tasks.{m}") for m in models})
        # Its own cancellation queue, <prefix>.cancel.<worker id>, bound to the cancellation exchange.
        exchange(f"{p}.cancel")
        queue(f"{p}.cancel.worker-1")
        bind(f"{p}.cancel.worker-1", f"{p}.cancel")
        needs.add(("read", f"{p}.cancel.worker-1"))
    if role == "decoder":
        exchange(f"{p}.predictions")
        needs.update({("write", f"{p}.predictions"), ("read", f"{p}.results.{shard}")})
    if role == "client":
        reply = f"{p}.reply.0123abcd"  # nercc submit's private reply queue, <prefix>.reply.<uuid>
        queue(reply)
        needs.update({("read", reply), ("write", f"{p}.requests")})
    return needs


def forbidden(role, prefix):
    """(permission, resource) pairs a role must NOT have: a worker answers through the default
    exchange only, so it may not publish tasks (to other workers), cancellation notices (which make
    workers skip tasks), manifests or abandonments (the results exchange), predictions, or requests."""
    p = prefix
    if role == "worker":
        return {("write", f"{p}.{x}") for x in ("tasks", "cancel", "results", "predictions", "requests")}
    return set()


# ----------------------------------------------------------------------------- main


def dockerignore_patterns(root):
    """The patterns of .dockerignore, in order (comments and blank lines dropped)."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(root, relative):
    """Whether Docker leaves `relative` (or its top-level folder) out of the build context: the
    last matching .dockerignore pattern decides, and `!pattern` re-includes."""
    relative = relative.strip("/").removeprefix("./")
    excluded = False
    for pattern in dockerignore_patterns(root):
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            excluded = not negate
    return excluded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nercc", help="the built nercc binary")
    parser.add_argument("--root", help="the repository (default: the one holding this script)")
    args = parser.parse_args()
    root = pathlib.Path(args.root).resolve() if args.root else pathlib.Path(__file__).resolve().parents[2]
    report = Report()
    check = report.check

    # --- the CLI ---------------------------------------------------------------------------
    binary = find_binary(root, args.nercc)
    if binary is None or not binary.is_file() or not os.access(binary, os.X_OK):
        where = f"{binary} is missing" if binary else "cannot locate it (`swift build --show-bin-path` failed)"
        check("the nercc binary exists", False, f"{where}: build first (swift build --product nercc) or pass --nercc")
        return report.close()
    subcommands = subcommands_of(binary)
    check(
        f"nercc --help lists the service subcommands ({binary})",
        {"encoder", "worker", "decoder", "submit"} <= subcommands,
        f"found {sorted(subcommands)}",
    )
    sources = root / "Sources" / "NerccCommands"
    cli_env, command_env, blocks = cli_environment(sources)
    check("the CLI's NERCC_* variables are found in Sources/NerccCommands", len(cli_env) > 0 and bool(command_env))

    # --- compose.yaml parses -----------------------------------------------------------------
    compose_path = root / "compose.yaml"
    compose = None
    if yaml is None:
        check("PyYAML is installed", False, "pip install pyyaml")
    else:
        try:
            compose = yaml.safe_load(compose_path.read_text())
            check("compose.yaml parses", isinstance(compose, dict) and isinstance(compose.get("services"), dict))
        except (OSError, yaml.YAMLError) as error:
            check("compose.yaml parses", False, str(error).splitlines()[0])
    services = (compose or {}).get("services") or {}
    if not isinstance(services, dict):
        services = {}
    check(
        "compose.yaml has the services rabbitmq, encoder, decoder and worker",
        {"rabbitmq", "encoder", "decoder", "worker"} <= set(services),
        f"services: {sorted(services)}",
    )
    client = services.get("client") or {}
    check(
        "compose.yaml has a client service under a profile (not started by `up`)",
        bool(client) and bool(client.get("profiles")),
        "missing" if not client else "no profiles",
    )

    # --- the broker ----------------------------------------------------------------------------
    broker = services.get("rabbitmq") or {}
    image = str(broker.get("image", ""))
    check(
        f"the broker image {image or '(none)'} is an official rabbitmq:3.x-management tag",
        re.fullmatch(r"(docker\.io/)?(library/)?rabbitmq:3(\.\d+){0,2}-management(-alpine)?", image) is not None,
    )
    health = (broker.get("healthcheck") or {}).get("test")
    health_text = " ".join(as_list(health)) if not isinstance(health, str) else health
    check(
        "the broker has a healthcheck that runs rabbitmq-diagnostics",
        "rabbitmq-diagnostics" in health_text and "NONE" not in as_list(health)[:1],
        health_text or "no healthcheck",
    )
    mounts = [(k, s, t) for k, s, t in bind_mounts(broker) if k == "bind"]

    def mount(predicate):
        return next(((s, t) for _k, s, t in mounts if predicate(s, t)), (None, None))

    plugins_src, plugins_dst = mount(lambda s, t: os.path.basename(str(s)) == "enabled_plugins")
    check(
        "the broker mounts enabled_plugins from the repository at /etc/rabbitmq/enabled_plugins",
        plugins_src is not None and (root / plugins_src).is_file() and plugins_dst == "/etc/rabbitmq/enabled_plugins",
        f"{plugins_src} -> {plugins_dst}",
    )
    if plugins_src and (root / plugins_src).is_file():
        enabled = set(re.findall(r"[a-z_]+", (root / plugins_src).read_text()))
        check(
            "enabled_plugins enables rabbitmq_management and rabbitmq_prometheus",
            {"rabbitmq_management", "rabbitmq_prometheus"} <= enabled,
            f"{sorted(enabled)}",
        )
    conf_src, conf_dst = mount(lambda s, t: str(s).endswith(".conf"))
    conf_ok = (
        conf_src is not None
        and (root / conf_src).is_file()
        and (
            conf_dst == "/etc/rabbitmq/rabbitmq.conf"
            or re.fullmatch(r"/etc/rabbitmq/conf\.d/[^/]+\.conf", str(conf_dst)) is not None
        )
    )
    check(
        "the broker mounts a .conf from the repository where the image reads it "
        "(/etc/rabbitmq/rabbitmq.conf or /etc/rabbitmq/conf.d/*.conf)",
        bool(conf_ok),
        f"{conf_src} -> {conf_dst}",
    )
    defs_src, defs_dst = mount(lambda s, t: str(s).endswith(".json"))
    check(
        "the broker mounts definitions.json from the repository",
        defs_src is not None and (root / defs_src).is_file(),
        f"{defs_src} -> {defs_dst}",
    )
    if conf_ok and defs_dst:
        conf = read_conf(root / conf_src)
        loaded = conf.get("load_definitions") or conf.get("definitions.local.path")
        check(
            f"the broker conf loads the mounted definitions (load_definitions = {loaded})",
            loaded == defs_dst,
            f"mounted at {defs_dst}",
        )
    definitions_path = root / (defs_src or "ops/rabbitmq/definitions.json")
    try:
        definitions = json.loads(definitions_path.read_text())
    except (OSError, ValueError) as error:
        check(f"{definitions_path.relative_to(root)} parses", False, str(error))
        definitions = {}
    users = {u.get("name"): u for u in definitions.get("users", [])}
    vhosts = {v.get("name") for v in definitions.get("vhosts", [])}

    # --- the Dockerfile ------------------------------------------------------------------------
    dockerfile_path = root / "ops" / "Dockerfile"
    try:
        stages = dockerfile_stages(dockerfile_path.read_text())
    except OSError as error:
        check("ops/Dockerfile exists", False, str(error))
        stages = []
    check("the Dockerfile is a multi-stage build", len(stages) >= 2, f"stages: {[s['image'] for s in stages]}")
    build_stage = next(
        (s for s in stages if any(i == "RUN" and re.search(r"\bswift build\b", a) for i, a in s["instructions"])),
        stages[0] if stages else {"image": "", "alias": None, "instructions": []},
    )
    final_stage = stages[-1] if stages else {"image": "", "alias": None, "instructions": []}
    build_packages = apt_packages(build_stage)
    check(
        "the build stage installs librabbitmq-dev and libopenblas-dev",
        {"librabbitmq-dev", "libopenblas-dev"} <= build_packages,
        f"installs {sorted(build_packages)}",
    )
    build_runs = " ".join(a for i, a in build_stage["instructions"] if i == "RUN")
    check(
        "the build stage builds the nercc product (swift build --product nercc)",
        re.search(r"swift build\b[^&;|]*--product[ =]nercc\b", build_runs) is not None,
    )
    build_copies = set()
    for instr, a in build_stage["instructions"]:
        if instr in ("COPY", "ADD"):
            flags, srcs, _dest = copy_parts(a)
            if "from" not in flags:
                build_copies |= {s.rstrip("/") for s in srcs}
    manifest = (root / "Package.swift").read_text() if (root / "Package.swift").is_file() else ""
    needed = {"Package.swift", "Sources"} | ({"Tests"} if ".testTarget(" in manifest else set())
    check(
        "the build stage copies what SwiftPM needs (" + ", ".join(sorted(needed)) + ")",
        needed <= build_copies or "." in build_copies,
        f"copies {sorted(build_copies)}",
    )
    for instr, a in [(i, a) for s in stages for i, a in s["instructions"] if i in ("COPY", "ADD")]:
        flags, srcs, _dest = copy_parts(a)
        if "from" in flags:
            continue
        for src in srcs:
            if re.match(r"^[a-z]+://", src):
                continue
            found = glob.glob(str(root / src)) if any(c in src for c in "*?[") else [str(root / src)]
            check(f"{instr} source {src} exists in the repository", any(os.path.exists(f) for f in found))
            check(f"{instr} source {src} is not excluded by .dockerignore", not dockerignored(root, src))

    ignore = dockerignore_patterns(root)
    check(
        ".dockerignore keeps build output and the git history out of the build context (.build, .git)",
        dockerignored(root, ".build") and dockerignored(root, ".git"),
        f"patterns: {ignore}",
    )

    version = re.match(r"(?:docker\.io/)?(?:library/)?swift:(\d+(?:\.\d+)*)", build_stage["image"])
    final_version = re.match(r"(?:docker\.io/)?(?:library/)?swift:(\d+(?:\.\d+)*)", final_stage["image"])
    static_stdlib = "--static-swift-stdlib" in build_runs
    check(
        f"the final stage ({final_stage['image']}) carries the Swift runtime of the build toolchain "
        f"({build_stage['image']})",
        static_stdlib
        or (version is not None and final_version is not None and version.group(1) == final_version.group(1)),
    )
    final_packages = apt_packages(final_stage)
    # Debian packages of the shared libraries the binary links, beyond libc and the Swift runtime.
    providers = {
        "librabbitmq.so.4": r"librabbitmq4",
        "libopenblas.so.0": r"libopenblas0(-pthread|-openmp|-serial)?|libopenblas-base",
        "libssl.so.3": r"libssl3",
        "libcrypto.so.3": r"libssl3",
        "libgomp.so.1": r"libgomp1",
    }
    base_libs = re.compile(
        r"^(libswift\w*|libFoundation\w*|lib_Foundation\w*|libdispatch|libBlocksRuntime|libc|libm|libdl|"
        r"libpthread|librt|libutil|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so"
    )
    needed_libs = None
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True)
        if out.returncode == 0:
            needed_libs = sorted(set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)))
    if needed_libs is None:
        needed_libs = ["librabbitmq.so.4", "libopenblas.so.0"]
    missing = []
    for lib in needed_libs:
        if base_libs.match(lib):
            continue
        pattern = providers.get(lib)
        if pattern is None or not any(re.fullmatch(pattern, p) for p in final_packages):
            missing.append(lib)
    check(
        "the final stage installs the runtime packages of the libraries nercc links ("
        + ", ".join(lib for lib in needed_libs if not base_libs.match(lib))
        + ")",
        not missing,
        f"no package installed for {missing}; installs {sorted(final_packages)}",
    )
    build_names = {build_stage.get("alias"), str(stages.index(build_stage)) if build_stage in stages else None} - {None}
    binary_on_path = False
    for instr, a in final_stage["instructions"]:
        if instr == "COPY":
            flags, srcs, dest = copy_parts(a)
            if flags.get("from") in build_names and any(s.endswith("nercc") for s in srcs):
                target = dest if not dest.endswith("/") else dest + "nercc"
                binary_on_path = target in ("/usr/local/bin/nercc", "/usr/bin/nercc", "/bin/nercc")
    check("the final stage copies the nercc binary from the build stage onto PATH", binary_on_path)
    entry = next((a for i, a in reversed(final_stage["instructions"]) if i == "ENTRYPOINT"), "")
    try:
        entry_words = json.loads(entry) if entry.strip().startswith("[") else None
    except ValueError:
        entry_words = None
    check(
        f"the entry point is nercc, in exec form so SIGTERM reaches it ({entry.strip() or 'none'})",
        bool(entry_words) and os.path.basename(entry_words[0]) == "nercc",
    )
    layout = image_layout(final_stage)
    workdir = workdir_of(final_stage)
    for dest, src in (("/opt/nercc/models", "models"), ("/opt/nercc/data", "data")):
        check(
            f"the image holds {src}/ at {dest}",
            os.path.normpath(layout.get(dest, "")) == src and (root / src).is_dir(),
            f"layout {layout}",
        )

    # --- the application services ---------------------------------------------------------------
    broker_names = {"rabbitmq", str(broker.get("hostname", "rabbitmq"))}
    settings = {}
    served = set()
    service_models = {}
    for name in APP_SERVICES:
        service = services.get(name)
        if not isinstance(service, dict):
            check(f"{name}: defined", False, "no such service")
            continue
        subcommand = SERVICE_SUBCOMMAND[name]
        env = environment_of(service)
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        dockerfile = "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile", "Dockerfile")
        ok = (
            context is not None
            and (root / context).resolve() == root
            and ((root / context) / dockerfile).resolve() == dockerfile_path.resolve()
        )
        check(f"{name}: builds from ops/Dockerfile with context .", ok, f"build: {build}")
        depends = service.get("depends_on") or {}
        check(
            f"{name}: waits for a healthy broker (depends_on rabbitmq: service_healthy)",
            isinstance(depends, dict) and (depends.get("rabbitmq") or {}).get("condition") == "service_healthy",
            f"depends_on: {depends}",
        )
        entrypoint = as_list(service.get("entrypoint"))
        command = as_list(service.get("command"))
        check(
            f"{name}: its command starts with the nercc subcommand '{subcommand}'",
            bool(command)
            and command[0] in subcommands
            and command[0] == subcommand
            and (not entrypoint or os.path.basename(entrypoint[0]) == "nercc"),
            f"entrypoint {entrypoint or 'nercc'}, command {command}",
        )
        named = sorted(k for k in env if k.startswith("NERCC_"))
        unknown = [k for k in named if k not in cli_env]
        elsewhere = [k for k in named if k in cli_env and k not in command_env.get(subcommand, set())]
        check(
            f"{name}: every NERCC_* variable it sets is read by `nercc {subcommand}` ({len(named)} set)",
            not unknown and not elsewhere,
            (f"not read by the CLI: {unknown}; " if unknown else "")
            + (f"read by the CLI but not by `nercc {subcommand}`: {elsewhere}" if elsewhere else ""),
        )

        def value(key, flag=None, default=None):
            v = flag_value(command, flag) if flag else None
            return v if v is not None else (env.get(key) or default)

        prefix = value("NERCC_TOPOLOGY_PREFIX", "--topology-prefix", env_default(sources, "NERCC_TOPOLOGY_PREFIX"))
        shards = value("NERCC_SHARDS", "--shards", env_default(sources, "NERCC_SHARDS"))
        limit = value("NERCC_DELIVERY_LIMIT", "--delivery-limit", env_default(sources, "NERCC_DELIVERY_LIMIT"))
        settings[name] = (prefix, shards, limit)

        # Files the service reads, through the image layout.
        paths = []
        if name == "encoder":
            from_flags = [command[i + 1] for i, a in enumerate(command[:-1]) if a == "--model"]
            listed = [p.strip() for p in (env.get("NERCC_MODELS") or "").split(",") if p.strip()]
            paths += [("model", p) for p in (from_flags or listed)]
        # Encoders read calibration profiles for their λs, decoders for their output checks.
        if name in ("encoder", "decoder") and value("NERCC_PROFILE", "--profile"):
            paths.append(("profile", value("NERCC_PROFILE", "--profile")))
        if name == "worker" and value("NERCC_MODEL", "--model"):
            paths.append(("model", value("NERCC_MODEL", "--model")))
        if name == "client":
            for flag, var in (("--input", "input"), ("--labels", "labels")):
                path = flag_value(command, flag) or swift_default(blocks, "SubmitCommand", var)
                if path and path != "none":
                    paths.append((var, path))
        models = []
        for kind, path in paths:
            local = to_repo(path, layout, workdir, root)
            exists = local is not None and local.is_file()
            shown = local.relative_to(root) if local else "?"
            detail = "not under any COPY of the final stage" if local is None else f"{shown} is missing"
            if exists and kind == "model":
                try:
                    description = json.loads(local.read_text())
                    weights = local.parent / description.get("weights", "")
                    exists = bool(description.get("name")) and weights.is_file()
                    detail = f"name {description.get('name')!r}, weights {weights.relative_to(root)} missing"
                    models.append(description.get("name"))
                except ValueError as error:
                    exists, detail = False, f"not JSON: {error}"
            check(f"{name}: {kind} {path} is in the image ({shown})", exists, detail)
        if name in ("encoder", "worker") and not paths:
            check(f"{name}: a model is configured (NERCC_MODEL{'S' if name == 'encoder' else ''} or --model)", False)
        service_models[name] = models
        if name == "encoder":
            served = set(models)
        if name == "client":
            service_models[name] = [value("NERCC_SUBMIT_MODEL", "--model", env_default(sources, "NERCC_SUBMIT_MODEL"))]

        # The broker user.
        url = value("NERCC_AMQP_URL", "--url")
        parsed = urllib.parse.urlsplit(url) if url else None
        if parsed is None or parsed.scheme not in ("amqp", "amqps"):
            check(
                f"{name}: NERCC_AMQP_URL is an amqp:// or amqps:// URL of the broker service",
                False,
                f"{url!r} (the CLI default is guest@127.0.0.1, which the compose broker does not create)",
            )
            continue
        user = urllib.parse.unquote(parsed.username or "")
        password = urllib.parse.unquote(parsed.password or "")
        vhost = urllib.parse.unquote(parsed.path[1:]) if parsed.path not in ("", "/") else "/"
        check(
            f"{name}: NERCC_AMQP_URL points at the broker service ({parsed.hostname}:{parsed.port or 5672})",
            parsed.hostname in broker_names
            and (parsed.port or (5671 if parsed.scheme == "amqps" else 5672)) in (5671, 5672),
        )
        record = users.get(user)
        grants = [p for p in definitions.get("permissions", []) if p.get("user") == user and p.get("vhost") == vhost]
        check(
            f"{name}: user '{user}' exists in definitions.json with permissions on vhost '{vhost}'",
            record is not None and bool(grants) and vhost in vhosts,
            "no such user"
            if record is None
            else ("no permissions on that vhost" if not grants else "vhost not defined"),
        )
        if record is not None:
            matches = password_matches(record, password)
            check(
                f"{name}: the URL's password matches user '{user}' in definitions.json",
                matches is not False,
                "the password hash does not match",
            )
        if grants:
            grant = grants[0]
            try:
                shard_count = int(shards)
            except (TypeError, ValueError):
                shard_count = 1
            shard = int(value("NERCC_SHARD", "--shard", "0") or 0) if name == "decoder" else 0
            needs = operations(
                name, prefix or "nercc", service_models.get(name) or sorted(served) or ["mnist-mlp"], shard_count, shard
            )
            lacking = sorted(f"{perm} {res}" for perm, res in needs if not permitted(grant.get(perm, ""), res))
            check(
                f"{name}: user '{user}' may make every declaration, publish and consume of `nercc {subcommand}`",
                not lacking,
                "missing: " + ", ".join(lacking),
            )
            excess = sorted(
                f"{perm} {res}" for perm, res in forbidden(name, prefix or "nercc") if permitted(grant.get(perm, ""), res)
            )
            if forbidden(name, prefix or "nercc"):
                check(
                    f"{name}: user '{user}' may not publish to the exchanges of the other services",
                    not excess,
                    "granted: " + ", ".join(excess),
                )

    # --- cross-service consistency ------------------------------------------------------------------
    worker_models = service_models.get("worker", [])
    check(
        f"the worker's model {worker_models} is served by the encoder {sorted(served)}",
        bool(worker_models) and set(worker_models) <= served,
    )
    client_models = service_models.get("client", [])
    check(
        f"the client's model {client_models} is served by the encoder {sorted(served)}",
        bool(client_models) and set(client_models) <= served,
    )
    distinct = {settings[n] for n in ("encoder", "decoder", "worker") if n in settings}
    check(
        "encoder, decoder and worker agree on topology prefix, shards and delivery limit",
        len(distinct) == 1,
        f"{ {n: settings[n] for n in settings} }",
    )
    if distinct:
        limit = next(iter(distinct))[2]
        limits = {
            q["name"]: (q.get("arguments") or {}).get("x-delivery-limit")
            for q in definitions.get("queues", [])
            if "x-delivery-limit" in (q.get("arguments") or {})
        }
        check(
            f"definitions.json's queues use the services' x-delivery-limit ({limit})",
            bool(limits) and all(str(v) == str(limit) for v in limits.values()),
            f"{limits}",
        )
    worker = services.get("worker") or {}
    fixed_ports = [
        p
        for p in (worker.get("ports") or [])
        if (isinstance(p, dict) and p.get("published")) or (not isinstance(p, dict) and ":" in str(p))
    ]
    check(
        "the worker can be scaled (no container_name, no fixed host ports)",
        "container_name" not in worker and not fixed_ports,
        f"container_name {worker.get('container_name')}, ports {fixed_ports}",
    )
    return report.close()


if __name__ == "__main__":
    sys.exit(main())
