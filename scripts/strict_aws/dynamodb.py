"""DynamoDB: conditional writes are atomic on AWS; moto's threaded server checks a condition and
writes the item in two steps, so two racing writers can both succeed. The layer runs DynamoDB
requests one at a time (other services stay concurrent)."""

import threading

from .core import behaviour, enabled

behaviour(
    "dynamodb-atomic-writes",
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html",
    "A conditional write is checked and applied atomically: of two writers racing on one "
    "condition (a lease, a version), exactly one succeeds. DynamoDB requests are served one "
    "at a time; S3, ECS, IAM and STS requests stay concurrent.",
)

_SERIAL = threading.Lock()


def serialized(app, environ, start_response):
    """Runs one DynamoDB request under the lock, its answer read in full inside it."""
    if not enabled("dynamodb-atomic-writes"):
        return app(environ, start_response)
    with _SERIAL:
        return [b"".join(app(environ, start_response))]
