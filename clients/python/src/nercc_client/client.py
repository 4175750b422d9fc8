"""The nercc client: publish requests, collect their predictions (schemas/README.md §5)."""

from __future__ import annotations

import os
import socket
import ssl
import time
import uuid
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Type, Union
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .errors import AnswerTimeoutError, BrokerConnectionError, NerccError, ProtocolError, PublishError
from .wire import (
    DEFAULT_MAX_REQUEST_BYTES,
    TYPE_ERROR,
    TYPE_PREDICTION,
    Number,
    Prediction,
    encode_request,
    normalize_queries,
    parse_error_record,
    parse_predictions,
    request_properties,
)

__all__ = ["Client", "PendingRequest", "DEFAULT_URL", "split_urls", "redact_url"]

#: The broker URL of a local development system.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

Queries = Iterable[Iterable[Number]]


def split_urls(url: Union[str, Sequence[str]]) -> List[str]:
    """The broker URLs of ``url``: a comma-separated string or a sequence of URLs."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in parts if u.strip()]
    if not urls:
        raise ValueError("no broker URL given")
    return urls


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


class PendingRequest:
    """A request that has been published: its answers are collected as they arrive.

    Get it from :meth:`Client.submit`. :meth:`result` and :meth:`values` wait for the answers by
    running the client's connection, so call them on the thread that uses the client.
    """

    def __init__(self, client: "Client", request_id: str, model: str, queries: int, deadline: Optional[float]) -> None:
        self._client = client
        #: The request id: the body's ``request_id``, the AMQP ``message_id`` and ``correlation_id``.
        self.request_id = request_id
        #: The model.
        self.model = model
        #: The number of queries.
        self.queries = queries
        self._deadline = deadline
        self._predictions: Dict[int, Prediction] = {}
        self._seen: Set[str] = set()
        self._error: Optional[NerccError] = None

    def done(self) -> bool:
        """Whether every query has its prediction, or an error has arrived."""
        return self._error is not None or len(self._predictions) == self.queries

    def _fail(self, error: NerccError) -> None:
        if not self.done():
            if error.request_id is None:
                error.request_id = self.request_id
            if error.model is None:
                error.model = self.model
            error.partial = dict(self._predictions)
            self._error = error

    def _accept(self, properties: pika.BasicProperties, body: bytes) -> None:
        """Takes one answer (a prediction message or an error record) for this request."""
        if self.done():
            return
        message_id = properties.message_id
        if message_id is not None:
            if message_id in self._seen:
                return  # a repeat (answers are delivered at least once, §2.5)
            self._seen.add(message_id)
        try:
            if properties.type == TYPE_ERROR:
                self._fail(parse_error_record(body, properties.headers))
            elif properties.type == TYPE_PREDICTION:
                request_queries, predictions = parse_predictions(body)
                if request_queries != self.queries:
                    raise ProtocolError(f"a prediction message says the request has {request_queries} queries, not {self.queries}")
                for p in predictions:
                    if not 0 <= p.index < self.queries:
                        raise ProtocolError(f"a prediction message answers query {p.index} of a request of {self.queries}")
                    self._predictions.setdefault(p.index, p)
        except ProtocolError as error:
            self._fail(error)

    def result(self, timeout: Optional[float] = None) -> List[Prediction]:
        """The predictions of the request's queries, in query order.

        Waits at most ``timeout`` seconds, or, when ``None``, until the timeout given to
        :meth:`Client.submit`. Raises the request's :class:`NerccError` subclass when an error
        record arrived (its ``partial`` holds the predictions that came before), and
        :class:`AnswerTimeoutError` when the answers are not complete in time. Calling it again
        after it returned gives the same predictions.
        """
        deadline = self._deadline if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self.done():
            self._client._wait(self.done, deadline)
        if self._error is not None:
            self._client._forget(self.request_id)
            raise self._error
        if not self.done():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._client._forget(self.request_id)
            error = AnswerTimeoutError(
                f"{len(self._predictions)} of {self.queries} predictions arrived in time",
                request_id=self.request_id,
                model=self.model,
            )
            error.partial = dict(self._predictions)
            raise error
        self._client._forget(self.request_id)
        return [self._predictions[i] for i in range(self.queries)]

    def values(self, timeout: Optional[float] = None) -> List[List[float]]:
        """The outputs of each query, in query order: :meth:`result` without the details."""
        return [p.values for p in self.result(timeout)]

    def __repr__(self) -> str:
        state = "failed" if self._error else "done" if self.done() else "pending"
        return f"<PendingRequest {self.request_id} {self.model} {len(self._predictions)}/{self.queries} {state}>"


class Client:
    """A connection to a nercc system. Publishes inference requests and collects their answers.

    ``url`` is a broker URL (``amqp://user:password@host:port/vhost`` or ``amqps://…``), several
    separated by commas, or a sequence of URLs: each is tried in turn until one connects.
    ``prefix`` is the topology prefix of the system (the services' ``--topology-prefix``, default
    ``nercc``): requests go to ``<prefix>.requests``, and answers come back on a private reply
    queue ``<prefix>.reply.<uuid>``, which the broker deletes with the connection.

    ``trusted_users``, when given, are the broker users whose answers count (the user names of the
    deployment's decoders and encoders; the broker checks an answer's ``user_id``); answers from
    any other user are dropped as forgeries. ``ssl_context`` is used for ``amqps://`` URLs (e.g. to
    trust a private CA). ``max_request_bytes`` is the encoder's ``--max-request-bytes``: larger
    requests raise ``ValueError`` before they are published.

    A client is not thread-safe (pika's ``BlockingConnection`` is not): use it, and the
    :class:`PendingRequest` objects it returns, from one thread; give each thread its own client.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]] = DEFAULT_URL,
        *,
        prefix: str = "nercc",
        trusted_users: Optional[Iterable[str]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        blocked_connection_timeout: float = 30.0,
        connection_name: Optional[str] = None,
    ) -> None:
        if not prefix:
            raise ValueError("prefix must be a non-empty string")
        self.urls = split_urls(url)
        self.prefix = prefix
        self.trusted_users = None if trusted_users is None else frozenset(trusted_users)
        self.max_request_bytes = max_request_bytes
        self._ssl_context = ssl_context
        self._blocked_timeout = blocked_connection_timeout
        self._name = connection_name or f"nercc-client@{socket.gethostname()}:{os.getpid()}"
        self._connection: Optional[pika.BlockingConnection] = None
        self._channel: Optional[BlockingChannel] = None
        self._reply_queue: Optional[str] = None
        self._user_id: Optional[str] = None
        self._pending: Dict[str, PendingRequest] = {}
        self._closed = False
        self._connect()

    # Connection management.

    def _parameters(self, url: str) -> pika.URLParameters:
        parameters = pika.URLParameters(url)
        if self._ssl_context is not None and urlsplit(url).scheme == "amqps":
            parameters.ssl_options = pika.SSLOptions(self._ssl_context, server_hostname=parameters.host)
        parameters.client_properties = {"connection_name": self._name}
        parameters.blocked_connection_timeout = self._blocked_timeout
        return parameters

    def _connect(self) -> None:
        failures: List[str] = []
        for url in self.urls:
            try:
                parameters = self._parameters(url)
                connection = pika.BlockingConnection(parameters)
            except (pika.exceptions.AMQPError, OSError, ValueError) as error:
                failures.append(f"{redact_url(url)}: {type(error).__name__} {error}".rstrip())
                continue
            self._connection = connection
            credentials = parameters.credentials
            self._user_id = credentials.username if isinstance(credentials, pika.PlainCredentials) else None
            try:
                self._open_channel()
            except pika.exceptions.AMQPError as error:
                self._close_quietly()
                failures.append(f"{redact_url(url)}: cannot declare the reply queue: {type(error).__name__} {error}")
                continue
            return
        raise BrokerConnectionError("cannot connect to the broker: " + "; ".join(failures))

    def _open_channel(self) -> None:
        assert self._connection is not None
        channel = self._connection.channel()
        channel.confirm_delivery()  # basic_publish returns once the broker has the request
        if self._reply_queue is None:
            name = f"{self.prefix}.reply.{uuid.uuid4()}"
            channel.queue_declare(queue=name, durable=False, exclusive=True, auto_delete=True)
            self._reply_queue = name
        channel.basic_consume(self._reply_queue, self._on_answer, auto_ack=True)
        self._channel = channel

    def _ensure_open(self) -> BlockingChannel:
        if self._closed:
            raise BrokerConnectionError("the client is closed")
        if self._connection is not None and self._connection.is_open:
            try:  # finds a connection the broker closed while the client was idle
                self._connection.process_data_events(time_limit=0)
            except pika.exceptions.AMQPError as error:
                self._lost(f"the connection to the broker was lost: {type(error).__name__} {error}")
        if self._connection is None or not self._connection.is_open:
            self._lost("the connection to the broker was closed")
            self._connect()
        elif self._channel is None or not self._channel.is_open:
            try:
                self._open_channel()
            except pika.exceptions.AMQPError as error:
                self._lost(f"cannot reopen the channel: {type(error).__name__} {error}")
                self._connect()
        assert self._channel is not None
        return self._channel

    def _lost(self, reason: str) -> None:
        """Fails every pending request (its answers would come to a reply queue that is gone)."""
        for pending in list(self._pending.values()):
            pending._fail(BrokerConnectionError(reason))
        self._pending.clear()
        self._close_quietly()

    def _close_quietly(self) -> None:
        connection, self._connection, self._channel, self._reply_queue = self._connection, None, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    def close(self) -> None:
        """Closes the connection; the broker deletes the reply queue. Pending requests are dropped,
        and the client cannot be used again."""
        self._closed = True
        self._pending.clear()
        self._close_quietly()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def reply_queue(self) -> Optional[str]:
        """The name of the private reply queue, while connected."""
        return self._reply_queue

    # Answers.

    def _on_answer(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        pending = self._pending.get(properties.correlation_id or "")
        if pending is None:
            return  # not ours, or a request already given up on
        if self.trusted_users is not None and properties.user_id not in self.trusted_users:
            return  # not published by a trusted nercc service: a forgery
        pending._accept(properties, body)

    def _forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def _wait(self, finished: Callable[[], bool], deadline: Optional[float]) -> bool:
        """Runs the connection until ``finished()`` or the monotonic ``deadline``."""
        while not finished():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._connection is None:
                return finished()
            try:
                limit = 1.0 if remaining is None else min(remaining, 1.0)
                self._connection.process_data_events(time_limit=limit)  # type: ignore[arg-type]  # seconds, a float
            except pika.exceptions.AMQPError as error:
                self._lost(f"the connection to the broker was lost: {type(error).__name__} {error}")
        return True

    # Requests.

    def submit(self, model: str, queries: Queries, *, timeout: Optional[float] = 30.0) -> PendingRequest:
        """Publishes one request and returns at once with its :class:`PendingRequest`.

        ``queries`` is a list of queries, each a list of numbers (the model's input flattened in C
        order). Invalid queries raise ``ValueError`` before anything is published. ``timeout``
        (seconds, or ``None`` for no limit) bounds the wait in :meth:`PendingRequest.result`, and
        past it the system answers ``expired`` instead of serving the request. Raises
        :class:`PublishError` when the broker does not take the request (no requests exchange for
        this prefix, the request is returned as unroutable, or refused) and
        :class:`BrokerConnectionError` when no broker can be reached.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None)")
        rows = normalize_queries(queries)
        request_id = str(uuid.uuid4())
        body = encode_request(request_id, model, rows, max_bytes=self.max_request_bytes)
        return self._publish(request_id, model, len(rows), body, timeout)

    def _publish(self, request_id: str, model: str, count: int, body: bytes, timeout: Optional[float]) -> PendingRequest:
        channel = self._ensure_open()
        assert self._reply_queue is not None
        exchange = f"{self.prefix}.requests"
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = PendingRequest(self, request_id, model, count, deadline)
        self._pending[request_id] = pending  # before publishing: answers can be quick
        properties = request_properties(request_id, self._reply_queue, user_id=self._user_id, timeout=timeout)
        try:
            channel.basic_publish(exchange, model, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            self._forget(request_id)
            raise PublishError(
                f"the broker returned the request as unroutable: no queue of '{exchange}' takes routing key '{model}'",
                request_id=request_id,
                model=model,
            ) from None
        except pika.exceptions.NackError:
            self._forget(request_id)
            raise PublishError("the broker refused the request (nack)", request_id=request_id, model=model) from None
        except pika.exceptions.ChannelClosedByBroker as error:
            self._forget(request_id)
            self._channel = None
            if error.reply_code == 404:
                reason = f"the exchange '{exchange}' does not exist: no nercc system with topology prefix '{self.prefix}' has declared it"
            else:
                reason = f"the broker closed the channel: {error.reply_code} {error.reply_text}"
            raise PublishError(reason, request_id=request_id, model=model) from None
        except pika.exceptions.AMQPError as error:
            self._forget(request_id)
            self._lost(f"publishing failed: {type(error).__name__} {error}")
            raise BrokerConnectionError(
                f"publishing failed: {type(error).__name__} {error}", request_id=request_id, model=model
            ) from None
        return pending

    def predict_detailed(self, model: str, queries: Queries, *, timeout: Optional[float] = 30.0) -> List[Prediction]:
        """Runs ``model`` on ``queries`` and returns one :class:`Prediction` per query, in order.

        Raises ``ValueError`` for invalid queries, the :class:`NerccError` subclass of the error
        record when the system answers with one, and :class:`AnswerTimeoutError` when the answers
        are not complete within ``timeout`` seconds.
        """
        return self.submit(model, queries, timeout=timeout).result()

    def predict(self, model: str, queries: Queries, *, timeout: Optional[float] = 30.0) -> List[List[float]]:
        """Runs ``model`` on ``queries`` and returns each query's outputs, in order.

        Like :meth:`predict_detailed`, without the details (class, label, status). Degraded
        (approximate) predictions are returned as they are; use :meth:`predict_detailed` to see
        them.
        """
        return [p.values for p in self.predict_detailed(model, queries, timeout=timeout)]

    def predict_many(
        self,
        model: str,
        requests: Iterable[Queries],
        *,
        timeout: Optional[float] = 30.0,
        return_exceptions: bool = False,
    ) -> List[Any]:
        """Sends many requests at once and returns their outputs in the order of ``requests``.

        Every request is validated first (``ValueError`` before anything is published), then all
        are published, then the answers are awaited together for at most ``timeout`` seconds.
        Element i of the result is what :meth:`predict` would return for ``requests[i]``. When a
        request fails, the first failure in request order is raised, unless
        ``return_exceptions`` is true: then its element is the :class:`NerccError` instead.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None)")
        prepared = []
        for i, queries in enumerate(requests):
            try:
                rows = normalize_queries(queries)
            except ValueError as error:
                raise ValueError(f"request {i}: {error}") from None
            request_id = str(uuid.uuid4())
            prepared.append((request_id, len(rows), encode_request(request_id, model, rows, max_bytes=self.max_request_bytes)))
        handles: List[PendingRequest] = []
        try:
            for request_id, count, body in prepared:
                handles.append(self._publish(request_id, model, count, body, timeout))
            deadline = None if timeout is None else time.monotonic() + timeout
            self._wait(lambda: all(h.done() for h in handles), deadline)
            results: List[Any] = []
            for handle in handles:
                try:
                    results.append(handle.values(timeout=0))
                except NerccError as error:
                    if not return_exceptions:
                        raise
                    results.append(error)
            return results
        finally:
            for handle in handles:
                self._forget(handle.request_id)
