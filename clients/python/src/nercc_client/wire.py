"""The nercc wire format, version 1, as far as a client needs it (schemas/README.md §2.1, §2.5,
§2.6): building requests and reading predictions and error records. No I/O happens here."""

from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import pika

from .errors import NerccError, ProtocolError, error_class

__all__ = [
    "WIRE_VERSION",
    "MAX_QUERIES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "FLOAT32_MAX",
    "Prediction",
    "normalize_queries",
    "encode_request",
    "request_properties",
    "parse_predictions",
    "parse_error_record",
]

#: Wire-format major version: the ``version`` of every body, the ``x-nercc-version`` header.
WIRE_VERSION = 1
#: Most queries in one request (more is ``bad-request``).
MAX_QUERIES = 10_000
#: The encoder's default limit on a request body (``--max-request-bytes``); more is ``oversize``.
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: The largest finite float32; a query value beyond it is ``non-finite``.
FLOAT32_MAX = 3.4028234663852886e38

TYPE_REQUEST = "nercc.request"
TYPE_PREDICTION = "nercc.prediction"
TYPE_ERROR = "nercc.error"
CONTENT_TYPE_JSON = "application/json"
HEADER_VERSION = "x-nercc-version"
HEADER_SENT_US = "x-nercc-sent-us"
HEADER_DEADLINE_MS = "x-nercc-deadline-ms"
HEADER_BATCH_ID = "x-nercc-batch-id"
HEADER_MODEL = "x-nercc-model"

# Values of this magnitude or less that are whole are written as JSON integers ("0" rather than
# "0.0"), which keeps image-like queries small; every such integer is exact in float32.
_EXACT_INTEGER_LIMIT = 2**24

Number = Union[int, float]


@dataclass(frozen=True)
class Prediction:
    """The prediction for one query, as the decoder published it (``prediction.schema.json``).

    Attributes:
        index: the query's index in its request.
        values: the decoded model outputs (logits for the shipped classifiers).
        class_index: the argmax of ``values`` (the first, on ties): the predicted class.
        label: the name of that class, when the model names its classes, else ``None``.
        status: ``"ok"``, decoded from the results the scheme waits for, or ``"degraded"``,
            decoded from fewer (at the deadline, or after the straggler wait): approximate.
        scheme: the coding scheme of the batch (``"nercc"``, ``"uncoded"``, …).
        received: the worker results the decoder used.
        needed: the results the scheme waits for.
        request_id: the request.
        batch_id: the batch that answered the query.
        model: the model.
        timing: the batch's stage stamps, microseconds since the Unix epoch (``timing`` in
            schemas/README.md §2.5); empty when the decoder sent none.
    """

    index: int
    values: List[float]
    class_index: int
    label: Optional[str]
    status: str
    scheme: str
    received: int
    needed: int
    request_id: str
    batch_id: str
    model: str
    timing: Mapping[str, int] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        """Whether the prediction is approximate (``status == "degraded"``)."""
        return self.status == "degraded"


def _is_vector(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray, Mapping))


def normalize_queries(queries: Iterable[Iterable[Number]]) -> List[List[Number]]:
    """Checks queries against what the wire format accepts and returns them as lists of numbers.

    A request holds 1 to 10,000 queries, all of the same length (at least 1), of finite numbers
    that fit float32. Anything else raises ``ValueError`` naming the problem, before anything is
    published. Whole values of small magnitude come back as ``int`` (written ``0`` instead of
    ``0.0``); all others as ``float``. Whether the length is the model's input size only the
    encoder knows: it answers a wrong length with ``wrong-shape`` (:class:`WrongShapeError`).
    """
    if not _is_vector(queries):
        raise ValueError(f"queries must be a list of queries, each a list of numbers; got {type(queries).__name__}")
    rows = list(queries)
    if not rows:
        raise ValueError("queries is empty: a request needs 1 to 10,000 queries")
    if len(rows) > MAX_QUERIES:
        raise ValueError(f"{len(rows)} queries in one request; at most {MAX_QUERIES:,} (split them over several requests)")
    width: Optional[int] = None
    result: List[List[Number]] = []
    for i, query in enumerate(rows):
        if not _is_vector(query):
            hint = " (for a single query, pass [query])" if isinstance(query, numbers.Number) else ""
            raise ValueError(f"query {i} is not a list of numbers: got {type(query).__name__}{hint}")
        values: List[Number] = []
        for j, value in enumerate(query):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"query {i}, value {j} is not a number: {value!r}")
            x = float(value)
            if not math.isfinite(x) or abs(x) > FLOAT32_MAX:
                raise ValueError(f"query {i}, value {j} is {value!r}: every value must be finite in float32")
            values.append(int(x) if x.is_integer() and abs(x) <= _EXACT_INTEGER_LIMIT else x)
        if not values:
            raise ValueError(f"query {i} is empty")
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise ValueError(
                f"query {i} has {len(values)} values but query 0 has {width}: all queries of a request have the same length"
            )
        result.append(values)
    return result


def encode_request(
    request_id: str,
    model: str,
    queries: List[List[Number]],
    *,
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> bytes:
    """The JSON body of a request (``request.schema.json``) for already normalized queries.

    Raises ``ValueError`` when the body is larger than ``max_bytes`` (the encoder's
    ``--max-request-bytes``), which the encoder would reject as ``oversize``.
    """
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if len(model.encode("utf-8")) > 255:
        raise ValueError("model names longer than 255 bytes cannot be a routing key")
    body = json.dumps(
        {"version": WIRE_VERSION, "request_id": request_id, "model": model, "queries": queries},
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")
    if len(body) > max_bytes:
        raise ValueError(
            f"the request body would be {len(body):,} bytes, above the limit of {max_bytes:,} bytes "
            "(the encoder's --max-request-bytes): send the queries in several requests"
        )
    return body


def request_properties(
    request_id: str,
    reply_to: str,
    *,
    user_id: Optional[str] = None,
    timeout: Optional[float] = None,
    now: Optional[float] = None,
) -> pika.BasicProperties:
    """The AMQP properties of a request (schemas/README.md §2.1).

    ``message_id`` and ``correlation_id`` are the request id; answers come to ``reply_to``. With a
    ``timeout`` (seconds), the request carries ``x-nercc-deadline-ms``: past it the encoder answers
    ``expired`` instead of serving it, so that nothing is computed for a caller that has given up.
    ``user_id``, when given, must be the connection's broker user (the broker refuses another).
    """
    now = time.time() if now is None else now
    headers: Dict[str, Any] = {HEADER_VERSION: WIRE_VERSION, HEADER_SENT_US: int(now * 1_000_000)}
    if timeout is not None:
        headers[HEADER_DEADLINE_MS] = int(now * 1000 + timeout * 1000)
    return pika.BasicProperties(
        content_type=CONTENT_TYPE_JSON,
        type=TYPE_REQUEST,
        message_id=request_id,
        correlation_id=request_id,
        reply_to=reply_to,
        delivery_mode=2,
        timestamp=int(now),
        user_id=user_id,
        headers=headers,
    )


def _load_object(body: bytes, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ProtocolError(f"{what} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _int(record: Mapping[str, Any], key: str, what: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{what} has no integer '{key}'")
    return value


def _str(record: Mapping[str, Any], key: str, what: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{what} has no string '{key}'")
    return value


def parse_predictions(body: bytes) -> Tuple[int, List[Prediction]]:
    """Reads a prediction message body (``prediction.schema.json``).

    Returns ``request_queries`` (the number of queries of the whole request) and the predictions
    the message holds. Fields the schema does not know are ignored. Raises :class:`ProtocolError`
    when a required field is missing or has the wrong type.
    """
    what = "a prediction message"
    record = _load_object(body, what)
    request_queries = _int(record, "request_queries", what)
    status = _str(record, "status", what)
    scheme = _str(record, "scheme", what)
    received = _int(record, "received", what)
    needed = _int(record, "needed", what)
    request_id = _str(record, "request_id", what)
    batch_id = _str(record, "batch_id", what)
    model = _str(record, "model", what)
    raw_timing = record.get("timing")
    timing = (
        {k: v for k, v in raw_timing.items() if isinstance(v, int) and not isinstance(v, bool)}
        if isinstance(raw_timing, dict)
        else {}
    )
    items = record.get("predictions")
    if not isinstance(items, list):
        raise ProtocolError(f"{what} has no list 'predictions'")
    predictions: List[Prediction] = []
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError(f"{what} holds a prediction that is not an object")
        outputs = item.get("outputs")
        if not isinstance(outputs, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in outputs
        ):
            raise ProtocolError(f"{what} holds a prediction without numeric 'outputs'")
        label = item.get("label")
        predictions.append(
            Prediction(
                index=_int(item, "index", "a prediction"),
                values=[float(v) for v in outputs],
                class_index=_int(item, "class", "a prediction"),
                label=label if isinstance(label, str) else None,
                status=status,
                scheme=scheme,
                received=received,
                needed=needed,
                request_id=request_id,
                batch_id=batch_id,
                model=model,
                timing=timing,
            )
        )
    return request_queries, predictions


def parse_error_record(body: bytes, headers: Optional[Mapping[str, Any]] = None) -> NerccError:
    """The exception for an error record (``error-record.schema.json``).

    ``headers`` are the message's AMQP headers: a batch error record carries ``x-nercc-batch-id``
    (and ``x-nercc-model``), a rejection reply does not. Returns (does not raise) an instance of
    the class that :func:`nercc_client.errors.error_class` maps the code to; raises
    :class:`ProtocolError` when the body is not an error record.
    """
    what = "an error record"
    record = _load_object(body, what)
    code = _str(record, "code", what)
    message = record.get("message")
    request_id = record.get("request_id")
    headers = headers or {}
    batch_id = headers.get(HEADER_BATCH_ID)
    model = headers.get(HEADER_MODEL)
    if isinstance(batch_id, bytes):
        batch_id = batch_id.decode("utf-8", "replace")
    if isinstance(model, bytes):
        model = model.decode("utf-8", "replace")
    cls = error_class(code, batch=isinstance(batch_id, str))
    return cls(
        message if isinstance(message, str) and message else code,
        code=code,
        request_id=request_id if isinstance(request_id, str) else None,
        batch_id=batch_id if isinstance(batch_id, str) else None,
        model=model if isinstance(model, str) else None,
    )
