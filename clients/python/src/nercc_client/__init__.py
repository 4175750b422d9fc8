"""Python client of nercc: publish inference requests over RabbitMQ and read their predictions.

    from nercc_client import Client

    with Client("amqp://guest:guest@127.0.0.1:5672/%2F") as client:
        outputs = client.predict("mnist-mlp", [[0.0] * 784], timeout=30)

It follows the wire format of schemas/README.md (version 1). See README.md beside this package.
"""

from .client import DEFAULT_URL, Client, PendingRequest
from . import errors
from .errors import *  # noqa: F401,F403  (every exception class and the code table; errors.__all__)
from .wire import DEFAULT_MAX_REQUEST_BYTES, MAX_QUERIES, WIRE_VERSION, Prediction

__version__ = "0.1.0"

__all__ = [
    "Client",
    "PendingRequest",
    "Prediction",
    "DEFAULT_URL",
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_QUERIES",
    "WIRE_VERSION",
    *errors.__all__,
]
