"""Unit tests of the nercc client that need no broker: validation, request encoding, answers and
error mapping. Run from clients/python: python -m unittest -v tests/test_unit.py"""

from __future__ import annotations

import json
import math
import time
import unittest
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pika

from nercc_client import (
    ERRORS_BY_CODE,
    AnswerTimeoutError,
    BadRequestError,
    BatchFailed,
    BatchTimeoutError,
    BrokerConnectionError,
    DecodeFailedError,
    ExpiredError,
    MalformedJsonError,
    NerccError,
    NonFiniteError,
    OverloadedError,
    OversizeError,
    PendingRequest,
    ProtocolError,
    RedeliveredError,
    RequestRejected,
    UnknownModelError,
    UnroutableError,
    UnsupportedVersionError,
    WrongShapeError,
    error_class,
)
from nercc_client.client import redact_url, split_urls
from nercc_client.wire import (
    FLOAT32_MAX,
    MAX_QUERIES,
    encode_request,
    normalize_queries,
    parse_error_record,
    parse_predictions,
    request_properties,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
HAVE_SCHEMAS = (SCHEMAS / "examples" / "prediction.json").is_file()

REJECTION_CODES = {
    "malformed-json": MalformedJsonError,
    "unsupported-version": UnsupportedVersionError,
    "unknown-model": UnknownModelError,
    "wrong-shape": WrongShapeError,
    "non-finite": NonFiniteError,
    "oversize": OversizeError,
    "bad-request": BadRequestError,
}
BATCH_CODES = {
    "timeout": BatchTimeoutError,
    "decode-failed": DecodeFailedError,
    "overloaded": OverloadedError,
    "unroutable": UnroutableError,
    "expired": ExpiredError,
    "redelivered": RedeliveredError,
}


class ValidationTests(unittest.TestCase):
    def assertInvalid(self, queries: Any, *fragments: str) -> None:
        with self.assertRaises(ValueError) as caught:
            normalize_queries(queries)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_valid_queries_come_back_as_lists(self) -> None:
        self.assertEqual(normalize_queries([[0.0, 1.5, -2]]), [[0, 1.5, -2]])
        self.assertEqual(normalize_queries(((1, 2), (3, 4))), [[1, 2], [3, 4]])
        self.assertEqual(normalize_queries(iter([range(3)])), [[0, 1, 2]])
        self.assertEqual(normalize_queries([[FLOAT32_MAX, -FLOAT32_MAX]]), [[FLOAT32_MAX, -FLOAT32_MAX]])

    def test_whole_values_are_written_as_integers(self) -> None:
        (row,) = normalize_queries([[0.0, 1.0, -3.0, 0.25, 2.0**30]])
        self.assertEqual([type(v) for v in row], [int, int, int, float, float])

    def test_empty_request(self) -> None:
        self.assertInvalid([], "empty", "1 to 10,000")

    def test_too_many_queries(self) -> None:
        self.assertInvalid([[0.0]] * (MAX_QUERIES + 1), "10001 queries", "at most 10,000")
        self.assertEqual(len(normalize_queries([[0.0]] * MAX_QUERIES)), MAX_QUERIES)

    def test_not_a_list_of_queries(self) -> None:
        self.assertInvalid("0.1,0.2", "list of queries")
        self.assertInvalid(3.5, "list of queries")
        self.assertInvalid({"queries": [[1.0]]}, "list of queries")

    def test_flat_query_gets_a_hint(self) -> None:
        self.assertInvalid([0.1, 0.2], "query 0 is not a list of numbers", "pass [query]")

    def test_empty_query(self) -> None:
        self.assertInvalid([[]], "query 0 is empty")

    def test_ragged_queries(self) -> None:
        self.assertInvalid([[1.0, 2.0], [1.0, 2.0], [1.0]], "query 2 has 1 values but query 0 has 2")

    def test_non_numeric_values(self) -> None:
        self.assertInvalid([[1.0, "2"]], "query 0, value 1 is not a number")
        self.assertInvalid([[1.0], [None]], "query 1, value 0 is not a number")
        self.assertInvalid([[True]], "not a number")
        self.assertInvalid([["abc"]], "not a number")

    def test_non_finite_values(self) -> None:
        self.assertInvalid([[math.nan]], "finite in float32")
        self.assertInvalid([[1.0, -math.inf]], "value 1", "finite in float32")
        self.assertInvalid([[1e39]], "finite in float32")


class EncodingTests(unittest.TestCase):
    def test_body_follows_the_request_schema(self) -> None:
        body = encode_request("req-1", "mnist-mlp", normalize_queries([[0.0, 0.5], [1.0, 0.25]]))
        self.assertEqual(
            json.loads(body),
            {"version": 1, "request_id": "req-1", "model": "mnist-mlp", "queries": [[0, 0.5], [1, 0.25]]},
        )
        self.assertNotIn(b" ", body)  # compact
        self.assertIn(b'"queries":[[0,0.5],[1,0.25]]', body)

    def test_float32_values_survive(self) -> None:
        value = 0.2549019753932953  # a float32 pixel of the MNIST test set
        (query,) = json.loads(encode_request("r", "m", normalize_queries([[value]])))["queries"]
        self.assertEqual(query, [value])

    def test_size_limit(self) -> None:
        queries = normalize_queries([[0.123456789] * 100] * 10)
        size = len(encode_request("r", "m", queries))
        self.assertEqual(len(encode_request("r", "m", queries, max_bytes=size)), size)
        with self.assertRaises(ValueError) as caught:
            encode_request("r", "m", queries, max_bytes=size - 1)
        self.assertIn(f"{size:,} bytes", str(caught.exception))
        self.assertIn("--max-request-bytes", str(caught.exception))

    def test_default_size_limit_is_16_mib(self) -> None:
        queries = normalize_queries([[0.1234567890123] * 784] * 1400)  # 16 bytes a value: 17.6 MB
        with self.assertRaises(ValueError):
            encode_request("r", "m", queries)
        self.assertGreater(len(encode_request("r", "m", queries, max_bytes=2**25)), 16 * 1024 * 1024)

    def test_model_name(self) -> None:
        for model in ("", None, 3):
            with self.assertRaises(ValueError):
                encode_request("r", model, [[1]])  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            encode_request("r", "m" * 256, [[1]])

    def test_properties(self) -> None:
        now = 1_732_287_453.118_25
        p = request_properties("req-1", "nercc.reply.x", user_id="client", timeout=2.5, now=now)
        self.assertEqual(p.content_type, "application/json")
        self.assertEqual(p.type, "nercc.request")
        self.assertEqual(p.message_id, "req-1")
        self.assertEqual(p.correlation_id, "req-1")
        self.assertEqual(p.reply_to, "nercc.reply.x")
        self.assertEqual(p.delivery_mode, 2)
        self.assertEqual(p.timestamp, 1_732_287_453)
        self.assertEqual(p.user_id, "client")
        self.assertIsNone(p.expiration)
        self.assertEqual(p.headers["x-nercc-version"], 1)
        self.assertIsInstance(p.headers["x-nercc-version"], int)
        self.assertEqual(p.headers["x-nercc-sent-us"], int(now * 1_000_000))
        self.assertEqual(p.headers["x-nercc-deadline-ms"], int(now * 1000) + 2500)

    def test_properties_without_timeout_or_user(self) -> None:
        p = request_properties("req-1", "q")
        self.assertNotIn("x-nercc-deadline-ms", p.headers)
        self.assertIsNone(p.user_id)
        self.assertAlmostEqual(p.headers["x-nercc-sent-us"] / 1e6, time.time(), delta=5)


def prediction_body(indices: List[int], request_queries: int, status: str = "ok", **extra: Any) -> bytes:
    record = {
        "version": 1,
        "request_id": "req-1",
        "model": "mnist-mlp",
        "batch_id": "631cdfdcfd70cfeea98fd370aea5ec1a",
        "status": status,
        "scheme": "nercc",
        "received": 9 if status == "ok" else 5,
        "needed": 9,
        "request_queries": request_queries,
        "predictions": [{"index": i, "outputs": [float(i), 0.0], "class": 0, "label": "0"} for i in indices],
    }
    record.update(extra)
    return json.dumps(record).encode()


@unittest.skipUnless(HAVE_SCHEMAS, "schemas/ of the repository not found")
class SchemaExampleTests(unittest.TestCase):
    def test_prediction_example(self) -> None:
        count, predictions = parse_predictions((SCHEMAS / "examples" / "prediction.json").read_bytes())
        self.assertEqual(count, 2)
        self.assertEqual([p.index for p in predictions], [0, 1])
        first = predictions[0]
        self.assertEqual(first.class_index, 4)
        self.assertEqual(first.label, "4")
        self.assertEqual(len(first.values), 10)
        self.assertEqual(first.class_index, max(range(10), key=first.values.__getitem__))
        self.assertEqual((first.status, first.degraded, first.scheme), ("ok", False, "nercc"))
        self.assertEqual((first.received, first.needed), (6, 6))
        self.assertEqual(first.request_id, "6f1c2a9e-3b7d-4e25-9a41-0d8e5c7b1f30")
        self.assertEqual(first.batch_id, "631cdfdcfd70cfeea98fd370aea5ec1a")
        self.assertEqual(first.timing["sent_us"], 1732287453118250)

    def test_robust_prediction_example(self) -> None:
        count, predictions = parse_predictions((SCHEMAS / "examples" / "prediction--robust.json").read_bytes())
        self.assertGreaterEqual(count, len(predictions))
        self.assertTrue(all(p.status in ("ok", "degraded") for p in predictions))

    def test_error_record_example(self) -> None:
        error = parse_error_record((SCHEMAS / "examples" / "error-record.json").read_bytes())
        self.assertIsInstance(error, WrongShapeError)
        self.assertIsInstance(error, RequestRejected)
        self.assertEqual(error.code, "wrong-shape")
        self.assertEqual(error.request_id, "3d9a7b10-5e2c-4c71-b0f4-9a6e2d8c4b52")
        self.assertEqual(error.message, "query 1 has 783 values; model 'mnist-mlp' takes 784")
        self.assertIsNone(error.batch_id)

    def test_every_documented_code_has_its_class(self) -> None:
        schema = json.loads((SCHEMAS / "error-record.schema.json").read_text())
        documented = set(schema["properties"]["code"]["examples"])
        self.assertEqual(documented, set(ERRORS_BY_CODE))


class ErrorMappingTests(unittest.TestCase):
    def record(self, code: str, **fields: Any) -> bytes:
        return json.dumps({"version": 1, "request_id": "req-1", "code": code, "message": f"about {code}", **fields}).encode()

    def test_rejection_codes(self) -> None:
        for code, cls in REJECTION_CODES.items():
            error = parse_error_record(self.record(code), {"x-nercc-version": 1})
            self.assertIs(type(error), cls, code)
            self.assertIsInstance(error, RequestRejected)
            self.assertIsInstance(error, NerccError)
            self.assertEqual((error.code, error.message, error.request_id), (code, f"about {code}", "req-1"))
            self.assertIs(error_class(code, batch=False), cls)

    def test_batch_codes(self) -> None:
        headers = {"x-nercc-version": 1, "x-nercc-batch-id": "631cdfdcfd70cfeea98fd370aea5ec1a", "x-nercc-model": "mnist-mlp"}
        for code, cls in BATCH_CODES.items():
            error = parse_error_record(self.record(code), headers)
            self.assertIs(type(error), cls, code)
            self.assertIsInstance(error, BatchFailed)
            self.assertEqual(error.batch_id, "631cdfdcfd70cfeea98fd370aea5ec1a")
            self.assertEqual(error.model, "mnist-mlp")

    def test_mapping_is_complete(self) -> None:
        self.assertEqual(dict(ERRORS_BY_CODE), {**REJECTION_CODES, **BATCH_CODES})
        for code, cls in ERRORS_BY_CODE.items():
            self.assertEqual(cls(code).code, code)

    def test_unknown_codes_are_failures(self) -> None:
        rejected = parse_error_record(self.record("brand-new"))
        self.assertIs(type(rejected), RequestRejected)
        self.assertEqual(rejected.code, "brand-new")
        failed = parse_error_record(self.record("brand-new"), {"x-nercc-batch-id": b"631cdfdcfd70cfeea98fd370aea5ec1a"})
        self.assertIs(type(failed), BatchFailed)
        self.assertEqual(failed.batch_id, "631cdfdcfd70cfeea98fd370aea5ec1a")

    def test_record_without_request_id_or_message(self) -> None:
        error = parse_error_record(json.dumps({"version": 1, "code": "oversize"}).encode())
        self.assertIsInstance(error, OversizeError)
        self.assertIsNone(error.request_id)
        self.assertEqual(error.message, "oversize")

    def test_not_an_error_record(self) -> None:
        for body in (b"not json", b"[1]", json.dumps({"version": 1, "message": "x"}).encode(), b"\xff"):
            with self.assertRaises(ProtocolError):
                parse_error_record(body)

    def test_text_and_flags(self) -> None:
        error = WrongShapeError("query 0 has 3 values", request_id="r")
        self.assertEqual(str(error), "wrong-shape: query 0 has 3 values (request r)")
        self.assertEqual(str(NerccError("plain")), "plain")
        self.assertTrue(OverloadedError("x").retryable and BatchTimeoutError("x").retryable)
        self.assertFalse(WrongShapeError("x").retryable or UnknownModelError("x").retryable)

    def test_client_errors(self) -> None:
        timeout = AnswerTimeoutError("nothing", request_id="r")
        self.assertIsInstance(timeout, TimeoutError)
        self.assertIsInstance(timeout, NerccError)
        self.assertIsNone(timeout.code)
        connection = BrokerConnectionError("down")
        self.assertIsInstance(connection, ConnectionError)
        self.assertIsNone(connection.code)
        with self.assertRaises(TimeoutError):
            raise timeout


class PredictionParsingTests(unittest.TestCase):
    def test_fields(self) -> None:
        count, (p,) = parse_predictions(prediction_body([1], 3, status="degraded", future_field={"x": 1}))
        self.assertEqual(count, 3)
        self.assertEqual((p.index, p.values, p.class_index, p.label), (1, [1.0, 0.0], 0, "0"))
        self.assertTrue(p.degraded)
        self.assertEqual((p.received, p.needed), (5, 9))
        self.assertEqual(dict(p.timing), {})

    def test_label_is_optional(self) -> None:
        record = json.loads(prediction_body([0], 1))
        del record["predictions"][0]["label"]
        _, (p,) = parse_predictions(json.dumps(record).encode())
        self.assertIsNone(p.label)

    def test_malformed(self) -> None:
        good = json.loads(prediction_body([0], 1))
        for key in ("request_queries", "status", "predictions", "batch_id"):
            broken = {k: v for k, v in good.items() if k != key}
            with self.assertRaises(ProtocolError, msg=key):
                parse_predictions(json.dumps(broken).encode())
        broken = json.loads(json.dumps(good))
        broken["predictions"][0]["outputs"] = ["a"]
        with self.assertRaises(ProtocolError):
            parse_predictions(json.dumps(broken).encode())
        with self.assertRaises(ProtocolError):
            parse_predictions(b"{")


class StubClient:
    """What a PendingRequest needs of its client, without a connection."""

    def __init__(self) -> None:
        self.forgotten: List[str] = []

    def _wait(self, finished: Callable[[], bool], deadline: Optional[float]) -> bool:
        return finished()

    def _forget(self, request_id: str) -> None:
        self.forgotten.append(request_id)


def properties(kind: str, message_id: str, headers: Optional[Dict[str, Any]] = None) -> pika.BasicProperties:
    return pika.BasicProperties(type=kind, message_id=message_id, correlation_id="req-1", headers=headers)


class PendingRequestTests(unittest.TestCase):
    def pending(self, queries: int) -> PendingRequest:
        return PendingRequest(StubClient(), "req-1", "mnist-mlp", queries, deadline=None)  # type: ignore[arg-type]

    def test_parts_are_assembled_in_order_and_repeats_dropped(self) -> None:
        pending = self.pending(3)
        pending._accept(properties("nercc.prediction", "req-1/b2"), prediction_body([2], 3))
        self.assertFalse(pending.done())
        pending._accept(properties("nercc.prediction", "req-1/b2"), prediction_body([2], 3))  # a repeat
        pending._accept(properties("nercc.prediction", "req-1/b1"), prediction_body([0, 1], 3))
        self.assertTrue(pending.done())
        self.assertEqual([p.index for p in pending.result()], [0, 1, 2])
        self.assertEqual(pending.values(), [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])

    def test_error_record_after_some_predictions(self) -> None:
        pending = self.pending(3)
        pending._accept(properties("nercc.prediction", "req-1/b1"), prediction_body([0], 3))
        record = json.dumps({"version": 1, "request_id": "req-1", "code": "timeout", "message": "deadline passed"}).encode()
        pending._accept(properties("nercc.error", "req-1/b2/error", {"x-nercc-batch-id": "b2" * 16}), record)
        self.assertTrue(pending.done())
        with self.assertRaises(BatchTimeoutError) as caught:
            pending.result()
        self.assertEqual(caught.exception.request_id, "req-1")
        self.assertEqual(caught.exception.model, "mnist-mlp")
        self.assertEqual(list(caught.exception.partial), [0])
        with self.assertRaises(BatchTimeoutError):  # the same error again
            pending.result()

    def test_inconsistent_answers_are_protocol_errors(self) -> None:
        pending = self.pending(2)
        pending._accept(properties("nercc.prediction", "req-1/b1"), prediction_body([0], 5))
        with self.assertRaises(ProtocolError):
            pending.result()
        pending = self.pending(2)
        pending._accept(properties("nercc.prediction", "req-1/b1"), prediction_body([2], 2))
        with self.assertRaises(ProtocolError):
            pending.result()

    def test_other_message_types_are_ignored(self) -> None:
        pending = self.pending(1)
        pending._accept(properties("nercc.cancel", "x"), b"{}")
        self.assertFalse(pending.done())

    def test_timeout(self) -> None:
        pending = self.pending(2)
        pending._accept(properties("nercc.prediction", "req-1/b1"), prediction_body([1], 2))
        with self.assertRaises(AnswerTimeoutError) as caught:
            pending.result(timeout=0)
        self.assertEqual(list(caught.exception.partial), [1])
        self.assertIn("1 of 2 predictions", str(caught.exception))


class UrlTests(unittest.TestCase):
    def test_split(self) -> None:
        self.assertEqual(split_urls("amqp://a/, amqp://b/"), ["amqp://a/", "amqp://b/"])
        self.assertEqual(split_urls(["amqp://a/"]), ["amqp://a/"])
        with self.assertRaises(ValueError):
            split_urls(" , ")

    def test_redact(self) -> None:
        self.assertEqual(redact_url("amqp://user:secret@host:5672/%2F"), "amqp://user:***@host:5672/%2F")
        self.assertEqual(redact_url("amqp://host/"), "amqp://host/")


if __name__ == "__main__":
    unittest.main()
