"""Live tests of the nercc client: a running broker with a decoder, an encoder of models/mnist-mlp
and workers under the topology prefix $NERCC_PYCLIENT_PREFIX (default pyclient), as
ops/checks/python_client.sh starts them.

Environment: NERCC_AMQP_URL (required; without it every test is skipped), NERCC_PYCLIENT_PREFIX,
NERCC_REPO_ROOT (for data/mnist; default: the repository holding this file), NERCC_MGMT_URL (the
management API, user guest: the least-privileged user test), NERCC_AMQPS_URL and
NERCC_AMQPS_CA_FILE (the TLS test). Run from clients/python: python -m unittest -v tests/test_live.py
"""

from __future__ import annotations

import array
import ast
import base64
import json
import os
import ssl
import struct
import sys
import time
import unittest
import urllib.request
import uuid
from pathlib import Path
from typing import Any, List, Optional, Tuple
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions

from nercc_client import (
    AnswerTimeoutError,
    BatchFailed,
    BrokerConnectionError,
    Client,
    ExpiredError,
    PublishError,
    RequestRejected,
    UnknownModelError,
    WrongShapeError,
)
from nercc_client.wire import encode_request, normalize_queries, parse_error_record, request_properties

URL = os.environ.get("NERCC_AMQP_URL", "")
PREFIX = os.environ.get("NERCC_PYCLIENT_PREFIX", "pyclient")
ROOT = Path(os.environ.get("NERCC_REPO_ROOT") or Path(__file__).resolve().parents[3])
MODEL = "mnist-mlp"
INPUT_SIZE, OUTPUT_SIZE = 784, 10
TIMEOUT = 30.0

_NPY_TYPES = {"<f4": "f", "<f8": "d", "|u1": "B", "|i1": "b", "<i4": "i", "<i8": "q"}


def read_npy(path: Path) -> Tuple[Tuple[int, ...], List[Any]]:
    """The shape and the flat values of a little-endian, C-order .npy file."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file")
    length, start = (struct.unpack_from("<H", data, 8)[0], 10) if data[6] == 1 else (struct.unpack_from("<I", data, 8)[0], 12)
    header = ast.literal_eval(data[start : start + length].decode("latin1"))
    if header["fortran_order"] or header["descr"] not in _NPY_TYPES:
        raise ValueError(f"{path}: unsupported layout {header}")
    values = array.array(_NPY_TYPES[header["descr"]])
    values.frombytes(data[start + length :])
    if sys.byteorder == "big":
        values.byteswap()
    return tuple(header["shape"]), values.tolist()


def mnist(start: int, count: int) -> Tuple[List[List[float]], List[int]]:
    """MNIST test images start..start+count-1 (784 floats each) and their labels."""
    shape, images = read_npy(ROOT / "data" / "mnist" / "test-images.npy")
    _, labels = read_npy(ROOT / "data" / "mnist" / "test-labels.npy")
    assert shape[1:] == (INPUT_SIZE,), shape
    rows = [images[i * INPUT_SIZE : (i + 1) * INPUT_SIZE] for i in range(start, start + count)]
    return rows, [int(v) for v in labels[start : start + count]]


def argmax(values: List[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def setUpModule() -> None:
    if not URL:
        raise unittest.SkipTest("NERCC_AMQP_URL is not set: no live system")


class Admin:
    """A plain pika connection for what the tests set up around the client."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(URL))
        self.channel = self.connection.channel()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class LiveTests(unittest.TestCase):
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = Client(URL, prefix=PREFIX)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    def test_mnist_predictions_match_the_labels(self) -> None:
        queries, labels = mnist(0, 20)
        predictions = self.client.predict_detailed(MODEL, queries, timeout=TIMEOUT)
        self.assertEqual(len(predictions), 20)
        for i, p in enumerate(predictions):
            self.assertEqual(p.index, i)
            self.assertEqual(len(p.values), OUTPUT_SIZE)
            self.assertEqual(p.class_index, argmax(p.values))
            self.assertEqual(p.label, str(p.class_index))  # the model names its classes "0".."9"
            self.assertIn(p.status, ("ok", "degraded"))
            self.assertEqual(p.model, MODEL)
            self.assertEqual(len(p.batch_id), 32)
        right = sum(p.class_index == label for p, label in zip(predictions, labels))
        self.assertGreaterEqual(right, 16, f"{right}/20 right: {[p.class_index for p in predictions]} vs {labels}")

    def test_predict_returns_plain_vectors(self) -> None:
        queries, labels = mnist(20, 3)
        outputs = self.client.predict(MODEL, queries, timeout=TIMEOUT)
        self.assertEqual([len(v) for v in outputs], [OUTPUT_SIZE] * 3)
        self.assertTrue(all(isinstance(x, float) for v in outputs for x in v))

    def test_predict_many_answers_in_order(self) -> None:
        queries, labels = mnist(100, 100)
        requests, expected, start = [], [], 0
        for i in range(50):  # requests of 1, 2 or 3 queries
            size = 1 + i % 3
            requests.append(queries[start : start + size] if start + size <= 100 else queries[:size])
            expected.append(labels[start : start + size] if start + size <= 100 else labels[:size])
            start = (start + size) % 100
        began = time.monotonic()
        answers = self.client.predict_many(MODEL, requests, timeout=TIMEOUT)
        elapsed = time.monotonic() - began
        self.assertEqual(len(answers), 50)
        right = total = 0
        for request, answer, truth in zip(requests, answers, expected):
            self.assertEqual(len(answer), len(request))
            for outputs, label in zip(answer, truth):
                self.assertEqual(len(outputs), OUTPUT_SIZE)
                right += argmax(outputs) == label
                total += 1
        self.assertGreaterEqual(right / total, 0.8, f"{right}/{total} right after {elapsed:.2f} s")

    def test_submit_handles_are_read_in_any_order(self) -> None:
        queries, labels = mnist(300, 6)
        handles = [self.client.submit(MODEL, [q], timeout=TIMEOUT) for q in queries]
        self.assertEqual(len({h.request_id for h in handles}), 6)
        results = [h.result() for h in reversed(handles)][::-1]
        for handle, (prediction,) in zip(handles, results):
            self.assertEqual(prediction.request_id, handle.request_id)
            self.assertEqual(len(prediction.values), OUTPUT_SIZE)
        right = sum(r[0].class_index == label for r, label in zip(results, labels))
        self.assertGreaterEqual(right, 5)
        self.assertEqual(handles[0].result()[0], results[0][0])  # asked again: the same answer

    def test_unknown_model_is_rejected(self) -> None:
        handle = self.client.submit("no-such-model", [[0.0] * INPUT_SIZE], timeout=TIMEOUT)
        with self.assertRaises(UnknownModelError) as caught:
            handle.result()
        error = caught.exception
        self.assertIsInstance(error, RequestRejected)
        self.assertEqual(error.code, "unknown-model")
        self.assertEqual(error.request_id, handle.request_id)
        self.assertIn("no-such-model", error.message)
        self.assertIsNone(error.batch_id)  # a rejection reply, not a batch error record

    def test_wrong_query_length_is_rejected(self) -> None:
        queries, _ = mnist(0, 1)
        with self.assertRaises(WrongShapeError) as caught:
            self.client.predict(MODEL, [queries[0][:-1]], timeout=TIMEOUT)  # 783 values
        error = caught.exception
        self.assertEqual(error.code, "wrong-shape")
        self.assertIn(str(INPUT_SIZE), error.message)
        self.assertIn(str(INPUT_SIZE - 1), error.message)

    def test_batch_error_record_of_an_expired_request(self) -> None:
        # The client always sends a deadline in the future; a request past its x-nercc-deadline-ms
        # is answered `expired` with a batch error record (schemas/README.md §2.1, "Expiry").
        admin = Admin()
        try:
            queue = f"{PREFIX}.reply.{uuid.uuid4()}"
            admin.channel.queue_declare(queue, exclusive=True, auto_delete=True)
            request_id = str(uuid.uuid4())
            body = encode_request(request_id, MODEL, normalize_queries([[0.0] * INPUT_SIZE] * 2))
            properties = request_properties(request_id, queue, timeout=-1.0)
            admin.channel.confirm_delivery()
            admin.channel.basic_publish(f"{PREFIX}.requests", MODEL, body, properties, mandatory=True)
            for method, answer, payload in admin.channel.consume(queue, auto_ack=True, inactivity_timeout=TIMEOUT):
                self.assertIsNotNone(method, "no answer")
                break
            admin.channel.cancel()
        finally:
            admin.close()
        self.assertEqual((answer.type, answer.correlation_id), ("nercc.error", request_id))
        error = parse_error_record(payload, answer.headers)
        self.assertIsInstance(error, ExpiredError)
        self.assertIsInstance(error, BatchFailed)
        self.assertEqual((error.code, error.request_id, error.model), ("expired", request_id, MODEL))
        self.assertEqual(len(error.batch_id or ""), 32)

    def test_invalid_input_never_reaches_the_broker(self) -> None:
        for queries in ([], [[0.0] * 3, [0.0] * 4], [["x"] * INPUT_SIZE], [[float("nan")] * INPUT_SIZE]):
            with self.assertRaises(ValueError):
                self.client.predict(MODEL, queries, timeout=TIMEOUT)
        with self.assertRaises(ValueError):
            self.client.predict_many(MODEL, [[[0.0] * INPUT_SIZE], []], timeout=TIMEOUT)

    def test_context_manager_closes_the_connection(self) -> None:
        with Client(URL, prefix=PREFIX) as client:
            queue = client.reply_queue
            self.assertIsNotNone(queue)
            self.assertTrue(queue.startswith(f"{PREFIX}.reply."))
            self.assertEqual(len(client.predict(MODEL, [[0.0] * INPUT_SIZE], timeout=TIMEOUT)[0]), OUTPUT_SIZE)
        self.assertIsNone(client.reply_queue)
        admin = Admin()
        try:
            with self.assertRaises(pika.exceptions.ChannelClosedByBroker) as caught:
                admin.channel.queue_declare(queue, passive=True)
            self.assertEqual(caught.exception.reply_code, 404)  # the broker deleted the reply queue
        finally:
            admin.close()

    def test_url_list_tries_each_broker(self) -> None:
        dead = "amqp://guest:secret-password@127.0.0.1:1/"
        with Client(f"{dead},{URL}", prefix=PREFIX) as client:
            self.assertEqual(len(client.predict(MODEL, [[0.0] * INPUT_SIZE], timeout=TIMEOUT)), 1)
        with self.assertRaises(BrokerConnectionError) as caught:
            Client(f"{dead}, amqp://guest:secret-password@127.0.0.1:2/", prefix=PREFIX)
        self.assertIn("127.0.0.1:1", str(caught.exception))
        self.assertIn("127.0.0.1:2", str(caught.exception))
        self.assertNotIn("secret-password", str(caught.exception))


class NoSystemTests(unittest.TestCase):
    """Prefixes where no nercc system runs: what the broker does with the request decides."""

    def setUp(self) -> None:
        self.prefix = f"{PREFIX}-void-{uuid.uuid4().hex[:8]}"
        self.exchange = f"{self.prefix}.requests"
        self.admin = Admin()

    def tearDown(self) -> None:
        try:
            self.admin.channel.queue_delete(f"{self.exchange}.{MODEL}")
            self.admin.channel.exchange_delete(self.exchange)
        finally:
            self.admin.close()

    def bind_idle_queue(self) -> None:
        """A requests exchange with a queue for the model that nobody consumes."""
        self.admin.channel.exchange_declare(self.exchange, "direct", auto_delete=False, durable=False)
        self.admin.channel.queue_declare(f"{self.exchange}.{MODEL}", durable=False)
        self.admin.channel.queue_bind(f"{self.exchange}.{MODEL}", self.exchange, routing_key=MODEL)

    def test_no_answer_in_time_is_a_timeout(self) -> None:
        self.bind_idle_queue()
        with Client(URL, prefix=self.prefix) as client:
            began = time.monotonic()
            with self.assertRaises(AnswerTimeoutError) as caught:
                client.predict(MODEL, [[0.0] * INPUT_SIZE], timeout=1.0)
            elapsed = time.monotonic() - began
        self.assertIsInstance(caught.exception, TimeoutError)
        self.assertIsNone(caught.exception.code)
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 5.0)

    def test_missing_exchange_is_a_publish_error_and_the_client_recovers(self) -> None:
        with Client(URL, prefix=self.prefix) as client:
            with self.assertRaises(PublishError) as caught:
                client.predict(MODEL, [[0.0] * INPUT_SIZE], timeout=TIMEOUT)
            self.assertIn("does not exist", caught.exception.message)
            self.bind_idle_queue()
            handle = client.submit(MODEL, [[0.0] * INPUT_SIZE], timeout=TIMEOUT)  # a new channel
            with self.assertRaises(AnswerTimeoutError):
                handle.result(timeout=0.2)

    def test_returned_request_is_a_publish_error(self) -> None:
        self.admin.channel.exchange_declare(self.exchange, "direct", auto_delete=False, durable=False)
        with Client(URL, prefix=self.prefix) as client:
            with self.assertRaises(PublishError) as caught:
                client.predict(MODEL, [[0.0] * INPUT_SIZE], timeout=TIMEOUT)
            self.assertIn("unroutable", caught.exception.message)


def management(method: str, path: str, body: Optional[dict] = None) -> Any:
    """A call to the broker's management API (NERCC_MGMT_URL, user guest); its JSON answer, if any."""
    request = urllib.request.Request(
        os.environ["NERCC_MGMT_URL"].rstrip("/") + "/api/" + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


@unittest.skipUnless(os.environ.get("NERCC_MGMT_URL"), "NERCC_MGMT_URL is not set")
class ReconnectTests(unittest.TestCase):
    def test_connection_closed_by_the_broker(self) -> None:
        name = f"{PREFIX}-reconnect-{uuid.uuid4().hex[:8]}"
        query = [[0.0] * INPUT_SIZE]
        with Client(URL, prefix=PREFIX, connection_name=name) as client:
            self.assertEqual(len(client.predict(MODEL, query, timeout=TIMEOUT)), 1)
            first_queue = client.reply_queue
            closed = False
            for _ in range(100):  # the management API lists a new connection within moments
                for connection in management("GET", "connections"):
                    if (connection.get("client_properties") or {}).get("connection_name") == name:
                        management("DELETE", "connections/" + quote(connection["name"], safe=""))
                        closed = True
                if closed:
                    break
                time.sleep(0.1)
            self.assertTrue(closed, "the connection did not show up in the management API")
            time.sleep(0.5)
            self.assertEqual(len(client.predict(MODEL, query, timeout=TIMEOUT)), 1)  # connects again
            self.assertNotEqual(client.reply_queue, first_queue)
        with self.assertRaises(BrokerConnectionError):  # closed by the caller: no reconnection
            client.predict(MODEL, query, timeout=TIMEOUT)


@unittest.skipUnless(os.environ.get("NERCC_MGMT_URL"), "NERCC_MGMT_URL is not set")
class LeastPrivilegeTests(unittest.TestCase):
    """A broker user with only a client's permissions (ops/rabbitmq/definitions.json's `client`,
    under this prefix) can use the client, whose requests carry its user_id."""

    api = staticmethod(management)

    def setUp(self) -> None:
        self.user, password = f"{PREFIX}-client-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        escaped = PREFIX.replace(".", r"\.")
        self.api("PUT", f"users/{self.user}", {"password": password, "tags": ""})
        self.api(
            "PUT",
            f"permissions/%2F/{self.user}",
            {
                "configure": rf"^{escaped}\.reply\.",
                "write": rf"^{escaped}\.requests$|^{escaped}\.reply\.",
                "read": rf"^{escaped}\.reply\.|^{escaped}\.predictions$",
            },
        )
        parts = urlsplit(URL)
        self.url = parts._replace(netloc=f"{quote(self.user)}:{password}@{parts.hostname}:{parts.port}").geturl()
        self.services_user = parts.username or "guest"

    def tearDown(self) -> None:
        self.api("DELETE", f"users/{self.user}")

    def test_client_user(self) -> None:
        queries, labels = mnist(500, 4)
        with Client(self.url, prefix=PREFIX) as client:
            outputs = client.predict(MODEL, queries, timeout=TIMEOUT)
        self.assertGreaterEqual(sum(argmax(v) == label for v, label in zip(outputs, labels)), 3)

    def test_trusted_users(self) -> None:
        query = [[0.0] * INPUT_SIZE]
        with Client(self.url, prefix=PREFIX, trusted_users={self.services_user}) as client:
            self.assertEqual(len(client.predict(MODEL, query, timeout=TIMEOUT)), 1)
        with Client(self.url, prefix=PREFIX, trusted_users={"someone-else"}) as client:
            with self.assertRaises(AnswerTimeoutError):  # answers from other users are dropped
                client.predict(MODEL, query, timeout=2.0)


@unittest.skipUnless(
    os.environ.get("NERCC_AMQPS_URL") and os.environ.get("NERCC_AMQPS_CA_FILE"), "NERCC_AMQPS_URL is not set"
)
class TlsTests(unittest.TestCase):
    def test_amqps(self) -> None:
        context = ssl.create_default_context(cafile=os.environ["NERCC_AMQPS_CA_FILE"])
        queries, labels = mnist(600, 2)
        with Client(os.environ["NERCC_AMQPS_URL"], prefix=PREFIX, ssl_context=context) as client:
            outputs = client.predict(MODEL, queries, timeout=TIMEOUT)
        self.assertEqual([len(v) for v in outputs], [OUTPUT_SIZE] * 2)


if __name__ == "__main__":
    unittest.main()
