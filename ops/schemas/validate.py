#!/usr/bin/env python3
"""Validates nercc wire-format messages against the JSON Schemas in schemas/.

  python3 ops/schemas/validate.py [-v]
      Checks that every schemas/*.schema.json is a valid draft 2020-12 schema, that every example
      schemas/examples/<schema>.json (and every further one, schemas/examples/<schema>--<what>.json)
      passes its schema and the cross-field checks, and that every deliberately invalid example
      schemas/examples/invalid/<schema>--<what>.json is rejected.
      -v also prints why each invalid example was rejected.
      Examples whose name contains 'authenticated' (valid or invalid) must also carry the right
      tokens under the documented example key (EXAMPLE_KEY below), as --key checks them.

  python3 ops/schemas/validate.py --emitted DIR_OR_FILE [...]
      Validates captured messages: files named <schema>@<anything>.json (e.g. prediction@1.json,
      coded-task@3.json, batch-abandonment@2.json). JSON messages (request, batch-manifest,
      prediction, error-record, cancellation-notice, batch-abandonment, hedge-request) are their
      body; binary messages (coded-task, worker-result) are an envelope
      {"properties": {...}, "headers": {...}, "body_bytes": <int>, "body_base64": <optional>}.

  python3 ops/schemas/validate.py --emitted DIR_OR_FILE [...] --key FILE
      Also verifies the authentication tokens of the captured coded tasks and worker results
      under the key in FILE (the encoder's and decoder's --auth-key-file): x-nercc-token must be
      the task token of '<batch id>/<coded index>', and x-nercc-manifest-token, which must be
      present whenever x-nercc-manifest is, the token of the x-nercc-manifest string (schemas/README.md,
      "Authenticated tasks and results"; the token rule is ops/schemas/tokens.py). A missing or
      wrong token is a problem. JSON messages are captured as bodies only, so the tokens of
      manifests, abandonments and hedge requests (in their headers) are not checked.

Besides the schema, the cross-field checks that JSON Schema cannot express (schemas/README.md):
envelope body length = 4 x x-nercc-rows x product(x-nercc-shape), deterministic message ids, manifest members =
rows x scheme.batch_size, N and wait_for as the scheme implies, a hedge only on a batch any one result
decodes and only of tasks that exist, a resend only on an unhedged batch of bacc, nercc or nercc-ag
with results to spare, and the batch id rule, prediction class =
argmax of its outputs, timestamps of one clock in order, a manifest copy (x-nercc-manifest) on a
task or result that is a valid manifest of the message's batch (x-nercc-manifest-token only
beside it, which the envelope schemas say with dependentRequired), an abandonment's manifest that
passes the manifest checks (and the abandonment schema's copy of the manifest schema kept identical
to batch-manifest.schema.json), and a few more.

Exit status: 0 all good, 1 a problem was found (each is listed with file and JSON path),
2 usage error or jsonschema missing.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import struct
import sys
from pathlib import Path

try:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
except ImportError:
    print(
        "validate.py needs the Python package 'jsonschema' (4.x, draft 2020-12 support):\n"
        "    python3 -m pip install 'jsonschema>=4'\n"
        "or on Debian/Ubuntu: apt-get install python3-jsonschema",
        file=sys.stderr,
    )
    sys.exit(2)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokens import MINIMUM_KEY_BYTES, token  # noqa: E402  (ops/schemas/tokens.py, the token rule)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
EXAMPLES = SCHEMAS / "examples"
INVALID = EXAMPLES / "invalid"

# The wire-format messages; each must have a valid example and at least one invalid one.
WIRE_SCHEMAS = [
    "request", "batch-manifest", "prediction", "error-record", "coded-task", "worker-result", "cancellation-notice",
    "batch-abandonment", "hedge-request",
]
ENVELOPE_SCHEMAS = {"coded-task", "worker-result"}
DRAFT = "https://json-schema.org/draft/2020-12/schema"
# The key of the examples whose name contains 'authenticated' (schemas/README.md, "Authenticated
# tasks and results"): their tokens are real tokens under it. Never use it for a deployment.
EXAMPLE_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
MAXIMUM_KEY_BYTES = 4096


# --- helpers ----------------------------------------------------------------------------------


def json_path(path) -> str:
    """'$.headers["x-nercc-shape"]', '$.queries[0][2]'."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def schema_errors(validator: Draft202012Validator, instance) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{json_path(e.absolute_path)}: {shorten_message(e)}" for e in errors]


def shorten_message(error) -> str:
    # jsonschema quotes the whole instance; keep long arrays and objects out of the report.
    message = error.message
    if isinstance(error.instance, (list, dict)) and len(message) > 200:
        message = f"{short(error.instance)} fails '{error.validator}': {error.validator_value!r}"
    return message


# --- the deterministic batch id (ServingPipeline/ServingTopology.swift, StableHash) --------------

_MASK = (1 << 64) - 1


def fnv1a(text: str, seed: int = 0xCBF29CE484222325) -> int:
    h = seed
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) & _MASK
    return h


def stable_identifier(text: str) -> str:
    """32 hex digits: FNV-1a with two seeds, as StableHash.identifier."""
    return f"{fnv1a(text):016x}{fnv1a(text, 0x84222325CBF29CE4 ^ 0x9E3779B97F4A7C15):016x}"


def batch_id_of(members: list[dict]) -> str:
    key = "|".join(f"{m['request_id']}#{m['index']}#{'true' if m['padding'] else 'false'}" for m in members)
    return stable_identifier(key)


# --- cross-field checks (run only on messages that pass their schema) ------------------------


def check_request(msg: dict) -> list[str]:
    sizes = {len(q) for q in msg["queries"]}
    if len(sizes) > 1:
        return [f"$.queries: queries have different lengths {sorted(sizes)}; every query has the model's input size"]
    return []


# Schemes that interpolate between data and worker points: their decoder waits for N - S results.
INTERPOLATING = {"lcc", "bacc", "nercc", "nercc-ag"}


def minimum_results(name: str, k: int) -> int:
    """The fewest results the scheme can decode a batch of k slots from (CodedComputing.LinearCode)."""
    if name in ("uncoded", "replication", "parity", "lcc"):
        return k
    if name in ("nercc", "nercc-ag"):
        return 1 if k == 1 else 2
    return 1  # bacc


def check_batch_manifest(msg: dict) -> list[str]:
    problems = []
    scheme, members = msg["scheme"], msg["members"]
    name, n, k = scheme["name"], scheme["workers"], scheme["batch_size"]
    # The code is the batch's own (N_k, k): a partial batch has k < K slots, all real, unless the
    # encoder pads; either way there is one member per slot and row (rows: R, absent = 1).
    rows = msg.get("rows", 1)
    if len(members) != rows * k:
        problems.append(f"$.members: {len(members)} members for scheme.batch_size = {k} and rows = {rows}")
    if n < k:
        problems.append(f"$.scheme.workers: N = {n} < K = {k}")
    if name == "uncoded" and n != k:
        problems.append(f"$.scheme.workers: uncoded needs N = K, got N = {n}, K = {k}")
    if name == "replication":
        if "replicas" in scheme and n != scheme["replicas"] * k:
            problems.append(f"$.scheme.workers: replication needs N = r*K = {scheme['replicas'] * k}, got {n}")
        if "replicas" not in scheme and n % k == 0:
            problems.append(f"$.scheme.replicas: missing, though N = {n} is r*K for r = {n // k}"
                            " (only partial replication, K not dividing N, has no r)")
    if name == "parity" and n != k + -(-k // scheme["group_size"]):
        problems.append(f"$.scheme.workers: parity needs N = K + ceil(K/G) = {k + -(-k // scheme['group_size'])}, got {n}")
    wait_for, least = msg["wait_for"], minimum_results(name, k)
    if wait_for > n:
        problems.append(f"$.wait_for: {wait_for} > N = {n}")
    elif name in INTERPOLATING and wait_for < least:
        problems.append(f"$.wait_for: {wait_for} < {least}, the fewest results {name} decodes {k} slots from")
    elif name not in INTERPOLATING and wait_for != least:
        problems.append(f"$.wait_for: {name} waits for its minimum, K = {least}, got {wait_for}")
    if "stragglers" in scheme:
        s = scheme["stragglers"]
        if name in INTERPOLATING and wait_for != n - s:
            problems.append(f"$.scheme.stragglers: {name} waits for N - S = {n - s} results, but wait_for is {wait_for}")
        elif s > n - wait_for:
            problems.append(f"$.scheme.stragglers: S = {s} > N - wait_for = {n - wait_for}")
    adversaries = scheme.get("adversaries", 0)
    if adversaries > 0:
        # A robust decode: the spline check (nercc, nercc-ag) needs 2A + 3 results, ApproxIFER's
        # locator (bacc) 2(K + A) - 1, and a vote of copies (K = 1) 2A + 1.
        if name not in ("bacc", "nercc", "nercc-ag"):
            problems.append(f"$.scheme.adversaries: {adversaries} for {name}; only bacc, nercc and nercc-ag decode robustly")
        else:
            if k == 1:
                bound = 2 * adversaries + 1
            elif name == "bacc":
                bound = max(least + adversaries, 2 * (k + adversaries) - 1)
            else:
                bound = max(least + adversaries, 2 * adversaries + 3)
            if wait_for < bound:
                problems.append(f"$.scheme.adversaries: A = {adversaries} needs wait_for >= {bound}, got {wait_for}")
    hedge = msg.get("hedge")
    if hedge is not None:
        # Held-back copies (a hedged batch): only a batch any one result decodes, without rows, is
        # sent as its first task, and a vote of copies (one query, adversaries A > 0) as its first
        # A + 1; the others are tasks of its code (distinct: the schema's uniqueItems).
        tasks = hedge["tasks"]
        if len(tasks) >= n:
            problems.append(f"$.hedge.tasks: {len(tasks)} tasks held back of N = {n}; at least one is published at once")
        for i, task in enumerate(tasks):
            if task >= n:
                problems.append(f"$.hedge.tasks[{i}]: {task} >= N = {n}")
        vote = k == 1 and adversaries > 0 and name in ("bacc", "nercc", "nercc-ag")
        if vote and len(tasks) != n - adversaries - 1:
            problems.append(f"$.hedge.tasks: a vote of copies publishes A + 1 = {adversaries + 1} of its {n} copies"
                            f" at once and holds back the other {n - adversaries - 1}, not {len(tasks)}")
        if not vote and wait_for != 1:
            problems.append(f"$.hedge: a hedged batch decodes from any one result, but wait_for is {wait_for}")
        if not vote and len(tasks) != n - 1:
            problems.append(f"$.hedge.tasks: a hedged batch publishes one task and holds back the other {n - 1}, not {len(tasks)}")
        if rows != 1:
            problems.append(f"$.hedge: a batch of {rows} rows is never hedged")
        if len(hedge["queue"].encode("utf-8")) > 255:
            problems.append(f"$.hedge.queue: {len(hedge['queue'].encode('utf-8'))} bytes in UTF-8; a queue name has at most 255")
    resend = msg.get("resend")
    if resend is not None:
        # Tasks kept to be published again: only a batch of an approximate scheme with results to
        # spare, and never a hedged one (its copies are held back instead).
        if name not in ("bacc", "nercc", "nercc-ag"):
            problems.append(f"$.resend: {name} batches are never resent; only bacc, nercc and nercc-ag")
        if wait_for >= n:
            problems.append(f"$.resend: wait_for = {wait_for} leaves no result of N = {n} to spare")
        if hedge is not None:
            problems.append("$.resend: a hedged batch holds its copies back instead")
        if len(resend["queue"].encode("utf-8")) > 255:
            problems.append(f"$.resend.queue: {len(resend['queue'].encode('utf-8'))} bytes in UTF-8; a queue name has at most 255")
    if msg["deadline_ms"] < msg["created_ms"]:
        problems.append("$.deadline_ms: earlier than created_ms")
    encoded = msg.get("encoded_us")
    if encoded is not None:
        # Microseconds, taken just after created_ms (rounded to the millisecond) and before the deadline.
        if encoded < (msg["created_ms"] - 1) * 1000:
            problems.append(f"$.encoded_us: {encoded} is before created_ms in microseconds")
        elif encoded > msg["deadline_ms"] * 1000:
            problems.append(f"$.encoded_us: {encoded} is after deadline_ms in microseconds")
    for i, m in enumerate(members):
        if m["index"] >= m["request_queries"]:
            problems.append(f"$.members[{i}].index: {m['index']} >= request_queries {m['request_queries']}")
        if encoded is not None and m.get("received_us") is not None and m["received_us"] > encoded:
            problems.append(f"$.members[{i}].received_us: {m['received_us']} is after encoded_us {encoded} (one clock)")
    flags = [m["padding"] for m in members]
    if all(flags):
        problems.append("$.members: every slot is padding")
    elif True in flags and not all(flags[flags.index(True):]):
        problems.append("$.members: padding slots must come last")
    expected = batch_id_of(members)
    if msg["batch_id"] != expected:
        problems.append(f"$.batch_id: {msg['batch_id']} is not the batch id of these members ({expected})")
    return problems


def check_prediction(msg: dict) -> list[str]:
    problems = []
    preds = msg["predictions"]
    indices = [p["index"] for p in preds]
    if len(set(indices)) != len(indices):
        problems.append("$.predictions: an index appears more than once")
    if indices != sorted(indices):
        problems.append("$.predictions: not sorted by index")
    if len(preds) > msg["request_queries"]:
        problems.append(f"$.predictions: {len(preds)} predictions for a request of {msg['request_queries']} queries")
    sizes = {len(p["outputs"]) for p in preds}
    if len(sizes) > 1:
        problems.append(f"$.predictions: outputs have different lengths {sorted(sizes)}")
    for i, p in enumerate(preds):
        if p["index"] >= msg["request_queries"]:
            problems.append(f"$.predictions[{i}].index: {p['index']} >= request_queries {msg['request_queries']}")
        outputs = p["outputs"]
        best = max(range(len(outputs)), key=lambda j: (outputs[j], -j))  # the first largest
        if p["class"] != best:
            problems.append(f"$.predictions[{i}].class: {p['class']} is not the argmax of the outputs ({best})")
    if msg["status"] == "ok" and msg["received"] < msg["needed"]:
        problems.append(f"$.received: status ok with {msg['received']} < needed {msg['needed']} results")
    if msg["status"] == "degraded" and msg["received"] >= msg["needed"]:
        problems.append(f"$.received: status degraded with {msg['received']} >= needed {msg['needed']} results")
    n, k = msg.get("workers"), msg.get("batch_size")
    excluded = msg.get("excluded")
    if excluded is not None:
        if excluded != sorted(excluded):
            problems.append("$.excluded: not sorted")
        if n is not None and any(i >= n for i in excluded):
            problems.append(f"$.excluded: an index >= workers = {n}")
        if len(excluded) >= msg["received"]:
            problems.append(f"$.excluded: {len(excluded)} excluded of {msg['received']} results received")
    if k is not None and len(preds) > k:
        problems.append(f"$.predictions: {len(preds)} predictions from a batch of {k} slots")
    if n is not None:
        if k is not None and k > n:
            problems.append(f"$.batch_size: K = {k} > N = {n}")
        for field in ("received", "needed"):
            if msg[field] > n:
                problems.append(f"$.{field}: {msg[field]} > N = {n} tasks")
    timing = msg.get("timing") or {}
    # Stamps taken on one machine's clock are in order; across machines clocks may differ.
    # (manifest_received_us, when present, is the manifest message's arrival before the batch was
    # answered; a batch answered from a manifest copy has none.)
    for earlier, later, clock in (("received_us", "encoded_us", "encoder"),
                                  ("task_received_us", "result_sent_us", "worker"),
                                  ("manifest_received_us", "ready_us", "decoder"),
                                  ("ready_us", "decoded_us", "decoder")):
        if timing.get(earlier) is not None and timing.get(later) is not None and timing[earlier] > timing[later]:
            problems.append(f"$.timing.{later}: {timing[later]} is before {earlier} {timing[earlier]} ({clock} clock)")
    return problems


def check_manifest_copy(headers: dict, validators: dict, result: bool) -> list[str]:
    """The x-nercc-manifest header, when present: the manifest's JSON body as a string, which must be
    a valid manifest (schema and cross-field checks, the batch id rule included) of the message's
    batch. On a task it must also describe the task's code (N, K, scheme, deadline)."""
    copy = headers.get("x-nercc-manifest")
    where = '$.headers["x-nercc-manifest"]'
    if copy is None or "batch-manifest" not in validators:
        return []
    try:
        manifest = json.loads(copy)
    except ValueError as error:
        return [f"{where}: the manifest copy is not JSON ({error})"]
    errors = validate("batch-manifest", validators, manifest)
    if errors:
        return [f"{where}: the manifest copy is not a valid manifest: {e}" for e in errors]
    problems = []
    if manifest["batch_id"] != headers["x-nercc-batch-id"]:
        problems.append(
            f"{where}: the manifest copy is of batch {manifest['batch_id']}, the message of batch {headers['x-nercc-batch-id']}")
    if manifest.get("rows", 1) != headers.get("x-nercc-rows", 1):
        problems.append(
            f"{where}: the manifest copy's rows {manifest.get('rows', 1)} differs from x-nercc-rows {headers.get('x-nercc-rows', 1)}")
    if not result:
        scheme = manifest["scheme"]
        for header, value, field in (("x-nercc-workers", scheme["workers"], "scheme.workers"),
                                     ("x-nercc-batch-size", scheme["batch_size"], "scheme.batch_size"),
                                     ("x-nercc-scheme", scheme["name"], "scheme.name"),
                                     ("x-nercc-deadline-ms", manifest["deadline_ms"], "deadline_ms")):
            if headers[header] != value:
                problems.append(f"{where}: the manifest copy's {field} {short(value)} differs from {header} {short(headers[header])}")
    return problems


def check_batch_abandonment(msg: dict) -> list[str]:
    """The abandoned attempt's manifest: the manifest checks (the schema already holds it to the
    manifest schema), with their JSON paths under $.manifest."""
    return [f"$.manifest{p[1:]}" if p.startswith("$") else p for p in check_batch_manifest(msg["manifest"])]


def check_envelope(msg: dict, validators: dict, result: bool) -> list[str]:
    problems = check_manifest_copy(msg["headers"], validators, result)
    props, headers = msg["properties"], msg["headers"]
    shape = [int(d) for d in headers["x-nercc-shape"].split(",")]
    rows = headers.get("x-nercc-rows", 1)
    expected = 4 * rows * math.prod(shape)
    if msg["body_bytes"] != expected:
        problems.append(
            f"$.body_bytes: {msg['body_bytes']} bytes, but {rows} row(s) of shape {headers['x-nercc-shape']} of float32 need {expected}")
    batch, index = props["correlation_id"], headers["x-nercc-coded-index"]
    if headers["x-nercc-batch-id"] != batch:
        problems.append(f'$.headers["x-nercc-batch-id"]: {headers["x-nercc-batch-id"]} differs from correlation_id {batch}')
    message_id = f"{batch}/{index}/result" if result else f"{batch}/{index}"
    if props["message_id"] != message_id:
        problems.append(f"$.properties.message_id: {props['message_id']} is not {message_id}")
    if not result and index >= headers["x-nercc-workers"]:
        problems.append(f'$.headers["x-nercc-coded-index"]: {index} >= N = {headers["x-nercc-workers"]}')
    if not result and headers["x-nercc-batch-size"] > headers["x-nercc-workers"]:
        problems.append(f'$.headers["x-nercc-batch-size"]: K = {headers["x-nercc-batch-size"]} > N = {headers["x-nercc-workers"]}')
    received, sent = headers.get("x-nercc-received-us"), headers.get("x-nercc-sent-us")
    if result and isinstance(received, int) and isinstance(sent, int) and received > sent:
        problems.append(f'$.headers["x-nercc-sent-us"]: {sent} is before x-nercc-received-us {received} (worker clock)')
    if "body_base64" in msg:
        try:
            body = base64.b64decode(msg["body_base64"], validate=True)
        except (binascii.Error, ValueError) as error:
            return problems + [f"$.body_base64: not base64 ({error})"]
        if len(body) != msg["body_bytes"]:
            problems.append(f"$.body_base64: decodes to {len(body)} bytes, body_bytes says {msg['body_bytes']}")
        elif len(body) % 4 == 0:
            values = struct.unpack(f"<{len(body) // 4}f", body)
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None:
                problems.append(f"$.body_base64: float32 element {bad} is {values[bad]} (not finite)")
    return problems


def check_tokens(msg: dict, key_text: str) -> list[str]:
    """The authentication tokens of a coded task or worker result under the key: x-nercc-token is the
    task token of '<batch id>/<coded index>' (a result echoes its task's), and x-nercc-manifest-token,
    required beside x-nercc-manifest, the manifest token of that string."""
    headers, props = msg["headers"], msg["properties"]
    batch = headers.get("x-nercc-batch-id") or props["correlation_id"]
    task_id = f"{batch}/{headers['x-nercc-coded-index']}"
    problems = []
    where = '$.headers["x-nercc-token"]'
    found, expected = headers.get("x-nercc-token"), token(key_text, "nercc.task", task_id.encode("utf-8"))
    if found is None:
        problems.append(f"{where}: missing; under the key, the task token of {task_id} is {expected} "
                        "(without it, a decoder with the key dead-letters the result as bad-token)")
    elif found != expected:
        problems.append(f"{where}: {found} is not the task token of {task_id} under the key ({expected})")
    copy = headers.get("x-nercc-manifest")
    if copy is not None:
        where = '$.headers["x-nercc-manifest-token"]'
        found, expected = headers.get("x-nercc-manifest-token"), token(key_text, "nercc.manifest", copy.encode("utf-8"))
        if found is None:
            problems.append(f"{where}: missing beside x-nercc-manifest (a decoder with the key ignores the copy)")
        elif found != expected:
            problems.append(f"{where}: {found} is not the token of the x-nercc-manifest string under the key ({expected})")
    return problems


def key_id(key_text: str) -> str:
    """The key's fingerprint, as the services log it: the first 8 hex digits of its token of nothing
    for the purpose 'nercc.key-id'."""
    return token(key_text, "nercc.key-id", b"")[:8]


# Each takes the message and the schema validators by name (for what one message embeds in another).
CHECKS = {
    "request": lambda msg, validators: check_request(msg),
    "batch-manifest": lambda msg, validators: check_batch_manifest(msg),
    "prediction": lambda msg, validators: check_prediction(msg),
    "error-record": lambda msg, validators: [],
    "coded-task": lambda msg, validators: check_envelope(msg, validators, result=False),
    "worker-result": lambda msg, validators: check_envelope(msg, validators, result=True),
    "cancellation-notice": lambda msg, validators: [],
    "batch-abandonment": lambda msg, validators: check_batch_abandonment(msg),
    "hedge-request": lambda msg, validators: [],
}

# Schemas that carry a copy of the manifest schema: its type, required, additionalProperties and
# properties in $defs/manifest, and its $defs beside that (the schemas use no cross-file $ref).
MANIFEST_COPIES = ["batch-abandonment"]
MANIFEST_KEYS = ("type", "required", "additionalProperties", "properties")


def check_manifest_schema_copies(schemas: dict[str, dict]) -> list[str]:
    """Each copy of batch-manifest.schema.json must be the same as the original."""
    manifest = schemas.get("batch-manifest")
    if manifest is None:
        return []
    problems = []
    extra = set(manifest) - {"$schema", "$id", "title", "description", "$defs", *MANIFEST_KEYS}
    for name in MANIFEST_COPIES:
        schema = schemas.get(name)
        if schema is None:
            continue
        where = f"schemas/{name}.schema.json"
        defs = schema.get("$defs", {})
        if extra:
            problems.append(f"{where}: batch-manifest.schema.json has keywords its copy does not carry: {sorted(extra)}")
        copy = defs.get("manifest", {})
        for key in MANIFEST_KEYS:
            if copy.get(key) != manifest.get(key):
                problems.append(f"{where}: $.$defs.manifest.{key} differs from batch-manifest.schema.json")
        for key, value in manifest.get("$defs", {}).items():
            if defs.get(key) != value:
                problems.append(f"{where}: $.$defs.{key} differs from batch-manifest.schema.json")
    return problems


# --- driver -----------------------------------------------------------------------------------


def load_schemas(problems: list[str]) -> dict[str, Draft202012Validator]:
    validators, schemas = {}, {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        name = path.name[: -len(".schema.json")]
        rel = path.relative_to(REPO)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problems.append(f"{rel}: not JSON: {error}")
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            problems.append(f"{rel}: not a valid draft 2020-12 schema: {json_path(error.absolute_path)}: {error.message}")
            continue
        if schema.get("$schema") != DRAFT:
            problems.append(f"{rel}: $schema should be {DRAFT}")
        if schema.get("$id") != f"urn:nercc:schema:{name}:1":
            problems.append(f"{rel}: $id should be urn:nercc:schema:{name}:1, is {schema.get('$id')}")
        validators[name] = Draft202012Validator(schema)
        schemas[name] = schema
        for i, example in enumerate(schema.get("examples", [])):
            for error in schema_errors(validators[name], example):
                problems.append(f"{rel}: examples[{i}]: {error}")
    for name in WIRE_SCHEMAS:
        if name not in validators:
            problems.append(f"schemas/{name}.schema.json: missing or unusable")
    problems += check_manifest_schema_copies(schemas)
    return validators


def read_json(path: Path, problems: list[str]):
    try:
        return json.loads(path.read_text(encoding="utf-8")), True
    except (OSError, ValueError) as error:
        problems.append(f"{display(path)}: not JSON: {error}")
        return None, False


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def validate(name: str, validators: dict[str, Draft202012Validator], message, key: str | None = None) -> list[str]:
    """Schema errors, else the cross-field checks; with a key, also the tokens of a task or result."""
    errors = schema_errors(validators[name], message)
    if errors or name not in CHECKS:
        return errors
    problems = CHECKS[name](message, validators)
    if key is not None and name in ENVELOPE_SCHEMAS:
        problems += check_tokens(message, key)
    return problems


def example_key(path: Path) -> str | None:
    """The example key for examples whose name says they are authenticated, else none."""
    return EXAMPLE_KEY if "authenticated" in path.stem else None


def run_examples(verbose: bool) -> int:
    problems: list[str] = []
    validators = load_schemas(problems)
    passed = rejected = authenticated = 0
    covered_valid, covered_invalid = set(), set()
    for path in sorted(EXAMPLES.glob("*.json")):
        name = path.stem.partition("--")[0]
        if name not in validators:
            problems.append(f"{display(path)}: no schema named '{name}' (schemas/{name}.schema.json)")
            continue
        message, ok = read_json(path, problems)
        if not ok:
            continue
        covered_valid.add(name)
        key = example_key(path)
        if key is not None and name not in ENVELOPE_SCHEMAS:
            problems.append(f"{display(path)}: only coded tasks and worker results carry tokens the examples can check")
        errors = validate(name, validators, message, key)
        if errors:
            problems += [f"{display(path)}: {e}" for e in errors]
        else:
            passed += 1
            authenticated += key is not None
    for path in sorted(INVALID.glob("*.json")):
        name, sep, _ = path.stem.partition("--")
        if not sep:
            problems.append(f"{display(path)}: invalid examples are named <schema>--<what>.json")
            continue
        if name not in validators:
            problems.append(f"{display(path)}: no schema named '{name}'")
            continue
        message, ok = read_json(path, problems)
        if not ok:
            continue
        covered_invalid.add(name)
        errors = validate(name, validators, message, example_key(path))
        if errors:
            rejected += 1
            if verbose:
                print(f"rejected as expected: {display(path)}: " + "; ".join(errors))
        else:
            problems.append(f"{display(path)}: passes schema '{name}' and the cross-field checks but must be rejected")
    for name in WIRE_SCHEMAS:
        if name in validators and name not in covered_valid:
            problems.append(f"schemas/examples/{name}.json: missing (every message has an example)")
        if name in validators and name not in covered_invalid:
            problems.append(f"schemas/examples/invalid/{name}--*.json: missing (every message has an invalid example)")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"schemas: {len(validators)} schemas valid (draft 2020-12)")
    print(f"schemas: {passed} valid examples passed, {rejected} invalid examples rejected")
    print(f"schemas: {authenticated} authenticated examples carry the tokens of the example key (key id {key_id(EXAMPLE_KEY)})")
    if problems:
        print(f"schemas: FAILED with {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def run_emitted(paths: list[str], key: str | None = None) -> int:
    problems: list[str] = []
    validators = load_schemas(problems)
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix == ".json" and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{raw}: no such file or directory")
    counts: dict[str, int] = {}
    valid = invalid = verified = 0
    for path in files:
        name, sep, _ = path.name.partition("@")
        if not sep:
            problems.append(f"{display(path)}: captured messages are named <schema>@<anything>.json")
            invalid += 1
            continue
        if name not in validators:
            problems.append(f"{display(path)}: no schema named '{name}' (known: {', '.join(sorted(validators))})")
            invalid += 1
            continue
        message, ok = read_json(path, problems)
        if not ok:
            invalid += 1
            continue
        errors = validate(name, validators, message, key)
        if errors:
            invalid += 1
            problems += [f"{display(path)}: {e}" for e in errors]
        else:
            valid += 1
            counts[name] = counts.get(name, 0) + 1
            verified += key is not None and name in ENVELOPE_SCHEMAS
    if not files and not problems:
        problems.append("no <schema>@<anything>.json files found in " + ", ".join(paths))
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    by_schema = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"
    print(f"emitted: {valid} messages valid, {invalid} invalid (valid by schema: {by_schema})")
    if key is not None:
        print(f"emitted: {verified} coded tasks and worker results carry valid tokens (key id {key_id(key)})")
    if problems:
        print(f"emitted: FAILED with {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emitted", nargs="+", metavar="DIR_OR_FILE",
                        help="validate captured messages named <schema>@<anything>.json")
    parser.add_argument("--key", metavar="FILE",
                        help="with --emitted: verify the tokens of coded tasks and worker results under the key in FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="say why each invalid example was rejected")
    args = parser.parse_args()
    if args.key is not None and not args.emitted:
        parser.error("--key FILE needs --emitted (the examples are checked with the example key)")
    if args.emitted:
        key = None
        if args.key is not None:
            try:
                key = read_key(args.key)
            except (OSError, UnicodeDecodeError, ValueError) as error:
                print(f"--key: {error}", file=sys.stderr)
                return 2
        return run_emitted(args.emitted, key)
    return run_examples(args.verbose)


def read_key(path: str) -> str:
    """The key text of a key file, checked as the services check it (32 to 4,096 bytes without
    leading and trailing white space)."""
    text = Path(path).read_text(encoding="utf-8")
    size = len(text.strip().encode("utf-8"))
    if size < MINIMUM_KEY_BYTES:
        raise ValueError(f"the key in '{path}' has {size} bytes; it needs at least {MINIMUM_KEY_BYTES}")
    if size > MAXIMUM_KEY_BYTES:
        raise ValueError(f"the key in '{path}' has {size} bytes; the most accepted is {MAXIMUM_KEY_BYTES}")
    return text


if __name__ == "__main__":
    sys.exit(main())
