"""failsafe.queue: consumer-side recoverability over real brokers.

A `Consumer` (or `AsyncConsumer`) runs a handler under a `Redelivery` policy: a few
immediate retries in process, then delayed redelivery through the DLQ, and after the last
round the error sink (for a person's review) and the parking queue. Nothing is dropped. The
brokers: `InMemoryBroker` (tests), `SQLiteBroker` (the embedded default) and
`RabbitMQBroker` (``failsafe-kit[rabbitmq]``), all behind the `Broker` protocols.
"""

from failsafe.queue.bridge import AsyncView, BlockingView, as_async, as_blocking
from failsafe.queue.broker import (
    AsyncBroker,
    Broker,
    BrokerError,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    NoSuchQueue,
    Place,
    SettleConflict,
)
from failsafe.queue.connect import open_broker
from failsafe.queue.consumer import AsyncConsumer, AsyncReviewSink, Consumer, ReviewSink
from failsafe.queue.envelope import (
    Envelope,
    ErrorInfo,
    MalformedMessage,
    decode,
    encode,
    new_id,
)
from failsafe.queue.idempotency import ProcessedMessages
from failsafe.queue.memory import InMemoryBroker
from failsafe.queue.redelivery import (
    ConsumerDied,
    Decision,
    DeliveryLimitWarning,
    Redelivery,
    Unrecoverable,
)
from failsafe.queue.review import replay_handler
from failsafe.queue.sqlite import AsyncSQLiteBroker, SQLiteBroker

__all__ = [
    "AsyncSQLiteBroker",
    "SQLiteBroker",
    "open_broker",
    "replay_handler",
    "AsyncConsumer",
    "AsyncReviewSink",
    "Consumer",
    "ConsumerDied",
    "Decision",
    "DeliveryLimitWarning",
    "ProcessedMessages",
    "Redelivery",
    "ReviewSink",
    "Unrecoverable",
    "AsyncBroker",
    "AsyncView",
    "BlockingView",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "ErrorInfo",
    "InMemoryBroker",
    "MalformedMessage",
    "NoSuchQueue",
    "Place",
    "SettleConflict",
    "as_async",
    "as_blocking",
    "decode",
    "encode",
    "new_id",
]
