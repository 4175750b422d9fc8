#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests in ops/k8s. No cluster, kubectl or kustomize is needed,
and nothing is run except `nercc --help` and `nercc <role> --help`.

    python3 ops/checks/check_k8s.py [--nercc PATH] [--root DIR] [--k8s-dir DIR] [--definitions FILE]

--nercc    the built nercc binary; default $NERCC_BINARY, else `swift build --show-bin-path`/nercc.
           Its help gives the real subcommands, and per subcommand the NERCC_* variables it reads
           (the "(env NERCC_X)" of each option) and its options.
--root     the repository (default: the one holding this script).
--k8s-dir  the manifests: a directory holding base/ and, optionally, monitoring/ (default ops/k8s).
--definitions  the broker's users, permissions and queues (default ops/rabbitmq/definitions-cluster.json,
               the three-node cluster's: quorum coded queues, x-quorum-initial-group-size 3).

The kustomizations are read as written, not built: resources, namespace, labels, images and the
secret and ConfigMap generators are evaluated; any other kustomize field (patches, replicas,
components, ...) fails the check, so that what is checked is what `kubectl apply -k` applies.

base/kustomization.yaml
  * parses; every resource it lists exists and parses into objects with apiVersion, kind and a
    name; every YAML file of base/ is listed; namespace and labels (or commonLabels) are set;
  * images: has an entry for the image the containers name, and that name is the image name of
    compose.yaml and of the Dockerfile's `docker build -t` line;
  * it uses no kustomize field that this checker does not evaluate.

Each container of a Deployment or StatefulSet (encoder, decoder, worker)
  * runs a real `nercc` subcommand: ENTRYPOINT nercc (or a command naming nercc), first argument a
    subcommand of `nercc --help`, one of encoder, decoder, worker; every further argument that is an
    option is an option of that subcommand;
  * every variable it sets (env, and every key of the ConfigMaps and Secrets it takes whole through
    envFrom) is a NERCC_* variable that `nercc <subcommand> --help` names. For a ConfigMap shared by
    several subcommands this means every key must be read by each of them: a key that one of them
    ignores is a setting that silently does nothing there. A variable that means something else to
    each subcommand (their help texts differ, e.g. NERCC_PREFETCH) must not be in a ConfigMap that
    several subcommands take;
  * every env valueFrom (configMapKeyRef, secretKeyRef) and every envFrom names a ConfigMap or
    Secret of the base that has that key;
  * NERCC_HTTP_HOST is 0.0.0.0 (else the kubelet's probes cannot reach the endpoints);
    NERCC_HTTP_PORT is set and is a containerPort of the container;
  * liveness and readiness probes (and a startup probe if any) are httpGet on a port the container
    declares (by name or number), whose number is NERCC_HTTP_PORT, on a path the HealthServer
    serves (from Sources/NerccCommands/HealthServer.swift): liveness /health/live (never
    /health/ready, which turns 503 during a broker resource alarm and would restart every pod),
    readiness /health/ready or /health, startup /health/live;
  * the pod template's prometheus.io/scrape is "true", prometheus.io/port is NERCC_HTTP_PORT and
    prometheus.io/path is /metrics, which the HealthServer serves;
  * terminationGracePeriodSeconds covers a drain: the publish-confirm timeout plus the close
    timeout of Sources/RabbitMQMessaging/RabbitMQConfiguration.swift;
  * resource requests (cpu, memory) and a memory limit are set;
  * runAsNonRoot with a numeric, non-zero runAsUser (the image's USER is a name, which the kubelet
    cannot check), readOnlyRootFilesystem, no privilege escalation; enableServiceLinks is false
    (a Service named nercc-http would inject NERCC_HTTP_PORT=tcp://... where a pod does not set it);
  * the models it is given (NERCC_MODELS, NERCC_MODEL or --model) are files of the repository under
    the Dockerfile's final-stage layout (/opt/nercc/models -> models/), with a name and weights;
  * NERCC_AMQP_URL comes from a Secret; every URL of its comma-separated list is amqp:// or amqps://
    with the same user, password and vhost, on the same broker (its Service `rabbitmq[.<namespace>...]`,
    or its nodes `rabbitmq-server-<i>.rabbitmq-nodes[...]`), in the kustomization's namespace; the
    user exists in the definitions with permissions on the URL's vhost, and those permissions cover
    every declaration, publish and consume of the subcommand (check_deploy.py's rules); a worker's
    user may not publish tasks, cancellations, manifests, predictions or requests.

Across the workloads
  * encoder, decoder and worker agree on topology prefix, shards, coded queues and delivery limit;
    definitions.json has the same delivery limit, one results queue per shard, and the task queues
    of the workers' models with the coded-queue type;
  * the workers' models are served by the encoders;
  * encoders and decoders take the authentication key (NERCC_AUTH_KEY or NERCC_AUTH_KEY_FILE) from
    one and the same Secret key; the workers get no key variable and no reference to that Secret;
  * decoders: each NERCC_SHARD is a literal in 0 ..< NERCC_SHARDS, every shard has a decoder, and
    no shard has more than two (an active one and one standby), not even during a rollout (replicas
    plus maxSurge);
  * the worker Deployment leaves replicas to KEDA (no replicas field) and sets no fixed
    NERCC_WORKER_ID (it names an exclusive queue);
  * each PodDisruptionBudget selects a workload and allows an eviction.

KEDA (base/keda-scaledobject.yaml)
  * a ScaledObject (keda.sh/v1alpha1) whose scaleTargetRef names the worker Deployment; one rabbitmq
    trigger per model of the workers, whose queueName is <prefix>.tasks.<model name>, computed from
    the ConfigMap's prefix and the model file's name; mode QueueLength over protocol http (the
    management API counts ready and unacknowledged tasks; AMQP counts the ready ones only), not
    excludeUnacknowledged; a value in 1 ..= the worker's prefetch (its window); vhostName that of the
    services' URLs; minReplicaCount >= N (the encoder's NERCC_WORKERS) and <= maxReplicaCount;
  * the TriggerAuthentication it names exists and gives `host` from a Secret key of the base; that
    host is an http:// URL of the management port (15672) of the same broker Service, named with
    the namespace (the KEDA operator resolves it from its own namespace), whose user exists in
    definitions.json with a monitoring (or management, administrator) tag and permissions on the
    vhost.

monitoring/ (if present)
  * its kustomization lists ../base and files that exist, and every YAML file of monitoring/;
  * each PodMonitor (or ServiceMonitor) is monitoring.coreos.com/v1, selects the pods of every role
    and scrapes /metrics on their http port.

Prints one line per check and a closing `k8s checks: N passed, M failed`; exits 1 if any failed.
"""
import argparse
import base64
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import check_deploy as deploy  # noqa: E402  (the compose checks: CLI, Dockerfile and permission helpers)

yaml = deploy.yaml

ROLES = ("encoder", "decoder", "worker")
ENV_NAME = re.compile(r"NERCC_[A-Z0-9_]+")
# Kustomization fields this checker evaluates; any other one changes what gets applied.
KUSTOMIZE_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "commonLabels",
    "commonAnnotations",
    "resources",
    "images",
    "secretGenerator",
    "configMapGenerator",
    "generatorOptions",
}
AUTH_VARIABLES = ("NERCC_AUTH_KEY", "NERCC_AUTH_KEY_FILE")
MANAGEMENT_TAGS = {"monitoring", "management", "administrator"}


class Report(deploy.Report):
    def close(self):
        print(f"k8s checks: {self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


# ----------------------------------------------------------------------------- the CLI


def subcommand_help(binary, subcommand):
    out = subprocess.run([str(binary), subcommand, "--help"], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def help_options(text):
    """From `nercc <sub> --help`: {NERCC_X: (flag or None, help text without its default)} and the
    set of option names (--x, and --no-x of inverted flags)."""
    options = text.split("OPTIONS:", 1)[1] if "OPTIONS:" in text else text
    blocks, current = [], []
    for line in options.splitlines():
        if re.match(r"^  -", line):
            if current:
                blocks.append(current)
            current = [line.strip()]
        elif line.strip() and current:
            current.append(line.strip())
    if current:
        blocks.append(current)
    env, flags = {}, set()
    for block in blocks:
        head = block[0].split("  ")[0]  # "--url <url>", "--manifest-in-tasks/--no-manifest-in-tasks"
        names = re.findall(r"--[a-z0-9][a-z0-9-]*", head)
        flags |= set(names)
        text = " ".join(block)
        described = " ".join(re.sub(r"\(default:[^)]*\)", "", text).split())
        for name in ENV_NAME.findall(text):
            # The flag whose twin the variable is: "(env NERCC_X)" names it; NERCC_AUTH_KEY has no flag.
            twin = re.search(rf"env {name}\b", text) is not None
            env.setdefault(name, (names[0] if twin and names else None, described))
    return env, flags


def served_paths(root):
    """The paths the HealthServer routes: router.get("metrics") -> /metrics."""
    path = root / "Sources" / "NerccCommands" / "HealthServer.swift"
    try:
        text = path.read_text()
    except OSError:
        return set()
    return {"/" + p.strip("/") for p in re.findall(r'router\.get\("([^"]+)"\)', text)}


def drain_bound(root):
    """Seconds a drain may take: the publish-confirm timeout plus the connection-close timeout."""
    path = root / "Sources" / "RabbitMQMessaging" / "RabbitMQConfiguration.swift"
    try:
        text = path.read_text()
    except OSError:
        return None
    publish = re.search(r"publishTimeout:\s*Duration\s*=\s*\.seconds\((\d+)\)", text)
    close = re.search(r"closeTimeout:\s*Duration\s*=\s*\.seconds\((\d+)\)", text)
    if not publish or not close:
        return None
    return int(publish.group(1)), int(close.group(1))


def command_types(blocks):
    """Subcommand name -> the Swift type that implements it."""
    found = {}
    for name, body in blocks.items():
        m = re.search(r'commandName:\s*"([\w-]+)"', body)
        if m:
            found[m.group(1)] = name
    return found


def swift_default(blocks, types, subcommand, name):
    """The literal default of Environment.x("NAME", default) for that subcommand: its own type
    first, then its option groups (ConnectionOptions, ...)."""
    pattern = re.compile(rf'Environment\.\w+\("{name}",\s*("?)([^")]*)\1\)')
    own = blocks.get(types.get(subcommand, ""), "")
    found = pattern.search(own)
    for group in re.findall(r"@OptionGroup\s+var\s+\w+\s*:\s*(\w+)", own):
        found = found or pattern.search(blocks.get(group, ""))
    if not found:
        return None
    literal = found.group(2)
    # Swift writes 16_777_216 and 16 << 20 for numbers.
    if re.fullmatch(r"[\d_]+", literal):
        return literal.replace("_", "")
    shifted = re.fullmatch(r"(\d+)\s*<<\s*(\d+)", literal)
    return str(int(shifted.group(1)) << int(shifted.group(2))) if shifted else literal


# ----------------------------------------------------------------------------- kustomize


def parse_env_file(path):
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value
    return values


def generated(directory, spec, check, label):
    """The data of a secretGenerator or configMapGenerator entry: literals, envs and files."""
    data = {}
    for literal in spec.get("literals") or []:
        key, _, value = str(literal).partition("=")
        data[key] = value
    for env in ([spec["env"]] if spec.get("env") else []) + list(spec.get("envs") or []):
        path = directory / env
        if check(f"{label}: generator env file {env} exists", path.is_file()):
            data.update(parse_env_file(path))
    for item in spec.get("files") or []:
        key, _, source = str(item).rpartition("=")
        path = directory / source
        if check(f"{label}: generator file {source} exists", path.is_file()):
            data[key or path.name] = path.read_text()
    return data


def load_kustomization(directory, check, label, root, loaded=None):
    """{'data', 'objects': [(file, doc)], 'files': listed files, 'namespace'} of a kustomization,
    its resource directories included (their objects take this kustomization's namespace). A
    directory already in `loaded` (the base, for an overlay) is not checked again."""
    if loaded is not None and directory.resolve() in loaded:
        known = loaded[directory.resolve()]
        return {**known, "objects": [(f, json.loads(json.dumps(d))) for f, d in known["objects"]]}
    result = {"data": {}, "objects": [], "files": set(), "namespace": None, "dir": directory}
    candidates = [directory / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        check(f"{label}: {shown} parses", False, str(error).splitlines()[0])
        return result
    check(f"{label}: {shown} parses", isinstance(data, dict) and isinstance(data.get("resources"), list))
    if not isinstance(data, dict):
        return result
    result["data"] = data
    unknown = sorted(set(data) - KUSTOMIZE_FIELDS)
    check(
        f"{label}: the kustomization uses only fields this checker evaluates",
        not unknown,
        f"not evaluated: {unknown}",
    )
    namespace = data.get("namespace")
    result["namespace"] = namespace
    for entry in data.get("resources") or []:
        target = directory / str(entry)
        if target.is_dir():
            inner = load_kustomization(target.resolve(), check, f"{label} -> {entry}", root, loaded)
            result["objects"] += inner["objects"]
            result["namespace"] = namespace or inner["namespace"]
            continue
        if not check(f"{label}: resource {entry} exists", target.is_file()):
            continue
        result["files"].add(target.resolve())
        try:
            docs = [d for d in yaml.safe_load_all(target.read_text()) if d is not None]
        except yaml.YAMLError as error:
            check(f"{label}: {entry} parses", False, str(error).splitlines()[0])
            continue
        well_formed = all(
            isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")
            for d in docs
        )
        check(
            f"{label}: {entry} parses into objects with apiVersion, kind and a name ({len(docs)})",
            bool(docs) and well_formed,
        )
        result["objects"] += [(entry, d) for d in docs if isinstance(d, dict)]
    for kind, field in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for spec in data.get(field) or []:
            name = spec.get("name")
            values = generated(directory, spec, check, f"{label}: {field} {name}")
            doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
            doc["stringData" if kind == "Secret" else "data"] = values
            if spec.get("behavior") in ("merge", "replace"):
                check(f"{label}: {field} {name} has behavior {spec['behavior']}: not evaluated", False)
            result["objects"].append((f"{field} {name}", doc))
    if namespace:
        for _file, doc in result["objects"]:
            if doc.get("kind") != "Namespace":
                doc.setdefault("metadata", {})["namespace"] = namespace
    return result


def listing_is_complete(directory, loaded, check, label):
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    unlisted = [p.name for p in files if p.resolve() not in loaded["files"]]
    check(
        f"{label}: every YAML file of {directory.name}/ is listed in its kustomization",
        not unlisted,
        f"unlisted: {unlisted}",
    )


def secret_data(doc):
    data = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, value in (doc.get("data") or {}).items():
        if doc.get("kind") == "Secret":
            try:
                data.setdefault(str(key), base64.b64decode(str(value)).decode())
            except ValueError:
                data.setdefault(str(key), "")
        else:
            data.setdefault(str(key), str(value))
    return data


def image_repository(image):
    """`registry/nercc:tag` -> `registry/nercc` (a digest is dropped too)."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last)] + last.split(":", 1)[0]


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def as_int(value, default=None):
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def scaled(value, replicas, round_up):
    """An intOrString of a rollout or a disruption budget: 1, or "25%" of replicas."""
    if isinstance(value, str) and value.endswith("%"):
        share = as_int(value[:-1], 0) * replicas / 100
        return math.ceil(share) if round_up else math.floor(share)
    return as_int(value, 0)


def referenced_secrets(node):
    """Names of every Secret a pod spec refers to: env, envFrom, volumes, projected volumes."""
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretKeyRef", "secretRef") and isinstance(value, dict):
                names.add(value.get("name"))
            elif key == "secret" and isinstance(value, dict):
                names.add(value.get("secretName") or value.get("name"))
            names |= referenced_secrets(value)
    elif isinstance(node, list):
        for item in node:
            names |= referenced_secrets(item)
    return names - {None}


# ----------------------------------------------------------------------------- containers


class Value:
    def __init__(self, value, kind, source=None, key=None):
        self.value = value  # the text, or None when it is only known at run time (fieldRef)
        self.kind = kind  # literal, ConfigMap, Secret, field
        self.source = source
        self.key = key


class Container:
    """A container of a workload, with its subcommand, arguments and resolved environment."""

    def __init__(self, workload, container):
        self.workload = workload
        self.spec = container
        self.name = f"{workload['metadata']['name']}/{container.get('name')}"
        command = [str(c) for c in container.get("command") or ["nercc"]]
        arguments = [str(a) for a in container.get("args") or []]
        argv = command + arguments
        self.runs_nercc = os.path.basename(argv[0]) == "nercc"
        self.subcommand = argv[1] if self.runs_nercc and len(argv) > 1 else None
        self.arguments = argv[2:]
        self.env = {}
        self.references = []  # (description, exists)
        self.from_configmaps = []  # ConfigMaps taken whole

    def resolve(self, index):
        for item in self.spec.get("envFrom") or []:
            prefix = item.get("prefix", "")
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field not in item:
                    continue
                name = (item[field] or {}).get("name")
                data = index[kind].get(name)
                self.references.append((f"envFrom {kind} {name}", data is not None))
                if kind == "ConfigMap" and data is not None:
                    self.from_configmaps.append(name)
                for key, value in (data or {}).items():
                    self.env[prefix + key] = Value(value, kind, name, key)
        for item in self.spec.get("env") or []:
            name = item.get("name")
            source = item.get("valueFrom")
            if source is None:
                self.env[name] = Value(str(item.get("value", "")), "literal")
                continue
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if field in source:
                    ref = source[field] or {}
                    data = index[kind].get(ref.get("name"))
                    exists = data is not None and ref.get("key") in data
                    self.references.append((f"env {name} from {kind} {ref.get('name')} key {ref.get('key')}", exists))
                    value = data.get(ref.get("key")) if exists else None
                    self.env[name] = Value(value, kind, ref.get("name"), ref.get("key"))
                    break
            else:
                self.env[name] = Value(None, "field")

    def setting(self, name, flags_of, default=None):
        """A setting as nercc sees it: its flag in the arguments, else its variable, else the default."""
        flag = flags_of.get(name)
        if flag:
            given = deploy.flag_value(self.arguments, flag)
            if given is not None:
                return given
        value = self.env.get(name)
        if value is not None and value.value not in (None, ""):
            return value.value
        return default

    def repeated(self, flag):
        found = []
        for i, a in enumerate(self.arguments):
            if a == flag and i + 1 < len(self.arguments):
                found.append(self.arguments[i + 1])
            elif a.startswith(flag + "="):
                found.append(a.split("=", 1)[1])
        return found


def pod_spec(workload):
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(workload):
    return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def pod_annotations(workload):
    return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}


def describe_model(path, layout, workdir, root):
    """(name or None, repository file, problem) of a model path inside the image."""
    local = deploy.to_repo(path, layout, workdir, root)
    if local is None:
        return None, None, "not under any COPY of the Dockerfile's final stage"
    shown = local.relative_to(root) if local.is_relative_to(root) else local
    if not local.is_file():
        return None, shown, f"{shown} is missing"
    if local.suffix == ".onnx":
        sidecar = local.with_name(local.name + ".json")
        name = None
        if sidecar.is_file():
            try:
                name = json.loads(sidecar.read_text()).get("name")
            except ValueError as error:
                return None, shown, f"{sidecar.name} is not JSON: {error}"
        return name or local.stem, shown, None
    try:
        description = json.loads(local.read_text())
    except ValueError as error:
        return None, shown, f"not JSON: {error}"
    weights = local.parent / str(description.get("weights", ""))
    if not description.get("name") or not weights.is_file():
        return None, shown, f"name {description.get('name')!r}, weights {description.get('weights')!r} missing"
    return description["name"], shown, None


def split_urls(text):
    return [u.strip() for u in str(text).split(",")]


def broker_of(hostname):
    """(broker, namespace or None) a host name reaches: `rabbitmq` and `rabbitmq.ns.svc` name the
    Service `rabbitmq`; `rabbitmq-server-0.rabbitmq-nodes[.ns.svc]` one node of the RabbitMQ
    Cluster Operator's cluster `rabbitmq`, through its headless Service."""
    labels = (hostname or "").split(".")
    node = re.fullmatch(r"(.+)-server-\d+", labels[0])
    if node and len(labels) >= 2 and labels[1] == f"{node.group(1)}-nodes":
        return node.group(1), (labels[2] if len(labels) >= 3 else None)
    return labels[0], (labels[1] if len(labels) >= 2 else None)


# ----------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nercc", help="the built nercc binary")
    parser.add_argument("--root", help="the repository (default: the one holding this script)")
    parser.add_argument("--k8s-dir", help="the manifests, holding base/ and monitoring/ (default: ops/k8s)")
    parser.add_argument(
        "--definitions", help="the broker definitions (default: ops/rabbitmq/definitions-cluster.json)")
    args = parser.parse_args()
    root = pathlib.Path(args.root).resolve() if args.root else pathlib.Path(__file__).resolve().parents[2]
    k8s = pathlib.Path(args.k8s_dir).resolve() if args.k8s_dir else root / "ops" / "k8s"
    report = Report()
    check = report.check

    # --- the CLI ---------------------------------------------------------------------------
    binary = deploy.find_binary(root, args.nercc)
    if binary is None or not binary.is_file() or not os.access(binary, os.X_OK):
        where = f"{binary} is missing" if binary else "cannot locate it (`swift build --show-bin-path` failed)"
        check("the nercc binary exists", False, f"{where}: build first (swift build --product nercc) or pass --nercc")
        return report.close()
    if yaml is None:
        check("PyYAML is installed", False, "pip install pyyaml")
        return report.close()
    subcommands = deploy.subcommands_of(binary)
    check(
        f"nercc --help lists the service subcommands ({binary})",
        set(ROLES) <= subcommands,
        f"found {sorted(subcommands)}",
    )
    help_env, help_flags = {}, {}
    for role in ROLES:
        help_env[role], help_flags[role] = help_options(subcommand_help(binary, role))
        check(
            f"`nercc {role} --help` names the NERCC_* variables it reads ({len(help_env[role])})",
            "NERCC_AMQP_URL" in help_env[role],
        )
    flags_of = {role: {k: v[0] for k, v in help_env[role].items()} for role in ROLES}
    sources = root / "Sources" / "NerccCommands"
    _every, _per_command, blocks = deploy.cli_environment(sources)
    types = command_types(blocks)

    def default(role, name):
        return swift_default(blocks, types, role, name)

    paths = served_paths(root)
    check(
        f"the HealthServer serves /metrics, /health/live and /health/ready ({', '.join(sorted(paths))})",
        {"/metrics", "/health/live", "/health/ready"} <= paths,
    )
    timeouts = drain_bound(root)
    check("RabbitMQConfiguration.swift gives the publish and close timeouts", timeouts is not None)
    drain = sum(timeouts) if timeouts else 35

    # --- the image layout, compose's image name, the broker definitions ------------------------
    dockerfile = root / "ops" / "Dockerfile"
    try:
        docker_text = dockerfile.read_text()
        stages = deploy.dockerfile_stages(docker_text)
    except OSError as error:
        check("ops/Dockerfile exists", False, str(error))
        docker_text, stages = "", []
    final = stages[-1] if stages else {"image": "", "alias": None, "instructions": []}
    layout, workdir = deploy.image_layout(final), deploy.workdir_of(final)
    entry = next((a for i, a in reversed(final["instructions"]) if i == "ENTRYPOINT"), "")
    try:
        entry_words = json.loads(entry) if entry.strip().startswith("[") else []
    except ValueError:
        entry_words = []
    check(
        f"the image's entry point is nercc ({entry.strip() or 'none'}), so a container's args start with "
        "the subcommand",
        bool(entry_words) and os.path.basename(entry_words[0]) == "nercc",
    )
    tagged = re.search(r"docker build\b[^\n]*?\s-t\s+(\S+)", docker_text)
    docker_name = image_repository(tagged.group(1)) if tagged else None
    compose_name = None
    try:
        compose = yaml.safe_load((root / "compose.yaml").read_text()) or {}
        images = {
            str(s.get("image"))
            for n, s in (compose.get("services") or {}).items()
            if n in ROLES and isinstance(s, dict) and s.get("image")
        }
        compose_name = image_repository(images.pop()) if len(images) == 1 else None
    except (OSError, yaml.YAMLError):
        pass
    check(
        f"compose.yaml and the Dockerfile name the image alike ({compose_name}, docker build -t {docker_name})",
        compose_name is not None and compose_name == docker_name,
    )
    # The base is for a three-node broker cluster: the cluster's definitions.
    definitions_path = root / "ops" / "rabbitmq" / "definitions-cluster.json"
    if args.definitions:
        definitions_path = pathlib.Path(args.definitions).resolve()
    defs = definitions_path.name
    try:
        definitions = json.loads(definitions_path.read_text())
    except (OSError, ValueError) as error:
        check(f"{definitions_path} parses", False, str(error))
        definitions = {}
    users = {u.get("name"): u for u in definitions.get("users", [])}

    # --- the base kustomization ------------------------------------------------------------------
    base_dir = k8s / "base"
    if not check(f"{base_dir} holds a kustomization", (base_dir / "kustomization.yaml").is_file()):
        return report.close()
    base = load_kustomization(base_dir, check, "base", root)
    listing_is_complete(base_dir, base, check, "base")
    data = base["data"]
    namespace = base["namespace"]
    check(f"base: a namespace is set ({namespace})", bool(namespace))
    check(
        "base: labels (or commonLabels) mark every object",
        bool(data.get("labels") or data.get("commonLabels")),
    )
    index = {"ConfigMap": {}, "Secret": {}}
    by_kind = {}
    for _file, doc in base["objects"]:
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        by_kind.setdefault(kind, {})[name] = doc
        if kind in index:
            index[kind][name] = secret_data(doc)
    workloads = list((by_kind.get("Deployment") or {}).values()) + list((by_kind.get("StatefulSet") or {}).values())
    containers = []
    for workload in workloads:
        for spec in pod_spec(workload).get("containers") or []:
            c = Container(workload, spec)
            c.resolve(index)
            containers.append(c)

    # Images.
    image_entries = {str(i.get("name")): i for i in data.get("images") or []}
    names = {image_repository(str(c.spec.get("image", ""))) for c in containers}
    check(
        f"base: every container runs the image {sorted(names)}, compose.yaml's and the Dockerfile's {compose_name}",
        len(names) == 1 and names == {compose_name},
    )
    check(
        f"base: images: has an entry for {sorted(names)}, so an overlay can set the registry and tag",
        bool(names) and names <= set(image_entries),
        f"entries {sorted(image_entries)}",
    )

    # --- each container -------------------------------------------------------------------------
    by_role = {role: [] for role in ROLES}
    for c in containers:
        role = c.subcommand
        check(
            f"{c.name}: runs `nercc {role}`, a service subcommand of nercc --help",
            c.runs_nercc and role in subcommands and role in ROLES,
            f"command {c.spec.get('command') or entry_words}, args {c.spec.get('args')}",
        )
        if role not in ROLES:
            continue
        by_role[role].append(c)
        options = [a.split("=", 1)[0] for a in c.arguments if a.startswith("--")]
        unknown_options = [o for o in options if o not in help_flags[role]]
        check(
            f"{c.name}: its arguments are options of `nercc {role}`",
            not unknown_options,
            f"unknown: {unknown_options}",
        )
        for description, exists in c.references:
            check(f"{c.name}: {description} exists in the base", exists)
        unread = sorted(k for k in c.env if k not in help_env[role])
        check(
            f"{c.name}: every variable it gets is a NERCC_* variable `nercc {role}` reads ({len(c.env)})",
            not unread,
            f"not read by `nercc {role}`: {unread}",
        )

        def setting(name, c=c, role=role):
            return c.setting(name, flags_of[role], default(role, name))

        host = setting("NERCC_HTTP_HOST")
        check(
            f"{c.name}: NERCC_HTTP_HOST is 0.0.0.0 (the probes come from outside the pod)",
            host == "0.0.0.0",
            f"{host!r}",
        )
        port = as_int(setting("NERCC_HTTP_PORT"), 0)
        ports = {str(p.get("name")): as_int(p.get("containerPort")) for p in c.spec.get("ports") or []}
        check(
            f"{c.name}: NERCC_HTTP_PORT ({port}) is a containerPort of the container ({sorted(ports.values())})",
            port > 0 and port in ports.values(),
        )
        for kind, wanted in (
            ("livenessProbe", {"/health/live"}),
            ("readinessProbe", {"/health/ready", "/health"}),
            ("startupProbe", {"/health/live"}),
        ):
            probe = c.spec.get(kind)
            if probe is None:
                if kind != "startupProbe":
                    check(f"{c.name}: has a {kind}", False)
                continue
            get = probe.get("httpGet") or {}
            target = get.get("port")
            number = ports.get(str(target)) if str(target) in ports else as_int(target)
            declared = str(target) in ports or number in ports.values()
            check(
                f"{c.name}: {kind} is httpGet on a declared port ({target}) that is NERCC_HTTP_PORT ({port})",
                bool(get) and declared and number == port,
                f"httpGet {get}" if get else "not an httpGet probe",
            )
            path = get.get("path")
            check(
                f"{c.name}: {kind} path {path} is served by the HealthServer and is one of {sorted(wanted)}",
                path in paths and path in wanted,
                f"served: {sorted(paths)}",
            )
        annotations = pod_annotations(c.workload)
        check(
            f"{c.name}: prometheus.io annotations scrape /metrics on NERCC_HTTP_PORT",
            str(annotations.get("prometheus.io/scrape")) == "true"
            and as_int(annotations.get("prometheus.io/port")) == port
            and annotations.get("prometheus.io/path") == "/metrics"
            and "/metrics" in paths,
            f"{ {k: v for k, v in annotations.items() if k.startswith('prometheus.io/')} }",
        )
        spec = pod_spec(c.workload)
        grace = as_int(spec.get("terminationGracePeriodSeconds"), 30)
        publish_s, close_s = timeouts if timeouts else ("?", "?")
        check(
            f"{c.name}: terminationGracePeriodSeconds ({grace}) covers a drain (publish confirm {publish_s} s "
            f"+ close {close_s} s)",
            grace >= drain,
        )
        resources = c.spec.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        check(
            f"{c.name}: requests cpu and memory, and limits memory",
            "cpu" in requests and "memory" in requests and "memory" in limits,
            f"{resources}",
        )
        pod_security = spec.get("securityContext") or {}
        security = {**pod_security, **(c.spec.get("securityContext") or {})}
        user = security.get("runAsUser")
        check(
            f"{c.name}: runs as a numeric non-root user (runAsNonRoot, runAsUser {user})",
            security.get("runAsNonRoot") is True and isinstance(user, int) and user > 0,
            "the image's USER is a name, which the kubelet cannot check against runAsNonRoot",
        )
        check(
            f"{c.name}: read-only root filesystem, no privilege escalation",
            security.get("readOnlyRootFilesystem") is True and security.get("allowPrivilegeEscalation") is False,
        )
        check(
            f"{c.name}: enableServiceLinks is false (no NERCC_<SERVICE>_PORT variables from Services)",
            spec.get("enableServiceLinks") is False,
        )

        # Models.
        c.models = []
        if role in ("encoder", "worker"):
            variable = "NERCC_MODELS" if role == "encoder" else "NERCC_MODEL"
            given = c.repeated("--model") or [p.strip() for p in str(setting(variable) or "").split(",") if p.strip()]
            check(f"{c.name}: a model is configured ({variable} or --model)", bool(given))
            for path in given:
                name, shown, problem = describe_model(path, layout, workdir, root)
                check(
                    f"{c.name}: model {path} is in the image ({shown or '?'}, name {name})",
                    problem is None,
                    problem or "",
                )
                if name:
                    c.models.append(name)

        # The broker URL.
        c.broker, c.grant = None, None
        url = c.env.get("NERCC_AMQP_URL")
        check(
            f"{c.name}: NERCC_AMQP_URL comes from a Secret",
            url is not None and url.kind == "Secret",
            "missing" if url is None else f"from {url.kind}",
        )
        text = deploy.flag_value(c.arguments, "--url") or (url.value if url else None)
        if not text:
            continue
        parsed = [urllib.parse.urlsplit(u) for u in split_urls(text)]
        good = all(
            p.scheme in ("amqp", "amqps") and p.hostname and p.username and p.password is not None for p in parsed
        )
        identities = {(p.scheme, p.username, p.password, p.path) for p in parsed}
        check(
            f"{c.name}: NERCC_AMQP_URL is a list of {len(parsed)} amqp(s):// URL(s) with a user and a password, "
            "alike but for host and port",
            good and len(identities) == 1,
        )
        if not good:
            continue
        services = {broker_of(p.hostname)[0] for p in parsed}
        spaces = {broker_of(p.hostname)[1] for p in parsed} - {None}
        user = urllib.parse.unquote(parsed[0].username)
        vhost = urllib.parse.unquote(parsed[0].path[1:]) if parsed[0].path not in ("", "/") else "/"
        c.broker = (frozenset(services), user, vhost)
        check(
            f"{c.name}: the URL names the broker Service in the namespace "
            f"({', '.join(sorted(p.hostname for p in parsed))})",
            len(services) == 1 and (not spaces or spaces == {namespace}),
        )
        record = users.get(user)
        grants = [g for g in definitions.get("permissions", []) if g.get("user") == user and g.get("vhost") == vhost]
        check(
            f"{c.name}: broker user '{user}' exists in {defs} with permissions on vhost '{vhost}'",
            record is not None and bool(grants),
            "no such user" if record is None else "no permissions on that vhost",
        )
        c.grant = grants[0] if grants else None

    # --- across the workloads -------------------------------------------------------------------
    def role_setting(c, name):
        return c.setting(name, flags_of[c.subcommand], default(c.subcommand, name))

    everyone = [c for role in ROLES for c in by_role[role]]
    for role in ROLES:
        check(f"base: a workload runs `nercc {role}`", bool(by_role[role]))
    shared = (
        "NERCC_TOPOLOGY_PREFIX", "NERCC_SHARDS", "NERCC_CODED_QUEUES", "NERCC_DELIVERY_LIMIT",
        "NERCC_QUORUM_GROUP_SIZE",
    )
    agreed = {c.name: tuple(role_setting(c, n) for n in shared) for c in everyone}
    distinct = set(agreed.values())
    check(
        "encoder, decoder and worker agree on topology prefix, shards, coded queues, delivery limit and "
        "quorum group size",
        len(distinct) == 1,
        f"{agreed}",
    )
    prefix, shards_text, coded, limit, group_text = (
        next(iter(distinct)) if len(distinct) == 1 else ("nercc", "1", "classic", "5", "0")
    )
    group = as_int(group_text, 0)
    shards = as_int(shards_text, 1)
    served = sorted({m for c in by_role["encoder"] for m in c.models})
    worker_models = sorted({m for c in by_role["worker"] for m in c.models})
    check(
        f"the workers' models {worker_models} are served by the encoders {served}",
        bool(worker_models) and set(worker_models) <= set(served),
    )
    limits = {
        q["name"]: (q.get("arguments") or {}).get("x-delivery-limit")
        for q in definitions.get("queues", [])
        if "x-delivery-limit" in (q.get("arguments") or {})
    }
    check(
        f"{defs}'s queues use the services' x-delivery-limit ({limit})",
        bool(limits) and all(str(v) == str(limit) for v in limits.values()),
        f"{limits}",
    )
    groups = {
        q["name"]: (q.get("arguments") or {}).get("x-quorum-initial-group-size")
        for q in definitions.get("queues", [])
        if (q.get("arguments") or {}).get("x-queue-type") == "quorum"
    }
    check(
        f"{defs}'s quorum queues have the services' x-quorum-initial-group-size ({group or 'unset'}; "
        "RabbitMQ refuses a redeclaration that differs)",
        bool(groups) and all(v == (group or None) for v in groups.values()),
        f"{groups}",
    )
    queues = {q.get("name"): q for q in definitions.get("queues", [])}
    results = sorted(n for n in queues if re.fullmatch(rf"{re.escape(prefix)}\.results\.\d+", n))
    check(
        f"{defs} has one results queue per shard ({shards})",
        results == sorted(f"{prefix}.results.{i}" for i in range(shards)),
        f"has {results}: regenerate with make_definitions.py --shards {shards}",
    )
    for model in worker_models:
        queue = queues.get(f"{prefix}.tasks.{model}") or {}
        kind = (queue.get("arguments") or {}).get("x-queue-type")
        check(
            f"{defs} declares {prefix}.tasks.{model} as a {coded} queue (NERCC_CODED_QUEUES)",
            kind == coded,
            f"x-queue-type {kind}" if queue else "missing",
        )

    # Broker permissions, with the topology as the services run it.
    for c in everyone:
        grant = getattr(c, "grant", None)
        if grant is None:
            continue
        user = c.broker[1]
        shard = as_int(role_setting(c, "NERCC_SHARD"), 0) if c.subcommand == "decoder" else 0
        needs = deploy.operations(c.subcommand, prefix, c.models or served or ["mnist-mlp"], shards, shard)
        lacking = sorted(f"{perm} {res}" for perm, res in needs if not deploy.permitted(grant.get(perm, ""), res))
        check(
            f"{c.name}: user '{user}' may make every declaration, publish and consume of `nercc {c.subcommand}`",
            not lacking,
            "missing: " + ", ".join(lacking),
        )
        excess = sorted(
            f"{perm} {res}"
            for perm, res in deploy.forbidden(c.subcommand, prefix)
            if deploy.permitted(grant.get(perm, ""), res)
        )
        if deploy.forbidden(c.subcommand, prefix):
            check(
                f"{c.name}: user '{user}' may not publish to the exchanges of the other services",
                not excess,
                "granted: " + ", ".join(excess),
            )
    brokers = {c.broker[0] for c in everyone if getattr(c, "broker", None)}
    check("every service connects to the same broker Service", len(brokers) == 1, f"{brokers}")
    broker_service = next(iter(next(iter(brokers)))) if len(brokers) == 1 else None
    vhosts = {c.broker[2] for c in everyone if getattr(c, "broker", None)}

    # Shared ConfigMaps: a variable whose meaning differs per subcommand must not be shared.
    takers = {}
    for c in everyone:
        for name in c.from_configmaps:
            takers.setdefault(name, set()).add(c.subcommand)
    for name, roles in sorted(takers.items()):
        keys = index["ConfigMap"].get(name) or {}
        if len(roles) < 2:
            continue
        unread = sorted(f"{k} ({r})" for k in keys for r in sorted(roles) if k not in help_env[r])
        differing = sorted(
            k for k in keys if len({help_env[r][k][1] for r in roles if k in help_env[r]}) > 1
        )
        check(
            f"ConfigMap {name}, taken whole by {', '.join(sorted(roles))}: every key is read by each of them",
            not unread,
            f"ignored by: {unread}",
        )
        check(
            f"ConfigMap {name}: holds no variable that means something else to each of {', '.join(sorted(roles))}",
            not differing,
            f"role-specific: {differing}",
        )

    # The authentication key.
    keyed = {}
    for c in by_role["encoder"] + by_role["decoder"]:
        for variable in AUTH_VARIABLES:
            value = c.env.get(variable)
            if value is not None:
                keyed[c.name] = (variable, value.kind, value.source, value.key)
    check(
        "every encoder and decoder has the authentication key (NERCC_AUTH_KEY or NERCC_AUTH_KEY_FILE)",
        len(keyed) == len(by_role["encoder"]) + len(by_role["decoder"]),
        f"keyed: {sorted(keyed)}",
    )
    check(
        "encoders and decoders take the key from one and the same Secret key",
        len(set(keyed.values())) == 1 and next(iter(keyed.values()))[1] == "Secret",
        f"{keyed}",
    )
    key_secrets = {v[2] for v in keyed.values() if v[1] == "Secret"}
    for c in by_role["worker"]:
        variables = sorted(v for v in AUTH_VARIABLES if v in c.env)
        refs = sorted(referenced_secrets(pod_spec(c.workload)) & key_secrets)
        check(
            f"{c.name}: the worker gets no authentication key (variables, or the Secret {sorted(key_secrets)})",
            not variables and not refs,
            f"variables {variables}, references to {refs}",
        )

    # Decoders: one active and at most one standby per shard, every shard served.
    per_shard = {}
    for c in by_role["decoder"]:
        workload = c.workload
        shard_value = c.env.get("NERCC_SHARD")
        shard = as_int(role_setting(c, "NERCC_SHARD"))
        literal = deploy.flag_value(c.arguments, "--shard") is not None or (
            shard_value is not None and shard_value.kind in ("literal", "ConfigMap")
        )
        check(
            f"{c.name}: NERCC_SHARD ({shard}) is set statically and in 0 ..< NERCC_SHARDS ({shards})",
            literal and shard is not None and 0 <= shard < shards,
        )
        replicas = as_int((workload.get("spec") or {}).get("replicas"), 1)
        surge = 0
        strategy = (workload.get("spec") or {}).get("strategy") or {}
        if workload.get("kind") == "Deployment" and strategy.get("type", "RollingUpdate") == "RollingUpdate":
            rolling = strategy.get("rollingUpdate") or {}
            surge = scaled(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            unavailable = scaled(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
            check(
                f"{c.name}: its rollout can proceed (maxSurge {surge} or maxUnavailable {unavailable} above 0)",
                surge > 0 or unavailable > 0,
            )
        check(
            f"{c.name}: {replicas} replica(s) plus a rollout surge of {surge}: at most an active decoder and "
            "one standby",
            replicas + surge <= 2,
            "a second standby could be activated on one of the shard's two queues and not on the other",
        )
        if shard is not None:
            per_shard[shard] = per_shard.get(shard, 0) + replicas
    for shard, count in sorted(per_shard.items()):
        check(f"shard {shard} has {count} decoder(s): an active one and at most one standby", 1 <= count <= 2)
    check(
        f"every shard 0 ..< {shards} has a decoder",
        set(per_shard) == set(range(shards)),
        f"decoders serve {sorted(per_shard)}",
    )

    # Workers.
    scaled_objects = by_kind.get("ScaledObject") or {}
    targets = {
        ((so.get("spec") or {}).get("scaleTargetRef") or {}).get("name"): so for so in scaled_objects.values()
    }
    worker_workloads = {c.workload["metadata"]["name"]: c for c in by_role["worker"]}
    for name, c in worker_workloads.items():
        if name in targets:
            check(
                f"{name}: no replicas field (KEDA sets the number of workers; an apply would reset it)",
                "replicas" not in (c.workload.get("spec") or {}),
            )
        worker_id = c.env.get("NERCC_WORKER_ID")
        check(
            f"{c.name}: no fixed NERCC_WORKER_ID (the default worker@<pod>:<pid> differs per pod; it names an "
            "exclusive queue)",
            deploy.flag_value(c.arguments, "--worker-id") is None and (worker_id is None or worker_id.kind == "field"),
        )

    # Disruption budgets.
    for name, pdb in sorted((by_kind.get("PodDisruptionBudget") or {}).items()):
        selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selected = [w for w in workloads if labels_match(selector, pod_labels(w))]
        check(f"PodDisruptionBudget {name} selects a workload", bool(selected), f"selector {selector}")
        spec = pdb.get("spec") or {}
        blocking = False
        for w in selected:
            replicas = as_int((w.get("spec") or {}).get("replicas"), None)
            if "maxUnavailable" in spec:
                blocking |= scaled(spec["maxUnavailable"], replicas or 100, round_up=True) < 1
            elif "minAvailable" in spec and replicas is not None:
                blocking |= scaled(spec["minAvailable"], replicas, round_up=True) >= replicas
        check(f"PodDisruptionBudget {name} allows an eviction (a node drain can proceed)", not blocking, f"{spec}")

    # --- KEDA --------------------------------------------------------------------------------------
    check(f"base: a KEDA ScaledObject targets the workers ({sorted(scaled_objects)})", bool(scaled_objects))
    keda_file = base_dir / "keda-scaledobject.yaml"
    check("base: keda-scaledobject.yaml exists and is listed", keda_file.resolve() in base["files"])
    prefetch = {c.name: as_int(role_setting(c, "NERCC_PREFETCH"), 0) for c in by_role["worker"]}
    n_values = [as_int(role_setting(c, "NERCC_WORKERS"), 0) for c in by_role["encoder"]]
    for so_name, so in sorted(scaled_objects.items()):
        spec = so.get("spec") or {}
        label = f"ScaledObject {so_name}"
        check(f"{label}: apiVersion keda.sh/v1alpha1", so.get("apiVersion") == "keda.sh/v1alpha1", so.get("apiVersion"))
        target = spec.get("scaleTargetRef") or {}
        check(
            f"{label}: scaleTargetRef names the worker Deployment ({target.get('name')})",
            target.get("name") in worker_workloads
            and target.get("kind", "Deployment") == "Deployment"
            and target.get("apiVersion", "apps/v1") == "apps/v1",
            f"workers: {sorted(worker_workloads)}",
        )
        minimum, maximum = as_int(spec.get("minReplicaCount"), 0), as_int(spec.get("maxReplicaCount"), 100)
        n = max(n_values) if n_values else 0
        check(
            f"{label}: minReplicaCount {minimum} >= N = {n} (a batch's tasks can go to different workers), "
            f"<= maxReplicaCount {maximum}",
            minimum >= n > 0 and minimum <= maximum,
        )
        triggers = [t for t in spec.get("triggers") or [] if t.get("type") == "rabbitmq"]
        expected = sorted(f"{prefix}.tasks.{m}" for m in worker_models)
        watched = sorted(str((t.get("metadata") or {}).get("queueName")) for t in triggers)
        check(
            f"{label}: its rabbitmq triggers watch the workers' task queues {expected} (<prefix>.tasks.<model name>)",
            bool(triggers) and watched == expected,
            f"queueName {watched}",
        )
        window = min(prefetch.values()) if prefetch else 0
        for t in triggers:
            meta = t.get("metadata") or {}
            queue = meta.get("queueName")
            check(
                f"{label}: trigger {queue}: mode QueueLength over protocol http, unacknowledged tasks included",
                meta.get("mode") == "QueueLength"
                and meta.get("protocol") == "http"
                and str(meta.get("excludeUnacknowledged", "false")).lower() != "true",
                f"mode {meta.get('mode')}, protocol {meta.get('protocol')}: over amqp only ready tasks count, and "
                "they stay near 0 until every worker's window is full",
            )
            try:
                value = float(str(meta.get("value")))
            except ValueError:
                value = 0
            check(
                f"{label}: trigger {queue}: value {meta.get('value')} tasks per worker is in 1 ..= the worker's "
                f"window (NERCC_PREFETCH {window})",
                1 <= value <= window,
            )
            check(
                f"{label}: trigger {queue}: vhostName {meta.get('vhostName')!r} is the services' vhost "
                f"{sorted(vhosts)}",
                len(vhosts) == 1 and meta.get("vhostName") in vhosts,
            )
            check(
                f"{label}: trigger {queue}: the host comes from a TriggerAuthentication, not the trigger",
                not meta.get("host") and not meta.get("hostFromEnv"),
            )
            auth_name = (t.get("authenticationRef") or {}).get("name")
            auth = (by_kind.get("TriggerAuthentication") or {}).get(auth_name)
            if not check(f"{label}: TriggerAuthentication {auth_name} exists in the base", auth is not None):
                continue
            refs = {r.get("parameter"): r for r in (auth.get("spec") or {}).get("secretTargetRef") or []}
            for parameter, ref in sorted(refs.items()):
                data_ = index["Secret"].get(ref.get("name"))
                check(
                    f"TriggerAuthentication {auth_name}: {parameter} from Secret {ref.get('name')} "
                    f"key {ref.get('key')} exists in the base",
                    data_ is not None and ref.get("key") in data_,
                )
            host_ref = refs.get("host")
            if not check(f"TriggerAuthentication {auth_name}: gives the host", host_ref is not None):
                continue
            host = (index["Secret"].get(host_ref.get("name")) or {}).get(host_ref.get("key"))
            if host is None:
                continue
            url = urllib.parse.urlsplit(host)
            keda_broker, keda_space = broker_of(url.hostname)
            check(
                f"TriggerAuthentication {auth_name}: the host is the management API (http, port 15672) of the broker "
                f"Service {broker_service}.{namespace} ({url.hostname}:{url.port})",
                url.scheme == "http"
                and url.port == 15672
                and keda_broker == broker_service
                and keda_space == namespace,
                "the KEDA operator resolves names from its own namespace: name the Service with the namespace",
            )
            user = urllib.parse.unquote(url.username or "")
            record = users.get(user) or {}
            grants = [
                g for g in definitions.get("permissions", []) if g.get("user") == user and g.get("vhost") in vhosts
            ]
            check(
                f"TriggerAuthentication {auth_name}: user '{user}' exists in {defs} with a management tag "
                "and permissions on the vhost",
                bool(record) and bool(set(record.get("tags") or []) & MANAGEMENT_TAGS) and bool(grants),
                f"tags {record.get('tags')}, grants {grants}",
            )

    # --- monitoring/ ------------------------------------------------------------------------------
    monitoring_dir = k8s / "monitoring"
    if monitoring_dir.is_dir():
        monitoring = load_kustomization(monitoring_dir, check, "monitoring", root, {base_dir.resolve(): base})
        listing_is_complete(monitoring_dir, monitoring, check, "monitoring")
        resources = [str(r) for r in monitoring["data"].get("resources") or []]
        check(
            "monitoring: builds on the base (resources include ../base)",
            any((monitoring_dir / r).resolve() == base_dir.resolve() for r in resources),
            f"resources {resources}",
        )
        role_pods = {c.subcommand: c for c in everyone}
        monitors = [
            d
            for f, d in monitoring["objects"]
            if f in {str(r) for r in resources} and d.get("kind") in ("PodMonitor", "ServiceMonitor")
        ]
        check("monitoring: has a PodMonitor or ServiceMonitor", bool(monitors))
        services = [d for _f, d in monitoring["objects"] if d.get("kind") == "Service"]
        for monitor in monitors:
            name = f"{monitor['kind']} {monitor['metadata']['name']}"
            check(
                f"{name}: apiVersion monitoring.coreos.com/v1",
                monitor.get("apiVersion") == "monitoring.coreos.com/v1",
            )
            spec = monitor.get("spec") or {}
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            spaces = ((spec.get("namespaceSelector") or {}).get("matchNames")) or [monitor["metadata"].get("namespace")]
            check(
                f"{name}: looks in the namespace {namespace}",
                namespace in spaces or monitoring["namespace"] == namespace,
            )
            endpoints = spec.get("podMetricsEndpoints") or spec.get("endpoints") or []
            if monitor["kind"] == "PodMonitor":
                for role, c in sorted(role_pods.items()):
                    check(
                        f"{name}: selects the {role} pods",
                        labels_match(selector, pod_labels(c.workload)),
                        f"{selector}",
                    )
                    port = as_int(role_setting(c, "NERCC_HTTP_PORT"), 0)
                    port_names = {
                        str(p.get("name")) for p in c.spec.get("ports") or [] if as_int(p.get("containerPort")) == port
                    }
                    check(
                        f"{name}: scrapes /metrics on the {role} pods' http port ({sorted(port_names)})",
                        any(e.get("port") in port_names and e.get("path", "/metrics") == "/metrics" for e in endpoints),
                        f"endpoints {endpoints}",
                    )
            else:
                matched = [s for s in services if labels_match(selector, (s.get("metadata") or {}).get("labels") or {})]
                check(f"{name}: selects a Service of the overlay", bool(matched), f"{selector}")
                for s in matched:
                    for role, c in sorted(role_pods.items()):
                        check(
                            f"{name}: Service {s['metadata']['name']} selects the {role} pods",
                            labels_match((s.get("spec") or {}).get("selector") or {}, pod_labels(c.workload)),
                        )
                check(
                    f"{name}: scrapes /metrics",
                    bool(endpoints) and all(e.get("path", "/metrics") == "/metrics" for e in endpoints),
                )

    return report.close()


if __name__ == "__main__":
    sys.exit(main())
