"""Exceptions of the nercc client.

Every error record nercc can answer a request with (schemas/README.md §2.6 and §4) becomes an
exception whose class names its code; the client's own failures (no answer in time, a request the
broker did not take, a lost connection, an answer that breaks the wire format) have classes of their
own, with ``code`` set to ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional, Type

if TYPE_CHECKING:  # pragma: no cover
    from .wire import Prediction

__all__ = [
    "NerccError",
    "RequestRejected",
    "MalformedJsonError",
    "UnsupportedVersionError",
    "UnknownModelError",
    "WrongShapeError",
    "NonFiniteError",
    "OversizeError",
    "BadRequestError",
    "BatchFailed",
    "BatchTimeoutError",
    "DecodeFailedError",
    "OverloadedError",
    "UnroutableError",
    "ExpiredError",
    "RedeliveredError",
    "AnswerTimeoutError",
    "PublishError",
    "BrokerConnectionError",
    "ProtocolError",
    "ERRORS_BY_CODE",
    "error_class",
]


class NerccError(Exception):
    """Base class of every error the client raises, except ``ValueError`` for invalid input.

    Attributes:
        code: the wire-format error code (``"wrong-shape"``, ``"timeout"``, …), or ``None`` for an
            error raised by the client itself (:class:`AnswerTimeoutError`, :class:`PublishError`,
            :class:`BrokerConnectionError`, :class:`ProtocolError`).
        message: the human-readable message; for an error record, its ``message`` field.
        request_id: the request the error is about, when known.
        batch_id: for a batch error record, the batch whose queries it answers (its
            ``x-nercc-batch-id`` header); ``None`` otherwise.
        model: the model of the request, when known.
        partial: the predictions of the request that had arrived before the error, by query index
            (a request spread over several batches can get predictions for some queries and an
            error record for others).
    """

    #: The wire-format code of this class; ``None`` for the client's own errors.
    default_code: Optional[str] = None
    #: Whether submitting the same queries again later may succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        batch_id: Optional[str] = None,
        model: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.code: Optional[str] = code if code is not None else self.default_code
        self.message = message
        self.request_id = request_id
        self.batch_id = batch_id
        self.model = model
        self.partial: Dict[int, "Prediction"] = {}

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}" if self.code else self.message
        return f"{text} (request {self.request_id})" if self.request_id else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, request_id={self.request_id!r})"


# Rejection replies: the encoder rejected the whole request (schemas/README.md §2.1, §2.6).


class RequestRejected(NerccError):
    """The encoder rejected the request; none of its queries was served (a rejection reply)."""


class MalformedJsonError(RequestRejected):
    """``malformed-json``: the body is not JSON or not a request."""

    default_code = "malformed-json"


class UnsupportedVersionError(RequestRejected):
    """``unsupported-version``: a wire-format version the encoder does not speak."""

    default_code = "unsupported-version"


class UnknownModelError(RequestRejected):
    """``unknown-model``: no encoder that took the request serves its model."""

    default_code = "unknown-model"


class WrongShapeError(RequestRejected):
    """``wrong-shape``: a query's length is not the model's input size."""

    default_code = "wrong-shape"


class NonFiniteError(RequestRejected):
    """``non-finite``: a query value is NaN or infinite in float32."""

    default_code = "non-finite"


class OversizeError(RequestRejected):
    """``oversize``: the request body exceeds the encoder's limit (16 MiB by default)."""

    default_code = "oversize"


class BadRequestError(RequestRejected):
    """``bad-request``: no queries, or more than 10,000."""

    default_code = "bad-request"


# Batch error records: some queries of the request were not served (schemas/README.md §2.6).


class BatchFailed(NerccError):
    """A batch error record: the queries of one batch (``batch_id``) were not served."""


class BatchTimeoutError(BatchFailed):
    """``timeout``: the batch's deadline passed without enough worker results to decode."""

    default_code = "timeout"
    retryable = True


class DecodeFailedError(BatchFailed):
    """``decode-failed``: decoding threw or gave non-finite predictions."""

    default_code = "decode-failed"


class OverloadedError(BatchFailed):
    """``overloaded``: the broker kept refusing the batch; retry later."""

    default_code = "overloaded"
    retryable = True


class UnroutableError(BatchFailed):
    """``unroutable``: the broker could not route the batch's tasks (no queue for the model)."""

    default_code = "unroutable"


class ExpiredError(BatchFailed):
    """``expired``: the request's deadline had passed when the encoder took it."""

    default_code = "expired"


class RedeliveredError(BatchFailed):
    """``redelivered``: the request came back to its queue too often (encoders failing); retry later."""

    default_code = "redelivered"
    retryable = True


# The client's own errors (code None).


class AnswerTimeoutError(NerccError, TimeoutError):
    """No complete answer arrived within the timeout. Also a built-in ``TimeoutError``."""


class PublishError(NerccError):
    """The broker did not take the request: it does not know the requests exchange (no nercc
    system with this topology prefix), returned the request as unroutable, or refused it."""


class BrokerConnectionError(NerccError, ConnectionError):
    """No broker could be reached, or the connection was lost. Also a built-in ``ConnectionError``."""


class ProtocolError(NerccError):
    """An answer does not follow the wire format (schemas/README.md)."""


#: The exception class of each documented error-record code.
ERRORS_BY_CODE: Mapping[str, Type[NerccError]] = {
    cls.default_code: cls
    for cls in (
        MalformedJsonError,
        UnsupportedVersionError,
        UnknownModelError,
        WrongShapeError,
        NonFiniteError,
        OversizeError,
        BadRequestError,
        BatchTimeoutError,
        DecodeFailedError,
        OverloadedError,
        UnroutableError,
        ExpiredError,
        RedeliveredError,
    )
    if cls.default_code is not None
}


def error_class(code: str, *, batch: bool) -> Type[NerccError]:
    """The exception class for an error record's ``code``.

    A code this client does not know (the wire format may add codes) is still a failure: it maps to
    :class:`BatchFailed` for a batch error record and :class:`RequestRejected` for a rejection reply.
    """
    known = ERRORS_BY_CODE.get(code)
    if known is not None:
        return known
    return BatchFailed if batch else RequestRejected
